package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// modelField is the top-level "model" member of a JSON object, as found by findModel.
type modelField struct {
	found    bool
	isString bool
	value    []byte // decoded, when isString: a slice of the body unless it held escapes
	start    int    // byte offset of the value (its opening quote, for a string)
	end      int    // byte offset just past the value
	tooLong  bool   // a string value over maxDecodedValue that would need decoding: left undecoded
}

// maxDecodedValue is the longest member value findMember decodes when it
// holds escapes or invalid UTF-8; a plain one is a slice of the body, whatever
// its length.
const maxDecodedValue = 4 << 10

// maxJSONDepth matches encoding/json's nesting limit.
const maxJSONDepth = 10000

type jsonSyntaxError struct {
	offset int
	msg    string
}

func (e *jsonSyntaxError) Error() string {
	return fmt.Sprintf("%s at byte %d", e.msg, e.offset)
}

// findModel validates that data is exactly one JSON object and returns its
// top-level "model" member without decoding anything else. Keys match as
// encoding/json (and .NET's web defaults) match them, case-insensitively;
// an object with two such keys is refused (duplicateKeyError), since another
// parser might read the other one.
func findModel(data []byte) (modelField, error) { return findMember(data, "model") }

// duplicateKeyError is an object that names a key twice (in any case).
type duplicateKeyError struct{ key string }

func (e *duplicateKeyError) Error() string {
	return "the object has more than one '" + e.key + "' member"
}

// findMember is findModel for any top-level key.
func findMember(data []byte, key string) (modelField, error) {
	matches := 0
	s := jsonScanner{data: data}
	var f modelField
	s.skipSpace()
	if !s.consume('{') {
		return f, s.errorf("the body is not a JSON object")
	}
	s.skipSpace()
	if s.consume('}') {
		return f, s.atEnd()
	}
	end := func() (modelField, error) {
		if err := s.atEnd(); err != nil {
			return f, err
		}
		if matches > 1 {
			return modelField{}, &duplicateKeyError{key}
		}
		return f, nil
	}
	for {
		s.skipSpace()
		if s.peek() != '"' {
			return f, s.errorf("expected a string key")
		}
		keyStart := s.pos
		keyEscaped, err := s.skipString()
		if err != nil {
			return f, err
		}
		isModel := isKey(data[keyStart:s.pos], keyEscaped, key)
		if isModel {
			matches++
		}
		s.skipSpace()
		if !s.consume(':') {
			return f, s.errorf("expected ':' after object key")
		}
		s.skipSpace()
		valueStart := s.pos
		if isModel && s.peek() == '"' {
			escaped, err := s.skipString()
			if err != nil {
				return f, err
			}
			f = modelField{found: true, isString: true, start: valueStart, end: s.pos}
			if raw := data[valueStart:s.pos]; len(raw) > maxDecodedValue && (escaped || !utf8.Valid(raw)) {
				f.tooLong = true // no model is this long: not decoded (a copy could be 3x the body)
			} else {
				f.value = decodeJSONString(raw, escaped)
			}
		} else {
			if err := s.skipValue(1); err != nil {
				return f, err
			}
			if isModel {
				f = modelField{found: true, start: valueStart, end: s.pos}
			}
		}
		s.skipSpace()
		if s.consume(',') {
			continue
		}
		if s.consume('}') {
			return end()
		}
		return f, s.errorf("expected ',' or '}' after object member")
	}
}

// isKey reports whether a quoted JSON key is key, as encoding/json matches
// a key to a field: bytes.EqualFold, Unicode's simple folding. An escaped key
// is unescaped into a small buffer on the stack, and only when its length
// could match at all: a body of many escaped keys costs no allocation.
func isKey(quoted []byte, escaped bool, key string) bool {
	inner := quoted[1 : len(quoted)-1]
	if escaped {
		if len(inner) > 18*len(key) { // six bytes an escape, three a folded rune
			return false
		}
		var buf [128]byte
		var ok bool
		if inner, ok = unescapeKey(inner, buf[:0]); !ok {
			return false
		}
	}
	return len(inner) >= len(key) && len(inner) <= 3*len(key) && bytes.EqualFold(inner, []byte(key))
}

// unescapeKey unescapes a validated JSON string body into dst. A surrogate
// (an astral character, or an invalid one encoding/json reads as U+FFFD)
// cannot fold to a key's letters: ok false.
func unescapeKey(inner, dst []byte) ([]byte, bool) {
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		switch inner[i] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, err := strconv.ParseUint(string(inner[i+1:i+5]), 16, 32)
			if err != nil || 0xD800 <= r && r <= 0xDFFF {
				return nil, false
			}
			dst = utf8.AppendRune(dst, rune(r))
			i += 4
		default: // '"', '\\', '/'
			dst = append(dst, inner[i])
		}
	}
	return dst, true
}

// decodeJSONString unquotes a valid JSON string literal. A plain one is its
// own bytes, without a copy; escapes and invalid UTF-8 are rare in keys and
// model names, and take encoding/json's path so that they decode exactly as it
// decodes them.
func decodeJSONString(quoted []byte, escaped bool) []byte {
	inner := quoted[1 : len(quoted)-1]
	if !escaped && utf8.Valid(inner) {
		return inner
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return nil // unreachable: the scanner has validated the literal
	}
	return []byte(s)
}

type jsonScanner struct {
	data []byte
	pos  int
}

func (s *jsonScanner) errorf(msg string) error {
	if s.pos >= len(s.data) {
		return &jsonSyntaxError{offset: s.pos, msg: "unexpected end of JSON input (" + msg + ")"}
	}
	return &jsonSyntaxError{offset: s.pos, msg: msg}
}

func (s *jsonScanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *jsonScanner) consume(c byte) bool {
	if s.pos < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

func (s *jsonScanner) skipSpace() { s.pos = spaceEnd(s.data, s.pos) }

// spaceEnd returns the offset of the first byte from data[i] that is not
// JSON whitespace (or len(data)).
func spaceEnd(data []byte, i int) int {
	for i < len(data) {
		// Most often the next byte is no space at all: one comparison.
		if c := data[i]; c > ' ' || c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return i
		}
		i++
	}
	return i
}

func (s *jsonScanner) atEnd() error {
	s.skipSpace()
	if s.pos != len(s.data) {
		return s.errorf("unexpected data after the top-level object")
	}
	return nil
}

// skipString moves past the string literal at s.pos, validating it, and
// reports whether it holds escapes.
func (s *jsonScanner) skipString() (escaped bool, err error) {
	end, escaped, err := s.stringEnd(s.pos)
	if err == nil {
		s.pos = end
	}
	return escaped, err
}

// stringEnd returns the offset just past the string literal at data[i],
// validating it, and whether it holds escapes; an error sets s.pos. Offsets
// go in and out in registers: the hot loops keep theirs out of s.pos, whose
// every update through memory costs a store-to-load round trip.
//
// Most strings (keys, roles, short values) end within two words: those are
// checked here with SWAR, at no call's cost. The rest go to scanPlain, which
// skips plain bytes and valid escapes (with SIMD where the CPU has it) and
// stops at a quote, a control character or a backslash it leaves to
// escapeLen (an invalid escape, or one cut by the end of the data: escapeLen
// has the error to report).
func (s *jsonScanner) stringEnd(i int) (end int, escaped bool, err error) {
	data := s.data
	i++
	for range 4 {
		if i+8 > len(data) {
			break
		}
		if m := specialMask(binary.LittleEndian.Uint64(data[i:])); m != 0 {
			// The lowest flagged byte is the first special one (a borrow can
			// only flag bytes above a true match, never below it).
			if i += bits.TrailingZeros64(m) / 8; data[i] == '"' {
				return i + 1, false, nil
			}
			break
		}
		i += 8
	}
	for {
		n, esc := scanPlain(data[i:])
		escaped = escaped || esc
		i += n
		if i >= len(data) {
			s.pos = len(data)
			return 0, escaped, s.errorf("unterminated string")
		}
		switch data[i] {
		case '"':
			return i + 1, escaped, nil
		case '\\':
			escaped = true
			n, err := s.escapeLen(i)
			if err != nil {
				return 0, escaped, err
			}
			i += n
		default:
			s.pos = i
			return 0, escaped, s.errorf("control character in string")
		}
	}
}

// escapeLen validates the escape sequence at data[i] ('\\') and returns its length.
func (s *jsonScanner) escapeLen(i int) (int, error) {
	data := s.data
	if i+1 >= len(data) {
		s.pos = len(data)
		return 0, s.errorf("unterminated string")
	}
	switch data[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, nil
	case 'u':
		if i+6 > len(data) {
			s.pos = len(data)
			return 0, s.errorf("unterminated string")
		}
		for _, h := range data[i+2 : i+6] {
			if !isHex(h) {
				s.pos = i
				return 0, s.errorf("invalid \\u escape in string")
			}
		}
		return 6, nil
	}
	s.pos = i
	return 0, s.errorf("invalid escape in string")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipValue moves past any JSON value at s.pos.
func (s *jsonScanner) skipValue(depth int) error {
	switch c := s.peek(); {
	case c == '"':
		_, err := s.skipString()
		return err
	case c == '{' || c == '[':
		if depth >= maxJSONDepth {
			return s.errorf("JSON nested too deeply")
		}
		return s.skipContainer(depth)
	case c == 't':
		return s.skipLiteral("true")
	case c == 'f':
		return s.skipLiteral("false")
	case c == 'n':
		return s.skipLiteral("null")
	case c == '-' || isDigit(c):
		return s.skipNumber()
	}
	return s.errorf("expected a JSON value")
}

// skipContainer moves past the object or array at s.pos. Its offset stays in
// a local (see stringEnd), s.pos set only around calls and for errors.
func (s *jsonScanner) skipContainer(depth int) error {
	data := s.data
	pos := s.pos
	closing := byte(']')
	isObject := data[pos] == '{'
	if isObject {
		closing = '}'
	}
	if pos = spaceEnd(data, pos+1); pos < len(data) && data[pos] == closing {
		s.pos = pos + 1
		return nil
	}
	var err error
	for {
		pos = spaceEnd(data, pos)
		if isObject {
			if pos >= len(data) || data[pos] != '"' {
				s.pos = pos
				return s.errorf("expected a string key")
			}
			if pos, _, err = s.stringEnd(pos); err != nil {
				return err
			}
			if pos = spaceEnd(data, pos); pos >= len(data) || data[pos] != ':' {
				s.pos = pos
				return s.errorf("expected ':' after object key")
			}
			pos = spaceEnd(data, pos+1)
		}
		// Most values are strings: skipped without skipValue's call.
		if pos < len(data) && data[pos] == '"' {
			if pos, _, err = s.stringEnd(pos); err != nil {
				return err
			}
		} else {
			s.pos = pos
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
			pos = s.pos
		}
		if pos = spaceEnd(data, pos); pos < len(data) && data[pos] == ',' {
			pos++
			continue
		}
		if pos < len(data) && data[pos] == closing {
			s.pos = pos + 1
			return nil
		}
		s.pos = pos
		return s.errorf("expected ',' or '" + string(closing) + "'")
	}
}

func (s *jsonScanner) skipLiteral(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return s.errorf("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

func (s *jsonScanner) skipNumber() error {
	s.consume('-')
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case '1' <= c && c <= '9':
		s.skipDigits()
	default:
		return s.errorf("invalid number")
	}
	if s.consume('.') {
		if !isDigit(s.peek()) {
			return s.errorf("invalid number")
		}
		s.skipDigits()
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if !isDigit(s.peek()) {
			return s.errorf("invalid number")
		}
		s.skipDigits()
	}
	return nil
}

func (s *jsonScanner) skipDigits() {
	for s.pos < len(s.data) && isDigit(s.data[s.pos]) {
		s.pos++
	}
}
