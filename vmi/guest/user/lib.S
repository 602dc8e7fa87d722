# lib.S -- what every user program includes: system-call macros and the
# check-and-report helpers. A program counts its failed checks in
# `failures`, reports each one to the kernel (vmi_check) as it happens, and
# ends with `finish`. VSYSCALL_ENTRY is defined by vmi/guest/build.py.

	.include "../kernel/defs.S"

# SYS nr: a system call through int $0x80.
.macro SYS nr
	movl $\nr, %eax
	int $SYSCALL_VECTOR
.endm

# SYSENTER_CALL nr: a system call through the vsyscall stub (SYSENTER).
.macro SYSENTER_CALL nr
	movl $\nr, %eax
	call VSYSCALL_ENTRY
.endm

# FAIL id: count a failed check and report it (clobbers EAX, EBX, ECX).
.macro FAIL id
	incl failures
	movl $\id, %ebx
	xorl %ecx, %ecx
	SYS __NR_vmi_check
.endm

# CHECK_EQ expected, actual, id
.macro CHECK_EQ expected, actual, id
	cmpl \expected, \actual
	je .Lcheck_ok\@
	FAIL \id
.Lcheck_ok\@:
.endm

# PRINT label, length: write(1, label, length) through int $0x80.
# Arguments are split at blanks, as in GNU as: write `msg_end-msg`, not
# `msg_end - msg` (three arguments).
.macro PRINT text, length
	movl $1, %ebx
	movl $\text, %ecx
	movl $\length, %edx
	SYS __NR_write
.endm

# SPIN n: a user-mode busy loop, long enough for timer ticks to land in it.
.macro SPIN n
	movl $\n, %ecx
.Lspin\@:
	loop .Lspin\@
.endm

# finish: wait (bounded) for the SIGUSR1 the `syscalls` program sends every
# task, check it was recorded, report the overall result and exit with the
# number of failed checks as the status.
.macro FINISH
	movl $2000, wait_rounds
.Lwait\@:
	movl $QUERY_signals, %ebx
	SYS __NR_vmi_query
	testl %eax, %eax
	jnz .Lsignalled\@
	SYS __NR_sched_yield
	decl wait_rounds
	jnz .Lwait\@
	FAIL 90
.Lsignalled\@:
	movl $QUERY_last_signal, %ebx
	SYS __NR_vmi_query
	CHECK_EQ $SIGUSR1, %eax, 91
	xorl %ecx, %ecx
	cmpl $0, failures
	sete %cl
	xorl %ebx, %ebx
	SYS __NR_vmi_check
	movl failures, %ebx
	SYS __NR_exit
.endm

# the variables every program has
.macro USER_DATA
	.data
	.p2align 12			# not on a code page (see kernel.S)
failures:	.long 0
wait_rounds:	.long 0
pid:		.long 0
counter:	.long 0
saved_esp:	.long 0
	.text
.endm
