# callgate.S -- a ring-3 to ring-0 transition through a call gate.
#
# The kernel puts a DPL-3 32-bit call gate in its GDT (__CALL_GATE, entry 27)
# to kernel_gate_call, a ring-0 routine that returns callgate_value in EAX
# and the number of calls so far in EDX (kernel/traps.S). `lcall` through
# the gate switches to the task's kernel stack (TSS.ss0:esp0) and ring 0;
# the routine's `lret` comes back to ring 3 on this stack (SDM Vol.3A
# §5.8.5, §5.8.6). Each of ROUNDS calls checks the value, the count, that
# ESP and the callee-saved registers survived and that CS is ring 3 again.
# Not part of the default workload: tests boot it with their own workload.

ROUNDS = 3
S_EBX = 0x11111111
S_ESI = 0x44444444
S_EDI = 0x55555555
S_EBP = 0x66666666

	.include "lib.S"
	USER_DATA

	.text
_start:
	SYS __NR_getpid
	movl %eax, pid
	movl $1, counter			# the call count the kernel should report
.Lcall:
	movl $S_EBX, %ebx
	movl $S_ESI, %esi
	movl $S_EDI, %edi
	movl $S_EBP, %ebp
	movl %esp, saved_esp
	lcall $__CALL_GATE, $0			# the offset is ignored: the gate's counts
	CHECK_EQ $CALLGATE_VALUE, %eax, 1
	CHECK_EQ counter, %edx, 2
	CHECK_EQ saved_esp, %esp, 3
	CHECK_EQ $S_EBX, %ebx, 4
	CHECK_EQ $S_ESI, %esi, 5
	CHECK_EQ $S_EDI, %edi, 6
	CHECK_EQ $S_EBP, %ebp, 7
	movl %cs, %eax
	andl $SEGMENT_RPL_MASK, %eax
	CHECK_EQ $USER_RPL, %eax, 8
	incl counter
	cmpl $ROUNDS, counter
	jbe .Lcall
	PRINT done, done_end-done
	FINISH

	.data
done:	.ascii "callgate: done\n"
done_end:
