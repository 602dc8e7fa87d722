# Directives and expressions of the supported dialect, compared with GNU as.
/ a line comment: '/' as the first character
/* a C comment
   over two lines */	.text
	.globl start, other ; .global third
start:	movl $(1 + 2 & 3), %eax		# GNU as: & binds tighter than +
	movl $(7 - 2 - 1), %ebx ; movl $(2 * 3 << 1), %ecx
	movl $((1 < 2) + (2 > 1)), %edx	# true is -1
	movl $(5 ! 1), %esi		# or-not
	movl $(-7 / 2), %edi ; movl $(-7 % 2), %ebp
	movl $(~0 >> 28), %eax ; movl $(!5 + !0), %eax
	movl $(1 && 2), %eax ; movl $(0 || 3), %eax
	.long 3 == 3, 3 != 4, 3 <> 3, 2 <= 1, 2 >= 1
	movl $'a, %eax ; movb $'\n, %al ; movl $0b1011, %eax ; movl $017, %eax

SIZE = 16
.equ COUNT, SIZE / 4
.set SCALE, 4
	movl COUNT*SCALE(%ebp,%esi,SCALE/2), %eax
.set SCALE, 8				# .set may redefine
	movl $SCALE, %eax

1:	jmp 1f
	jmp 1b
1:	loop 1b
2:	jne 2b
	jmp 3f
	.fill 130, 1, 0x90		# pushes the next branch to the long form
3:	jmp 2b

.macro pair a, b=7, c:vararg
	.byte \a, \b
	.ifnb \c
	.byte \c
	.endif
.endm
	pair 1
	pair 2, 3
	pair 4 5 6, 7, 8
	pair b=9, a=10

.macro counter
	.long \@
.endm
	counter ; counter

.macro named base, suffix
\base\()_\suffix:
	.long \base\()_\suffix
.endm
	named foo, bar

.macro early n
	.if \n > 2
	.exitm
	.endif
	.byte \n
.endm
	early 1 ; early 3 ; early 2

.macro gone
	.byte 0xee
.endm
	gone
.purgem gone
.macro gone
	.byte 0xef
.endm
	gone

	.rept 3
	inc %eax
	.endr
	.irp reg, %eax, %ebx, %ecx
	push \reg
	.endr
	.irpc c, 123
	.byte \c
	.endr

.ifdef SIZE
	.byte 1
.else
	.byte 2
.endif
.ifndef NOT_DEFINED
	.byte 3
.endif
.if SIZE == 8
	.byte 4
.elseif SIZE == 16
	.byte 5
.else
	.byte 6
.endif
.ifc abc, abc
	.byte 7
.endif
.ifnc abc, abd
	.byte 8
.endif
.ifeq SIZE - 16
	.byte 9
.endif
.ifgt SIZE
	.byte 10
.endif

	.include "features.inc"

	.p2align 4
	nop
	.align 8
	nop
	.balign 32, 0xcc
	.balignw 4, 0x9090
	.p2align 5,,3
	.byte 0x11
	.p2align 3,,7
	.nops 9

	.code16
	movw %ax, %bx
	movl %eax, %ebx
	movw 4(%bx,%si), %ax
	jmp 4f
4:	.p2align 4
	.code32
	lock addl $1, (%eax)
	rep movsb ; repnz scasb
	cs
	nop
	data16 nop

	.data
	.byte 1, 2, -1, 255
	.word 0x1234, -2
	.short 3
	.value 4
	.long start, .
	.int 5
	.quad 0x123456789abcdef0, -1
	.ascii "abc", "d\te"
	.asciz "nul"
	.string "str\x41\101"
	.space 3
	.skip 2, 0x5a
	.zero 2
	.fill 3, 2, 0x1234
	.fill 2, 4, -1
	.align 4
	.org . + 6, 0x77

	.section .rodata, "a"
other:	.long 0xdeadbeef
	.pushsection .text
third:	ret
	.popsection
	.long third
	.previous
	.long 0x55
	.section .rodata
	.previous
	.byte 0x66
