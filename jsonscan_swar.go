package main

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// The pure-Go string scan: the fallback where there is no SIMD version, and
// the one the SIMD version is tested against. It is built on every platform.

// scanPlainGeneric returns the length of the prefix of b made of plain string
// bytes and escapes (two-byte ones, and \u with four hex digits), and whether
// that prefix holds an escape. b[n] (when n < len(b)) is a quote, a control
// character, or a backslash that does not start a valid escape inside b.
func scanPlainGeneric(b []byte) (n int, escaped bool) {
	i := 0
	for {
		i += specialIndexGeneric(b[i:])
		if i >= len(b) || b[i] != '\\' {
			return i, escaped
		}
		n := plainEscapeLen(b[i:])
		if n == 0 {
			return i, escaped
		}
		escaped = true
		i += n
	}
}

// plainEscapeLen returns the length of the valid escape at the start of b
// (which starts with a backslash), or 0 if there is none inside b.
func plainEscapeLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if len(b) >= 6 && isHex(b[2]) && isHex(b[3]) && isHex(b[4]) && isHex(b[5]) {
			return 6
		}
	}
	return 0
}

// specialIndexGeneric returns the index of the first byte of b that is '"',
// '\\' or a control character (< 0x20), or len(b). Short runs (chat text, with
// an escape every few dozen bytes) are checked a word at a time; a run longer
// than shortRunLimit (a base64 image, a long document) goes to longRunIndex,
// which runs at bytes.IndexByte's speed.
func specialIndexGeneric(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if i >= shortRunLimit {
			return i + longRunIndex(b[i:])
		}
		if m := specialMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			// The lowest flagged byte is the first special one (a borrow can
			// only flag bytes above a true match, never below it).
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return i
}

// shortRunLimit is how many plain string bytes specialIndexGeneric checks a
// word at a time before handing the run to longRunIndex.
const shortRunLimit = 64

// longRunIndex is specialIndexGeneric for a long run: it searches for a
// backslash, then a quote before it, then a control character before both. It
// searches a window at a time, each twice the last: a backslash search never
// reads past the next backslash, and past the closing quote by at most the
// run's own length (or 256 bytes), so no input makes the scan quadratic.
func longRunIndex(b []byte) int {
	i := 0
	for window := 256; ; window = min(2*window, 1<<20) {
		w := b[i:min(len(b), i+window)]
		span := w
		if j := bytes.IndexByte(w, '\\'); j >= 0 {
			span = w[:j]
		}
		if j := bytes.IndexByte(span, '"'); j >= 0 {
			span = span[:j]
		}
		if c := firstControl(span); c >= 0 {
			return i + c
		}
		if len(span) < len(w) || i+len(w) == len(b) {
			return i + len(span)
		}
		i += len(w)
	}
}

// firstControl returns the index of the first byte of b below 0x20 (which a
// JSON string may not hold raw), or -1. It tests 32 bytes a step.
func firstControl(b []byte) int {
	i := 0
	for ; i+32 <= len(b); i += 32 {
		w0 := binary.LittleEndian.Uint64(b[i:])
		w1 := binary.LittleEndian.Uint64(b[i+8:])
		w2 := binary.LittleEndian.Uint64(b[i+16:])
		w3 := binary.LittleEndian.Uint64(b[i+24:])
		if ((w0-lowBits*0x20)&^w0|(w1-lowBits*0x20)&^w1|(w2-lowBits*0x20)&^w2|(w3-lowBits*0x20)&^w3)&highBits != 0 {
			break
		}
	}
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if m := (w - lowBits*0x20) &^ w & highBits; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 {
			return i
		}
	}
	return -1
}

const (
	lowBits  = 0x0101010101010101
	highBits = 0x8080808080808080
)

// specialMask flags (with its high bit) each byte of w that is '"', '\\' or a
// control character (< 0x20): the bytes that end a run of plain string bytes.
// (v-lowBits)&^v&highBits is non-zero exactly when some byte of v is zero;
// (w-lowBits*n)&^w&highBits, when some byte of w is below n.
func specialMask(w uint64) uint64 {
	quote := w ^ (lowBits * '"')
	backslash := w ^ (lowBits * '\\')
	return ((quote-lowBits)&^quote | (backslash-lowBits)&^backslash | (w-lowBits*0x20)&^w) & highBits
}
