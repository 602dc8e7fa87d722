# stack16.S -- a user program on a 16-bit stack segment (the dosemu/Wine
# case of the espfix problem, reference section 4).
#
# modify_ldt makes LDT entry 0 a 16-bit (B = 0) data segment over this
# program's 64 KiB slot, and the program switches SS to it with ESP =
# STACK16_ESP, whose upper half is deliberately not zero. The processor's
# IRET to such a stack loads only SP; restore_all sends these returns to
# ldt_ss, which returns through the espfix stack so ESP[31:16] survives. The
# program checks ESP after every system call and after user-mode loops in
# which timer interrupts land (both return through ldt_ss).

ROUNDS = 20
STACK16_SEL = 0x07			# LDT entry 0, TI = 1, RPL 3
STACK16_ESP = 0x5A5AC000		# SP 0xC000 in the slot; 0x5A5A above it

	.include "lib.S"
	USER_DATA

	.text
_start:
	SYS __NR_getpid
	movl %eax, pid
	movl $1, %ebx			# write an LDT entry
	movl $ldt_entry, %ecx
	movl $16, %edx
	SYS __NR_modify_ldt
	CHECK_EQ $0, %eax, 1

	movl %esp, saved_esp
	movl $STACK16_SEL, %eax
	movl %eax, %ss
	movl $STACK16_ESP, %esp		# in MOV SS's shadow
	movl $ROUNDS, counter
.Lround:
	SYS __NR_getpid
	CHECK_EQ pid, %eax, 10
	CHECK_EQ $STACK16_ESP, %esp, 11
	pushl $0x12345678		# the stack works through SP
	call .Lsub
	popl %eax
	CHECK_EQ $0x12345678, %eax, 12
	SPIN 400
	CHECK_EQ $STACK16_ESP, %esp, 13
	movl %ss, %eax
	CHECK_EQ $STACK16_SEL, %eax, 14
	decl counter
	jnz .Lround

	movl $__USER_DS, %eax		# back to the flat stack
	movl %eax, %ss
	movl saved_esp, %esp
	PRINT done, done_end-done
	FINISH

.Lsub:					# call/ret through SP; (%esp) operands would
	ret				# use all of ESP and fault past the limit

	.data
	.p2align 2
ldt_entry:				# struct user_desc
	.long 0				# entry_number
	.long _start			# base_addr: this program's slot
	.long 0xFFFF			# limit
	.long 0				# 16-bit, data, writable, byte-granular
done:	.ascii "stack16: done\n"
done_end:
