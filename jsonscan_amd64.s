//go:build amd64 && !purego

#include "textflag.h"

// The bytes the scan compares with: '"', '\\', 0x1f (the highest control
// byte) and 0x0f (a nibble).
DATA scanconst<>+0(SB)/1, $0x22
DATA scanconst<>+1(SB)/1, $0x5c
DATA scanconst<>+2(SB)/1, $0x1f
DATA scanconst<>+3(SB)/1, $0x0f
GLOBL scanconst<>(SB), RODATA|NOPTR, $4

// A byte's class is the AND of the bits looked up by its low nibble and by
// its high nibble. Bits 0-3: it may follow a backslash in a two-byte escape
// (" / \ b f n r t; 1 stands for high nibble 2, 2 for 5, 4 for 6, 8 for 7);
// bit 4: 'u'; bits 5 and 6: a hex digit (0-9; A-F and a-f).
DATA escapelo<>+0(SB)/8, $0x20647068606d6020
DATA escapelo<>+8(SB)/8, $0x0104000200002020
GLOBL escapelo<>(SB), RODATA|NOPTR, $16
DATA escapehi<>+0(SB)/8, $0x1844024020010000
DATA escapehi<>+8(SB)/8, $0x0000000000000000
GLOBL escapehi<>(SB), RODATA|NOPTR, $16

// CLASSIFY sets the bytes of qc to 0xff where src's byte is '"' or at most
// 0x1f (min(c, 0x1f) == c), and those of bs where it is '\\'; t is scratch.
#define CLASSIFY(src, qc, bs, t) \
	VPCMPEQB Y0, src, qc; \
	VPMINUB  Y2, src, t; \
	VPCMPEQB src, t, t; \
	VPOR     t, qc, qc; \
	VPCMPEQB Y1, src, bs

// CLASSES sets the bytes of dst to the classes of src's (VPSHUFB yields 0
// for a byte >= 0x80) and those of ns to 0xff where the byte may not follow
// a backslash in a two-byte escape; t is scratch.
#define CLASSES(src, dst, ns, t) \
	VPSHUFB  src, Y13, t; \
	VPSRLW   $4, src, dst; \
	VPAND    Y15, dst, dst; \
	VPSHUFB  dst, Y14, dst; \
	VPAND    t, dst, dst; \
	VPAND    Y15, dst, ns; \
	VPXOR    t, t, t; \
	VPCMPEQB t, ns, ns

// MASK64 packs the byte masks of two 32-byte halves into a 64-bit mask.
#define MASK64(lo, hi, dst, t) \
	VPMOVMSKB lo, dst; \
	VPMOVMSKB hi, t; \
	SHLQ      $32, t; \
	ORQ       t, dst

// func scanPlain(b []byte) (n int, escaped bool)
//
// With AVX2 and len(b) >= 64, b is scanned 64 bytes a block; else this is a
// tail call of scanPlainGeneric. For a block with special bytes, 64-bit masks
// (bit p for byte DI+p) of quotes and control bytes (AX), backslashes (BX)
// and bytes that may not be escaped (R11) give, without a branch a byte, the
// escaped bytes (as simdjson finds them), and from those the first byte where
// the scan stops. Registers: SI b's base, DX len(b), DI the block's start,
// R8 the escaped bytes seen (non-zero: escaped), R9 1 when the block's first
// byte is escaped by a backslash ending the block before.
TEXT ·scanPlain(SB), NOSPLIT, $0-33
	MOVQ           b_base+0(FP), SI
	MOVQ           b_len+8(FP), DX
	CMPB           ·cpuHasAVX2(SB), $0
	JEQ            generic
	CMPQ           DX, $64
	JB             generic
	VPBROADCASTB   scanconst<>+0(SB), Y0
	VPBROADCASTB   scanconst<>+1(SB), Y1
	VPBROADCASTB   scanconst<>+2(SB), Y2
	VBROADCASTI128 escapelo<>(SB), Y13
	VBROADCASTI128 escapehi<>(SB), Y14
	VPBROADCASTB   scanconst<>+3(SB), Y15
	XORL           DI, DI
	XORL           R8, R8
	XORL           R9, R9

loop:
	LEAQ     64(DI), AX
	CMPQ     AX, DX
	JHI      tail
	VMOVDQU  (SI)(DI*1), Y3
	VMOVDQU  32(SI)(DI*1), Y4
	CLASSIFY(Y3, Y5, Y6, Y9)
	CLASSIFY(Y4, Y7, Y8, Y10)
	VPOR     Y5, Y6, Y11
	VPOR     Y7, Y8, Y12
	VPOR     Y11, Y12, Y11
	VPTEST   Y11, Y11
	JNZ      block
	TESTQ    R9, R9
	JNZ      block
	ADDQ     $64, DI
	JMP      loop

block:
	MASK64(Y5, Y7, AX, CX)
	MASK64(Y6, Y8, BX, CX)
	XORL     R11, R11
	MOVQ     BX, CX
	ORQ      R9, CX
	JZ       resolve // nothing escaped in the block
	CLASSES(Y3, Y9, Y5, Y10)
	CLASSES(Y4, Y11, Y7, Y12)
	MASK64(Y5, Y7, R11, CX)
	JMP      resolve

tail:
	// Under 64 bytes left (len(b) >= 64): the block is b's last 64 bytes,
	// its masks shifted to start at DI. Bytes past b's end may not be
	// escaped: a backslash ending b stops the scan.
	CMPQ     DI, DX
	JAE      end
	LEAQ     -64(DX), R12
	VMOVDQU  (SI)(R12*1), Y3
	VMOVDQU  32(SI)(R12*1), Y4
	CLASSIFY(Y3, Y5, Y6, Y9)
	CLASSIFY(Y4, Y7, Y8, Y10)
	MASK64(Y5, Y7, AX, CX)
	MASK64(Y6, Y8, BX, CX)
	CLASSES(Y3, Y9, Y5, Y10)
	CLASSES(Y4, Y11, Y7, Y12)
	MASK64(Y5, Y7, R11, CX)
	MOVQ     DI, CX
	SUBQ     R12, CX
	SHRQ     CX, AX
	SHRQ     CX, BX
	NOTQ     R11
	SHRQ     CX, R11
	NOTQ     R11

resolve:
	// R13: the escaped bytes; R12: the escaping backslashes. A run of
	// backslashes escapes the byte after it when its length is odd: the
	// subtraction turns each run into its parity.
	MOVQ     R9, CX
	NOTQ     CX
	ANDQ     BX, CX
	LEAQ     (CX)(CX*1), R12
	MOVQ     $0xaaaaaaaaaaaaaaaa, R10
	ORQ      R10, R12
	SUBQ     CX, R12
	XORQ     R10, R12
	MOVQ     BX, R13
	ORQ      R9, R13
	XORQ     R12, R13
	ANDQ     BX, R12
	SHRQ     $63, R12
	MOVQ     R12, R9
	// Stop at the first quote or control byte not escaped, or at the
	// backslash before an escaped byte that may not be (R11): not one of a
	// two-byte escape, nor a 'u' with four hex digits in the block.
	ANDQ     R13, R11
	JNZ      uescape

stops:
	MOVQ     R13, CX
	NOTQ     CX
	ANDQ     CX, AX
	ORQ      R11, AX
	JNZ      stop
	ORQ      R13, R8
	ADDQ     $64, DI
	JMP      loop

stop:
	BSFQ     AX, CX
	MOVL     $1, R12
	SHLQ     CX, R12
	DECQ     R12
	ANDQ     R13, R12
	ORQ      R12, R8
	BTQ      CX, R11
	JCS      badescape
	ADDQ     CX, DI
	JMP      done

badescape:
	// The scan stops at the backslash, unless the escape might be a \u
	// whose digits run past the block: then it restarts there, the escape
	// now whole in the block (a restart at the block's start stops).
	LEAQ     -1(DI)(CX*1), DI
	CMPQ     CX, $2
	JB       done
	XORL     R9, R9
	JMP      loop

uescape:
	// The class vectors are in Y9 and Y11. R10: the 'u' bytes; R12: the
	// hex digits; both shifted as the other masks are in the tail block
	// (by DI+64-len(b) when positive).
	VPSLLW   $3, Y9, Y5
	VPSLLW   $3, Y11, Y6
	MASK64(Y5, Y6, R10, CX)
	VPSLLW   $1, Y9, Y5
	VPSLLW   $2, Y9, Y6
	VPOR     Y5, Y6, Y5
	VPSLLW   $1, Y11, Y6
	VPSLLW   $2, Y11, Y7
	VPOR     Y6, Y7, Y6
	MASK64(Y5, Y6, R12, CX)
	LEAQ     64(DI), CX
	SUBQ     DX, CX
	XORL     BX, BX
	CMPQ     CX, BX
	CMOVQLT  BX, CX
	SHRQ     CX, R10
	SHRQ     CX, R12
	// A 'u' is a \u escape's when the four bytes after it are hex digits.
	SHRQ     $1, R12
	ANDQ     R12, R10
	SHRQ     $1, R12
	ANDQ     R12, R10
	SHRQ     $1, R12
	ANDQ     R12, R10
	SHRQ     $1, R12
	ANDQ     R12, R10
	NOTQ     R10
	ANDQ     R10, R11
	JMP      stops

end:
	MOVQ     DX, DI
	SUBQ     R9, DI

done:
	VZEROUPPER
	MOVQ     DI, n+24(FP)
	TESTQ    R8, R8
	SETNE    escaped+32(FP)
	RET

generic:
	JMP ·scanPlainGeneric(SB)
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
