//go:build !amd64 || purego

package main

// scanPlain is scanPlainGeneric where there is no SIMD version.
func scanPlain(b []byte) (n int, escaped bool) { return scanPlainGeneric(b) }
