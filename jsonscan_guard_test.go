//go:build linux

package main

import (
	"bytes"
	"syscall"
	"testing"
)

// TestScanPlainStaysInSlice runs the scan on slices that end where an
// unreadable page begins: a read past a slice's end would fault.
func TestScanPlainStaysInSlice(t *testing.T) {
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 2*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skip(err)
	}
	defer syscall.Munmap(mem)
	if err := syscall.Mprotect(mem[page:], syscall.PROT_NONE); err != nil {
		t.Skip(err)
	}
	for n := range 300 {
		b := mem[page-n : page]
		copy(b, bytes.Repeat([]byte("p"), n))
		checkScanPlain(t, b)
		for _, tail := range []string{`\`, `\n`, `"`, "\x01"} {
			if len(tail) <= n {
				copy(b[n-len(tail):], tail)
				checkScanPlain(t, b)
			}
		}
		// Empty and unterminated strings in a body that ends at the page.
		copy(b, bytes.Repeat([]byte(`\n`), n/2))
		checkScanPlain(t, b)
		if n > 0 {
			b[0] = '{'
			findModel(b)
		}
	}
}
