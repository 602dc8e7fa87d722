# locker.S -- contend for the kernel's shared spinlock.
#
# ROUNDS times, vmi_lock_work(PER_CALL) through int $0x80 and through
# SYSENTER: each call takes work_lock with spin_lock_irqsave PER_CALL times.
# Run on two CPUs, two lockers make `lock decb` find the lock held (the
# kernel counts it) and the spin path with STI/CLI run; the kernel checks
# that no two CPUs are ever inside. Every fourth round yields the CPU.

ROUNDS = 12
PER_CALL = 8

	.include "lib.S"
	USER_DATA

	.text
_start:
	SYS __NR_getpid
	movl %eax, pid
	movl $ROUNDS, counter
.Lround:
	movl $PER_CALL, %ebx
	SYS __NR_vmi_lock_work
	CHECK_EQ $PER_CALL, %eax, 1
	movl $PER_CALL, %ebx
	SYSENTER_CALL __NR_vmi_lock_work
	CHECK_EQ $PER_CALL, %eax, 2
	testl $3, counter
	jnz 1f
	SYS __NR_sched_yield
	CHECK_EQ $0, %eax, 3
1:	decl counter
	jnz .Lround
	PRINT done, done_end-done
	FINISH

	.data
done:	.ascii "locker: done\n"
done_end:
