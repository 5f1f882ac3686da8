//go:build amd64 && !purego

package main

// cpuHasAVX2 is read-only configuration, set once at init: whether this CPU
// (and the OS, which must save the YMM registers) can run scanPlain's AVX2
// loop. It is detected at run time so that default (GOAMD64=v1) builds use it.
var cpuHasAVX2 = detectAVX2()

// scanPlain is scanPlainGeneric, 64 bytes a step with AVX2 when the CPU has
// it and b holds a full block (which the AVX2 version needs, so that it never
// reads outside b). It is assembly, dispatch included, so that it costs one
// call.
//
//go:noescape
func scanPlain(b []byte) (n int, escaped bool)

// cpuid and xgetbv0 are the instructions, for detectAVX2.
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

func xgetbv0() (eax uint32)

func detectAVX2() bool {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 7 {
		return false
	}
	const osxsave, avx = 1 << 27, 1 << 28
	if _, _, ecx, _ := cpuid(1, 0); ecx&(osxsave|avx) != osxsave|avx {
		return false
	}
	if xgetbv0()&6 != 6 { // the OS saves the XMM and YMM state
		return false
	}
	_, ebx, _, _ := cpuid(7, 0)
	return ebx&(1<<5) != 0
}
