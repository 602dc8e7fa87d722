# badseg.S -- a task whose return to user mode the processor refuses: the
# faulting IRET that 2.6.16's exception table sends to iret_exc.
#
# modify_ldt makes LDT entry 1 a flat 32-bit data segment and the program
# moves its stack onto it (SS = 0x0F: the same base, so ESP is unchanged).
# Then it clears that entry with modify_ldt (base 0, limit 0: 2.6.16's
# "Allow LDTs to be cleared by the user"). The kernel does not look at the
# saved SS, so the system call's return IRET loads SS = 0x0F from a null
# descriptor and faults with #GP(0x0C) (SDM Vol.2 IRET, return to outer
# privilege level: SS must name a writable data segment). The fault is the
# kernel's, on restore_nocheck's IRET: __ex_table sends it to iret_exc, and
# do_iret_error kills the task with SIGSEGV (status 128 + 11), reported on
# the console as "exception 32". Linux's own ldt_gdt and sigreturn selftests
# provoke this return on purpose; a program that frees the LDT entry it runs
# on (a user-level thread library tearing down its segment) does it by
# mistake.
#
# Not part of the default workload (the task dies by design): the race
# explorer's `iret-fault` path boots it as loader.IRET_FAULT_WORKLOAD, with
# `syscalls` to run after it. Should the IRET not fault (a monitor that
# returns without the processor's checks), the program reports check 2 and
# exits with status 1.

BADSEG_SEL = 0x0F			# LDT entry 1, TI = 1, RPL 3

	.include "lib.S"
	USER_DATA

	.text
_start:
	SYS __NR_getpid
	movl %eax, pid
	movl $1, %ebx			# write LDT entry 1: flat, 32-bit, writable
	movl $ldt_flat, %ecx
	movl $16, %edx
	SYS __NR_modify_ldt
	CHECK_EQ $0, %eax, 1

	movl $BADSEG_SEL, %eax		# the stack through the LDT entry
	movl %eax, %ss
	movl $1, %ebx			# clear LDT entry 1: its return faults
	movl $ldt_clear, %ecx
	movl $16, %edx
	SYS __NR_modify_ldt
badseg_returned:			# (a label for tests: never reached)
	movl $__USER_DS, %eax
	movl %eax, %ss
	FAIL 2
	movl $1, %ebx
	SYS __NR_exit

	.data
	.p2align 2
ldt_flat:				# struct user_desc
	.long 1				# entry_number
	.long 0				# base_addr
	.long 0xFFFFF			# limit, in pages: 4 GiB
	.long 0x11			# seg_32bit, data, writable, limit_in_pages
ldt_clear:
	.long 1				# entry_number
	.long 0				# base_addr 0 and limit 0: clear the entry
	.long 0
	.long 0x28			# read_exec_only, seg_not_present (LDT_empty)
