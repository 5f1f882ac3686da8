//go:build amd64 && !purego

package main

import "testing"

// TestAVX2Detected says which scan the other tests check: on a CPU without
// AVX2 scanPlain is scanPlainGeneric.
func TestAVX2Detected(t *testing.T) {
	t.Logf("AVX2 string scan in use: %v", cpuHasAVX2)
}
