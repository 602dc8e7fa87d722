# syscalls.S -- the system-call paths from user mode.
#
# Sends SIGUSR1 to every task (the other programs wait for it), checks the
# error returns (-EFAULT from a bad buffer, -ENOSYS from an unknown or
# out-of-range number), then calls getpid ROUNDS times through int $0x80 and
# through the vsyscall stub (SYSENTER/SYSEXIT), checking after each call
# that the result is right and that every other register, ESP included,
# survived.

ROUNDS = 40
S_EBX = 0x11111111
S_ECX = 0x22222222
S_EDX = 0x33333333
S_ESI = 0x44444444
S_EDI = 0x55555555
S_EBP = 0x66666666

	.include "lib.S"
	USER_DATA

.macro SENTINELS
	movl %esp, saved_esp
	movl $S_EBX, %ebx
	movl $S_ECX, %ecx
	movl $S_EDX, %edx
	movl $S_ESI, %esi
	movl $S_EDI, %edi
	movl $S_EBP, %ebp
.endm

# CHECK_SENTINELS id: EAX = the pid, the other registers as SENTINELS left them
.macro CHECK_SENTINELS id
	cmpl pid, %eax
	jne .Lbad\@
	cmpl $S_EBX, %ebx
	jne .Lbad\@
	cmpl $S_ECX, %ecx
	jne .Lbad\@
	cmpl $S_EDX, %edx
	jne .Lbad\@
	cmpl $S_ESI, %esi
	jne .Lbad\@
	cmpl $S_EDI, %edi
	jne .Lbad\@
	cmpl $S_EBP, %ebp
	jne .Lbad\@
	cmpl saved_esp, %esp
	je .Lgood\@
.Lbad\@:
	FAIL \id
.Lgood\@:
.endm

	.text
_start:
	SYS __NR_getpid
	movl %eax, pid
	PRINT hello, hello_end-hello

	# SIGUSR1 to pids 1..NR_TASKS (this task included; -ESRCH for the rest)
	movl $1, %esi
1:	movl %esi, %ebx
	movl $SIGUSR1, %ecx
	SYS __NR_kill
	incl %esi
	cmpl $NR_TASKS, %esi
	jbe 1b

	# a buffer the kernel cannot read: -EFAULT through the exception table
	movl $1, %ebx
	movl $0x1000, %ecx
	movl $4, %edx
	SYS __NR_write
	CHECK_EQ $-EFAULT, %eax, 1
	# an unimplemented number and one past the table: -ENOSYS
	SYS 200
	CHECK_EQ $-ENOSYS, %eax, 2
	SYS 100000
	CHECK_EQ $-ENOSYS, %eax, 3
	SYSENTER_CALL 100000
	CHECK_EQ $-ENOSYS, %eax, 4

	movl $ROUNDS, counter
.Lround:
	SENTINELS
	SYS __NR_getpid
	CHECK_SENTINELS 10
	SENTINELS
	SYSENTER_CALL __NR_getpid
	CHECK_SENTINELS 20
	SPIN 400
	decl counter
	jnz .Lround

	# a write through the sysenter path
	movl $1, %ebx
	movl $done, %ecx
	movl $(done_end - done), %edx
	SYSENTER_CALL __NR_write
	CHECK_EQ $(done_end - done), %eax, 30
	FINISH

	.data
hello:	.ascii "syscalls: int $0x80 and sysenter\n"
hello_end:
done:	.ascii "syscalls: done (written through sysenter)\n"
done_end:
