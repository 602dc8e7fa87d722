# fpu.S -- the lazy FPU switch.
#
# Uses the x87 unit (fninit, fld1, fldz, faddp, fwait) in every round and
# yields in between. Whenever another task ran since, CR0.TS is set and the
# first x87 instruction raises #NM: device_not_available reads CR0 through
# GET_CR0, clears TS and marks this task the FPU owner. The machine has no
# x87 registers, so only the traps are checked: at least one was taken.

ROUNDS = 10

	.include "lib.S"
	USER_DATA

	.text
_start:
	SYS __NR_getpid
	movl %eax, pid
	fninit
	movl $ROUNDS, counter
.Lround:
	fld1
	fldz
	faddp
	fwait
	SPIN 300
	fwait
	SYS __NR_sched_yield
	decl counter
	jnz .Lround
	movl $QUERY_nm_traps, %ebx
	SYS __NR_vmi_query
	testl %eax, %eax
	jnz 1f
	FAIL 1
1:	PRINT done, done_end-done
	FINISH

	.data
done:	.ascii "fpu: done\n"
done_end:
