package main

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// scanPlainRef is scanPlainGeneric's definition, a byte at a time.
func scanPlainRef(b []byte) (n int, escaped bool) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '\\' && i+1 < len(b) && strings.IndexByte(`"\/bfnrt`, b[i+1]) >= 0:
			escaped = true
			i++
		case c == '\\' && i+5 < len(b) && b[i+1] == 'u' && hexRef(b[i+2:i+6]):
			escaped = true
			i += 5
		case c == '"' || c == '\\' || c < 0x20:
			return i, escaped
		}
	}
	return len(b), escaped
}

func hexRef(b []byte) bool {
	for _, c := range b {
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(c)) {
			return false
		}
	}
	return true
}

// checkScanPlain compares scanPlain (the SIMD version, where there is one and
// b is long enough) and scanPlainGeneric with the reference on b.
func checkScanPlain(t *testing.T, b []byte) {
	t.Helper()
	wantN, wantEsc := scanPlainRef(b)
	if n, esc := scanPlainGeneric(b); n != wantN || esc != wantEsc {
		t.Fatalf("scanPlainGeneric(%q) = %d, %v; want %d, %v", b, n, esc, wantN, wantEsc)
	}
	if n, esc := scanPlain(b); n != wantN || esc != wantEsc {
		t.Fatalf("scanPlain(%q) = %d, %v; want %d, %v", b, n, esc, wantN, wantEsc)
	}
}

// stoppers are what can end or continue a run, each placed at every offset.
var stoppers = []string{`"`, `\`, `\n`, `\"`, `\\`, `\/`, `\u00e9`, `\uABcd`, `\u00g9`, `\u12`, `\u"`, `\u\`, `\x`, `\u`, `\U0041`, `\` + "\x00", "\x00", "\x1f", "\n",
	" ", "\x7f", "\xff", "\xc3\xa9", "/", "\\\\\"", `\\\`}

// TestScanPlainEveryOffset: each stopper at every offset of runs 0 to 200
// bytes long (the slice ending at the run's end) from a few alignments in
// memory; the scan's blocks start at the slice's start, not at an alignment.
func TestScanPlainEveryOffset(t *testing.T) {
	buf := make([]byte, 64+200)
	for _, align := range []int{0, 1, 15, 31, 32, 63} {
		for n := range 201 {
			b := buf[align : align+n]
			for i := range b {
				b[i] = 'a'
			}
			checkScanPlain(t, b)
			for _, stop := range stoppers {
				for p := 0; p+len(stop) <= n; p++ {
					copy(b[p:], stop)
					checkScanPlain(t, b)
					copy(b[p:], bytes.Repeat([]byte("a"), len(stop)))
				}
			}
		}
	}
}

// TestScanPlainTwoStoppers: an escape at every offset of 130 bytes, then each
// stopper at every later offset: escapes whose escaped byte falls in the next
// block, several in one block's mask, a quote just after one.
func TestScanPlainTwoStoppers(t *testing.T) {
	for _, esc := range []string{`\n`, `\\`, `\"`, `\u00e9`} {
		for _, stop := range stoppers {
			for p := 0; p+len(esc) <= 130; p++ {
				for q := p + len(esc); q+len(stop) <= 130; q++ {
					b := bytes.Repeat([]byte("x"), 130)
					copy(b[p:], esc)
					copy(b[q:], stop)
					checkScanPlain(t, b)
				}
			}
		}
	}
}

// TestScanPlainRandom: long random runs of plain bytes, escapes and
// stoppers, at random densities.
func TestScanPlainRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pieces := append([]string{"a", "b", "é", "~", "\x80"}, stoppers...)
	for range 3000 {
		n := r.IntN(6000)
		density := 1 + r.IntN(500)
		var b []byte
		for len(b) < n {
			if r.IntN(density) == 0 {
				b = append(b, pieces[r.IntN(len(pieces))]...)
			} else {
				b = append(b, byte(0x20+r.IntN(0x60)))
			}
		}
		// Mostly escapes and plain bytes, so the scan gets far.
		b = bytes.ReplaceAll(b, []byte(`"`), []byte(`\"`))
		for range 4 {
			checkScanPlain(t, b[r.IntN(len(b)+1):])
			b = bytes.ReplaceAll(b, []byte{'\n'}, []byte(`\n`))
		}
	}
}
