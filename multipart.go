package main

import (
	"bytes"
	"mime"
)

// maxFastHeaderBytes bounds one part's headers on the fast path; larger ones
// take mime/multipart's path, with its own limits.
const maxFastHeaderBytes = 64 << 10

// multipartFastModel finds the form field "model" in one linear pass, for the
// forms the SDKs send: the body opens with its boundary line, every header
// line is a plain "Token: value" line, and each boundary is followed by a
// line end or "--". On exactly those forms it reads what mime/multipart reads
// (the fuzz target checks it); on any other it says so (ok false), and the
// caller takes mime/multipart's slower path. It reports every part named
// "model", so that a form with two is refused.
func multipartFastModel(body []byte, boundary string) (models [][2]int, ok bool) {
	dash := "--" + boundary
	var nl string
	switch {
	case bytes.HasPrefix(body, []byte(dash+"\r\n")):
		nl = "\r\n"
	case bytes.HasPrefix(body, []byte(dash+"\n")):
		nl = "\n"
	default:
		return nil, false
	}
	nlDash := []byte(nl + dash)
	pos := len(dash) + len(nl)
	for {
		// The part's headers, up to an empty line.
		named := false
		headers, headersStart := 0, pos
		for {
			j := bytes.Index(body[pos:], []byte(nl))
			if j < 0 {
				return nil, false
			}
			line := body[pos : pos+j]
			pos += j + len(nl)
			if len(line) == 0 {
				break
			}
			if headers++; headers > 100 {
				return nil, false
			}
			if headerBytes := pos - headersStart; headerBytes > maxFastHeaderBytes {
				return nil, false
			}
			key, value, isModel, plain := plainHeader(line)
			if !plain {
				return nil, false
			}
			switch {
			case bytes.EqualFold(key, []byte("Content-Disposition")) && !named:
				named = true // mime/multipart reads the first one
				if !isModel {
					continue
				}
				disposition, params, err := mime.ParseMediaType(string(value))
				if err != nil {
					return nil, false
				}
				if disposition == "form-data" && params["name"] == "model" && params["filename"] == "" {
					models = append(models, [2]int{-1, -1}) // its span is set below
				}
			case bytes.EqualFold(key, []byte("Content-Transfer-Encoding")):
				return nil, false // quoted-printable content is decoded by mime/multipart
			}
		}
		if bytes.HasPrefix(body[pos:], []byte(dash)) {
			return nil, false // a boundary right after the headers: mime/multipart's special case
		}
		// The content, up to the next boundary.
		content := pos
		for {
			i := bytes.Index(body[pos:], nlDash)
			if i < 0 {
				return nil, false
			}
			after := body[pos+i+len(nlDash):]
			pos += i
			switch {
			case bytes.HasPrefix(after, []byte(nl)):
				// Another part.
			case bytes.HasPrefix(after, []byte("--")) && (len(after) == 2 || bytes.HasPrefix(after[2:], []byte(nl))):
				// The last boundary; what follows it is not read.
			case len(after) == 0 || after[0] == ' ' || after[0] == '\t' || after[0] == '\r' || after[0] == '\n' || after[0] == '-':
				return nil, false // boundary lines with padding, and the like
			default:
				pos++ // "--boundary" followed by more: part of the content
				continue
			}
			if n := len(models); n > 0 && models[n-1][0] == -1 {
				models[n-1] = [2]int{content, pos}
			}
			if after[0] == '-' {
				return models, true
			}
			pos += len(nlDash) + len(nl)
			break
		}
	}
}

// plainHeader splits a header line of the plain shape "Token: value": a key
// of letters, digits and '-', a value of printable characters and tabs. It
// reports whether the value could name the field "model" (as it is, or
// escaped or encoded) and so needs a full parse.
func plainHeader(line []byte) (key, value []byte, mayNameModel, plain bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false, false
	}
	for _, c := range line[:colon] {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return nil, nil, false, false
		}
	}
	value = line[colon+1:]
	for _, c := range value { // as net/textproto's validHeaderValueByte
		if c < 0x20 && c != '\t' || c == 0x7f {
			return nil, nil, false, false
		}
	}
	mayNameModel = bytes.Contains(value, []byte("model")) || bytes.ContainsAny(value, `*\%`)
	return line[:colon], value, mayNameModel, true
}
