//go:build amd64 && !purego

#include "textflag.h"

// CLASSIFY sets each byte of dst to 0xff where the byte of src is '"' (Y0),
// '\\' (Y1) or at most 0x1f (Y2: min(c, 0x1f) == c), else to 0; t is scratch.
#define CLASSIFY(src, dst, t) \
	VPCMPEQB Y0, src, dst; \
	VPCMPEQB Y1, src, t; \
	VPOR     t, dst, dst; \
	VPMINUB  Y2, src, t; \
	VPCMPEQB src, t, t; \
	VPOR     t, dst, dst

// Bit sets of the bytes that may follow a backslash in a two-byte escape:
// '"' and '/' (below 64), and '\\' 'b' 'f' 'n' 'r' 't' (64 to 127, less 64).
#define ESCAPES_LO $0x0000800400000000
#define ESCAPES_HI $0x0014404410000000

// The bytes CLASSIFY compares with: '"', '\\' and 0x1f.
DATA scanconst<>+0(SB)/1, $0x22
DATA scanconst<>+1(SB)/1, $0x5c
DATA scanconst<>+2(SB)/1, $0x1f
GLOBL scanconst<>(SB), RODATA|NOPTR, $4

// func scanPlainAVX2(b []byte) (n int, escaped bool)
//
// Registers: SI b's base, DX len(b), DI j (the bytes before it are consumed),
// R8 escaped. A block mask in BX has bit p set when byte R9+p is special;
// R10 is the end of the bytes the mask covers.
TEXT ·scanPlainAVX2(SB), NOSPLIT, $0-33
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), DX
	// VEX-encoded loads only: a legacy SSE instruction (MOVQ AX, X0) can
	// pay an SSE/AVX transition penalty of hundreds of cycles a call.
	VPBROADCASTB scanconst<>+0(SB), Y0
	VPBROADCASTB scanconst<>+1(SB), Y1
	VPBROADCASTB scanconst<>+2(SB), Y2
	XORL DI, DI
	XORL R8, R8

blocks:
	// 64 bytes a step while they are plain: the long-run loop.
	LEAQ 64(DI), AX
	CMPQ AX, DX
	JHI  tail
	VMOVDQU (SI)(DI*1), Y3
	VMOVDQU 32(SI)(DI*1), Y5
	CLASSIFY(Y3, Y4, Y7)
	CLASSIFY(Y5, Y6, Y8)
	VPOR    Y4, Y6, Y9
	VPTEST  Y9, Y9
	JNZ     found64
	ADDQ    $64, DI
	JMP     blocks

found64:
	VPMOVMSKB Y4, BX
	VPMOVMSKB Y6, CX
	SHLQ      $32, CX
	ORQ       CX, BX
	MOVQ      DI, R9
	LEAQ      64(DI), R10
	JMP       next

tail:
	// Under 64 bytes left: one block, the last 32 bytes of b when fewer
	// than 32 are left from j (len(b) >= 32, so it starts inside b), with
	// the bits of bytes before j cleared.
	CMPQ    DI, DX
	JAE     done
	LEAQ    -32(DX), R9
	CMPQ    DI, R9
	CMOVQLT DI, R9
	VMOVDQU (SI)(R9*1), Y3
	CLASSIFY(Y3, Y4, Y7)
	VPMOVMSKB Y4, BX
	MOVQ    DI, CX
	SUBQ    R9, CX
	SHRQ    CX, BX
	SHLQ    CX, BX
	LEAQ    32(R9), R10

next:
	// Take the special bytes of the mask in order; a two-byte escape is
	// consumed here, anything else ends the scan.
	TESTQ   BX, BX
	JNZ     special
	CMPQ    DI, R10
	CMOVQLT R10, DI
	JMP     blocks

special:
	BSFQ    BX, CX
	LEAQ    (R9)(CX*1), AX
	MOVBLZX (SI)(AX*1), R11
	CMPL    R11, $0x5c
	JNE     stop
	LEAQ    1(AX), R11
	CMPQ    R11, DX
	JAE     stop
	MOVBLZX (SI)(R11*1), R11
	CMPL    R11, $0x80
	JAE     stop
	MOVQ    ESCAPES_LO, R12
	MOVQ    ESCAPES_HI, R13
	CMPL    R11, $0x40
	CMOVQCC R13, R12
	BTQ     R11, R12
	JCC     stop
	MOVL    $1, R8
	LEAQ    2(AX), DI
	// Clear the backslash's bit and the escaped byte's (a bit number of
	// 64 is taken mod 64: bit 0, already clear).
	LEAQ    -1(BX), R11
	ANDQ    R11, BX
	INCQ    CX
	BTRQ    CX, BX
	JMP     next

stop:
	MOVQ AX, DI

done:
	VZEROUPPER
	MOVQ DI, n+24(FP)
	MOVB R8, escaped+32(FP)
	RET

// func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL subleaf+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func xgetbv0() (eax uint32)
TEXT ·xgetbv0(SB), NOSPLIT, $0-4
	XORL CX, CX
	XGETBV
	MOVL AX, eax+0(FP)
	RET
