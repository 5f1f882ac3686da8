package main

import (
	"bytes"
	"mime"
)

// maxFormParts bounds the parts of a form the proxy reads: the forms OpenAI's
// API takes have a few fields and at most a few dozen files; many more
// tiny ones are an attack on the parser.
const maxFormParts = 10_000

// maxFastBoundary is the longest boundary the fast path reads (RFC 2046
// allows 70 characters).
const maxFastBoundary = 1000

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
	if len(boundary) > maxFastBoundary {
		return nil, false // mime/multipart reads boundary lines into a 4 KiB buffer, and refuses longer ones
	}
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
	form := formWalk{body: body, nl: []byte(nl), dash: []byte(dash), nlDash: []byte(nl + dash), pos: len(dash) + len(nl)}
	for parts := 0; ; parts++ {
		if parts == maxFormParts {
			return nil, false // mime/multipart's path refuses the form
		}
		isModel, ok := form.headers()
		if !ok {
			return nil, false
		}
		start, end, last, ok := form.content()
		if !ok {
			return nil, false
		}
		if isModel {
			models = append(models, [2]int{start, end})
		}
		if last {
			return models, true
		}
	}
}

// formWalk is multipartFastModel's place in a form.
type formWalk struct {
	body, nl, dash, nlDash []byte
	pos                    int
}

// headers reads a part's header lines, up to the empty one, and reports
// whether the part is the form field "model"; ok false: not a plain form.
func (w *formWalk) headers() (isModel, ok bool) {
	named := false
	for lines, start := 0, w.pos; ; lines++ {
		j := bytes.Index(w.body[w.pos:], w.nl)
		if j < 0 || lines > 100 || w.pos+j-start > maxFastHeaderBytes {
			return false, false
		}
		line := w.body[w.pos : w.pos+j]
		w.pos += j + len(w.nl)
		if len(line) == 0 {
			// A boundary right after the headers is mime/multipart's special case.
			return isModel, !bytes.HasPrefix(w.body[w.pos:], w.dash)
		}
		key, value, mayBeModel, plain := plainHeader(line)
		switch {
		case !plain:
			return false, false
		case bytes.EqualFold(key, []byte("Content-Transfer-Encoding")):
			return false, false // quoted-printable content is decoded by mime/multipart
		case !bytes.EqualFold(key, []byte("Content-Disposition")) || named:
			continue // mime/multipart reads the first Content-Disposition
		}
		named = true
		if !mayBeModel {
			continue
		}
		disposition, params, err := mime.ParseMediaType(string(value))
		if err != nil {
			return false, false
		}
		isModel = disposition == "form-data" && params["name"] == "model" && params["filename"] == ""
	}
}

// content finds the end of a part's content: the line break before the next
// boundary line; last says that boundary closes the form.
func (w *formWalk) content() (start, end int, last, ok bool) {
	start = w.pos
	for {
		i := bytes.Index(w.body[w.pos:], w.nlDash)
		if i < 0 {
			return 0, 0, false, false
		}
		after := w.body[w.pos+i+len(w.nlDash):]
		w.pos += i
		switch {
		case bytes.HasPrefix(after, w.nl):
			// Another part.
		case bytes.HasPrefix(after, []byte("--")) && (len(after) == 2 || bytes.HasPrefix(after[2:], w.nl)):
			// The last boundary; what follows it is not read.
			return start, w.pos, true, true
		case len(after) == 0 || after[0] == ' ' || after[0] == '\t' || after[0] == '\r' || after[0] == '\n' || after[0] == '-':
			return 0, 0, false, false // boundary lines with padding, and the like
		default:
			w.pos++ // "--boundary" followed by more: part of the content
			continue
		}
		end = w.pos
		w.pos += len(w.nlDash) + len(w.nl)
		return start, end, false, true
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
