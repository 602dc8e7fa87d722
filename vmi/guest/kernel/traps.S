# traps.S -- what the entry paths call: the exception handlers with the
# exception table, the interrupt handler and timer, the lazy FPU switch,
# signal delivery, and the espfix set-up of ldt_ss.

	.text

# ---------------------------------------------------------------------------
# Exceptions. do_trap(regs, error_code, vector | signal << 8):
#   from user mode: the task is killed by `signal` (this kernel has no
#   signal handlers) -- it exits with status 128 + signal;
#   from kernel mode: the exception table may name a fixup for the faulting
#   instruction (a user access, a segment reload, an IRET); otherwise the
#   kernel oopses: the fault is reported, counted as a failed check, and
#   every CPU stops.

.macro DO_TRAP name, vector, signal
ENTRY do_\name
	movl $(\vector | (\signal << 8)), %ecx
	jmp do_trap
.endm

	DO_TRAP divide_error, 0, SIGFPE
	DO_TRAP debug, 1, 5
	DO_TRAP nmi, 2, SIGSEGV
	DO_TRAP int3, 3, 5
	DO_TRAP overflow, 4, SIGSEGV
	DO_TRAP bounds, 5, SIGSEGV
	DO_TRAP invalid_op, 6, 4
	DO_TRAP coprocessor_segment_overrun, 9, SIGFPE
	DO_TRAP invalid_TSS, 10, SIGSEGV
	DO_TRAP segment_not_present, 11, 7
	DO_TRAP stack_segment, 12, 7
	DO_TRAP general_protection, 13, SIGSEGV
	DO_TRAP spurious_interrupt_bug, 15, SIGSEGV
	DO_TRAP coprocessor_error, 16, SIGFPE
	DO_TRAP alignment_check, 17, 7
	DO_TRAP machine_check, 18, SIGSEGV
	DO_TRAP simd_coprocessor_error, 19, SIGFPE
	# iret_exc: the IRET to user mode faulted; its frame is the user's
	DO_TRAP iret_error, 32, SIGSEGV

# #PF is an interrupt gate: CR2 is read before anything can fault again.
ENTRY do_page_fault
	movl %cr2, %ecx
	movl %ecx, last_fault_address
	movl $(14 | (SIGSEGV << 8)), %ecx
	jmp do_trap

ENTRY do_trap
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %eax, %ebx			# regs
	movl %edx, %esi			# error code
	movl %ecx, %edi			# vector | signal << 8
	CPU_STAT CPU_exceptions, %eax
	movl CS(%ebx), %eax
	andl $SEGMENT_RPL_MASK, %eax
	cmpl $USER_RPL, %eax		# user_mode(): CS & 3 == 3 (VMI patch 11/24)
	je user_fault
	movl %ebx, %eax
	call fixup_exception
	testl %eax, %eax
	jz 1f
	popl %edi
	popl %esi
	popl %ebx
	ret
1:	movl %ebx, %eax
	movl %esi, %edx
	movl %edi, %ecx
	jmp die

# user_fault (from do_trap, registers as there): report and kill the task.
user_fault:
	call console_lock
	pushl %eax
	movl $msg_task, %eax
	call put_str
	GET_THREAD_INFO %eax
	movl TI_task(%eax), %eax
	movl TASK_pid(%eax), %eax
	call put_dec
	movl $msg_killed_vector, %eax
	call put_str
	movl %edi, %eax
	andl $0xFF, %eax
	call put_dec
	movl $msg_error, %eax
	call put_str
	movl %esi, %eax
	call put_hex
	movl $msg_at, %eax
	call put_str
	movl EIP(%ebx), %eax
	call put_hex
	movl $msg_signal, %eax
	call put_str
	movl %edi, %eax
	shrl $8, %eax
	call put_dec
	movl $msg_newline, %eax
	call put_str
	popl %eax
	call console_unlock
	lock incl user_faults
	movl %edi, %eax
	shrl $8, %eax
	addl $128, %eax
	jmp do_exit

# die(regs, error_code, vector): an exception the kernel cannot handle.
ENTRY die
	movl %eax, %ebx
	movl %edx, %esi
	movl %ecx, %edi
	call console_lock
	movl $msg_oops, %eax
	call put_str
	movl %edi, %eax
	andl $0xFF, %eax
	call put_dec
	movl $msg_error, %eax
	call put_str
	movl %esi, %eax
	call put_hex
	movl $msg_at, %eax
	call put_str
	movl CS(%ebx), %eax
	call put_hex
	movl $':', %eax
	call put_char
	movl EIP(%ebx), %eax
	call put_hex
	movl $msg_newline, %eax
	call put_str
	xorl %eax, %eax			# leave the console locked: nothing follows
	lock incl kernel_oopses
	lock incl checks_failed
	movl $1, system_halted
	jmp halt_this_cpu

# fixup_exception(regs) -> 1 if the faulting EIP has an entry in __ex_table
# (then regs->eip = its fixup), else 0.
ENTRY fixup_exception
	movl EIP(%eax), %edx
	movl $__start___ex_table, %ecx
1:	cmpl $__stop___ex_table, %ecx
	jae 3f
	cmpl (%ecx), %edx
	je 2f
	addl $8, %ecx
	jmp 1b
2:	movl 4(%ecx), %edx
	movl %edx, EIP(%eax)
	lock incl exception_fixups
	movl $1, %eax
	ret
3:	xorl %eax, %eax
	ret


# ---------------------------------------------------------------------------
# External interrupts. do_IRQ(regs): the vector is ~ORIG_EAX. irq_enter and
# irq_exit bracket the handler with HARDIRQ_OFFSET in preempt_count. Every
# vector is acknowledged to the interrupt controller (non-specific EOI).
ENTRY do_IRQ
	pushl %ebx
	pushl %esi
	GET_THREAD_INFO %ebx
	addl $HARDIRQ_OFFSET, TI_preempt_count(%ebx)
	movl ORIG_EAX(%eax), %esi
	notl %esi			# the vector
	CPU_STAT CPU_irqs, %edx
	cmpl $TIMER_VECTOR, %esi
	jne 1f
	call timer_interrupt
	jmp 2f
1:	cmpl $CONSOLE_VECTOR, %esi
	jne 3f
	call console_interrupt
	jmp 2f
3:	CPU_STAT CPU_spurious, %edx
2:	movb $PIC_EOI, %al
	outb %al, $PORT_PIC
	subl $HARDIRQ_OFFSET, TI_preempt_count(%ebx)
	popl %esi
	popl %ebx
	ret

# timer_interrupt: one tick on this CPU. Each task's time slice is one tick:
# the tick asks for a reschedule of whatever runs (scheduler_tick).
ENTRY timer_interrupt
	cmpl $0, system_halted
	jne halt_this_cpu
	CPU_STAT CPU_ticks, %edx
	GET_THREAD_INFO %edx
	cmpl $0, TI_cpu(%edx)
	jne 1f
	incl jiffies
1:	lock orl $_TIF_NEED_RESCHED, TI_flags(%edx)
	ret

# console_interrupt: ^C typed on the console (IRQ 1). As a tty sends SIGINT to
# its foreground process, this sends it to whatever task runs here (not the
# idle task). The workload never raises IRQ 1; the race explorer does: an
# interrupt that leaves TIF work (sigpending) which only the return to user
# mode acts on, so losing it in the IRET window is visible (docs/race.md).
ENTRY console_interrupt
	CPU_STAT CPU_console, %edx
	GET_THREAD_INFO %edx
	movl TI_task(%edx), %eax
	cmpl $0, TASK_pid(%eax)
	je 1f
	movl $SIGINT, %ecx
	jmp send_signal
1:	ret


# ---------------------------------------------------------------------------
# The lazy FPU switch. CR0.TS is set whenever the task on a CPU does not own
# the FPU; its first x87 instruction then raises #NM and lands here (from
# device_not_available, interrupts off): clear TS, give the task a fresh
# FPU context (fninit) or its saved one (frstor), and mark it the owner
# (TS_USEDFPU) so that __switch_to saves the context and sets TS again.
ENTRY math_state_restore
	clts
	GET_THREAD_INFO %edx
	movl TI_task(%edx), %ecx
	cmpl $0, TASK_used_math(%ecx)
	jne 1f
	fninit
	movl $1, TASK_used_math(%ecx)
	jmp 2f
1:	frstor TASK_i387(%ecx)
2:	orl $TS_USEDFPU, TI_status(%edx)
	lock incl TASK_nm_traps(%ecx)
	CPU_STAT CPU_nm_traps, %edx
	ret

# math_emulate(regs): CR0.EM is never set by this kernel; treat as SIGFPE.
ENTRY math_emulate
	movl $(7 | (SIGFPE << 8)), %ecx
	jmp do_trap


# ---------------------------------------------------------------------------
# do_notify_resume(regs, 0, work flags): signal delivery, reduced to its
# bookkeeping. This kernel has no signal handlers: each pending signal is
# recorded for the task (count and last number) and cleared. TIF_SIGPENDING
# is cleared before the pending set is taken, so a signal sent meanwhile
# sets it again and is seen on the next return to user mode.
ENTRY do_notify_resume
	testl $_TIF_SIGPENDING, %ecx
	jz 9f
	pushl %ebx
	GET_THREAD_INFO %edx
	lock andl $~_TIF_SIGPENDING, TI_flags(%edx)
	movl TI_task(%edx), %ebx
	xorl %eax, %eax
	xchgl %eax, TASK_sigpending(%ebx)	# take and clear the pending set
	CPU_STAT CPU_signals, %edx
1:	testl %eax, %eax
	jz 2f
	bsfl %eax, %ecx
	btrl %ecx, %eax
	incl TASK_signals(%ebx)
	movl %ecx, TASK_last_signal(%ebx)
	lock incl signals_delivered
	jmp 1b
2:	popl %ebx
9:	ret

# do_syscall_trace(regs, entryexit): there is no tracer; count the call and
# drop the single-step note.
ENTRY do_syscall_trace
	lock incl syscall_traces
	GET_THREAD_INFO %edx
	lock andl $~_TIF_SINGLESTEP, TI_flags(%edx)
	ret


# ---------------------------------------------------------------------------
# setup_x86_bogus_stack(stk): ldt_ss's espfix set-up (the scheme of 2.6.10 -
# 2.6.18, reference section 4). On entry the pt_regs frame lies at stk + 8.
#   1. move the frame down to stk, freeing 8 bytes above it for `switch16`;
#   2. copy the IRET frame (EIP, CS, EFLAGS, OLDESP, OLDSS: 20 bytes) to the
#      top of this CPU's small 16-bit stack, under an 8-byte `switch32`
#      pointer back to the kernel stack (kept for a fault handler to find);
#   3. switch16 = ((user ESP & 0xFFFF0000) | offset of that copy) :
#      __ESPFIX_SS. ldt_ss loads it with lss after RESTORE_REGS: SP then
#      addresses the copy and ESP[31:16] is the user's already, so the
#      IRET, which loads only SP, leaves the user its own ESP[31:16].
ENTRY setup_x86_bogus_stack
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %eax, %edx			# stk
	leal 8(%edx), %esi
	movl %edx, %edi
	movl $(PT_REGS_SIZE / 4), %ecx
	cld
	rep movsl			# 1. (overlapping, downwards: forward copy)
	GET_CPU %ebx
	shll $10, %ebx			# * CPU_16BIT_STACK_SIZE
	addl $cpu_16bit_stack, %ebx	# the base of __ESPFIX_SS on this CPU
	leal EIP(%edx), %ecx		# 2. switch32: where ESP would be at the IRET
	movl %ecx, (CPU_16BIT_STACK_SIZE - 8)(%ebx)
	KERNEL_RPL %ecx
	orl $__KERNEL_DS, %ecx
	movl %ecx, (CPU_16BIT_STACK_SIZE - 4)(%ebx)
	leal EIP(%edx), %esi
	leal (CPU_16BIT_STACK_SIZE - 8 - 20)(%ebx), %edi
	movl $5, %ecx
	rep movsl
	movl OLDESP(%edx), %ecx		# 3. switch16
	andl $0xFFFF0000, %ecx
	orl $(CPU_16BIT_STACK_SIZE - 8 - 20), %ecx
	movl %ecx, PT_REGS_SIZE(%edx)
	KERNEL_RPL %ecx
	orl $__ESPFIX_SS, %ecx
	movl %ecx, (PT_REGS_SIZE + 4)(%edx)
	CPU_STAT CPU_espfix, %ecx
	popl %edi
	popl %esi
	popl %ebx
	ret


# ---------------------------------------------------------------------------
# doublefault_fn: the double-fault task (2.6.16 arch/i386/kernel/doublefault.c).
# IDT entry 8 is a task gate, so a #DF -- a fault while the processor was
# delivering another one, typically on a kernel stack that is no longer
# usable -- switches to this CPU's double-fault TSS (cpu_init): its own
# stack, the kernel's page directory, interrupts off. The processor saved
# the faulting task's registers in that task's TSS and wrote its selector
# in our TSS's previous-task link (SDM Vol.3A §7.3, Table 7-2), and pushed
# the error code (0) on our stack. EBX = this CPU's number (set in the TSS).
# Like doublefault_fn, report what the previous task was doing and stop:
# nothing can be resumed. No lock is taken for the console: the task that
# faulted may hold it.
ENTRY doublefault_fn
	movl %esp, double_fault_esp
	lock incl double_faults
	movl $msg_double_fault, %eax
	call put_str
	movl %ebx, %eax
	call put_dec
	movl $msg_df_eip, %eax
	call put_str
	# the previous task's TSS: the link field of ours names its descriptor
	# in this CPU's GDT; the base is spread over the descriptor (§3.4.5)
	imull $DOUBLEFAULT_TSS_SIZE, %ebx, %esi
	movzwl doublefault_tss + TSS_link(%esi), %eax
	pushl %eax
	call put_hex
	popl %eax
	andl $0xFFF8, %eax
	movl %ebx, %edx
	shll $8, %edx				# GDT_ENTRIES * 8 bytes per CPU
	leal cpu_gdt_table(%edx,%eax), %edx
	movl 4(%edx), %ecx
	movl (%edx), %esi
	shrl $16, %esi				# base 15:0
	movl %ecx, %eax
	andl $0xFF, %eax
	shll $16, %eax				# base 23:16
	orl %eax, %esi
	andl $0xFF000000, %ecx			# base 31:24
	orl %ecx, %esi				# %esi = the previous task's TSS
	movl $msg_df_esp, %eax
	call put_str
	movl TSS_eip(%esi), %eax
	call put_hex
	movl $msg_df_stack, %eax
	call put_str
	movl TSS_esp(%esi), %eax
	call put_hex
	movl $msg_df_own, %eax
	call put_str
	movl double_fault_esp, %eax
	call put_hex
	movl $msg_newline, %eax
	call put_str
	lock incl kernel_oopses
	lock incl checks_failed
	movl $1, system_halted
	jmp halt_this_cpu


# kernel_gate_call: the routine behind the user call gate __CALL_GATE
# (GDT entry 27; vmi/guest/user/callgate.S). `lcall $__CALL_GATE, $0` from
# ring 3 enters here at the kernel's privilege on the task's kernel stack
# (TSS.ss0:esp0), where the processor pushed the caller's SS, ESP, CS and
# EIP (SDM Vol.3A §5.8.5, Figure 5-13). Returns callgate_value in EAX and
# the number of calls so far in EDX, and goes back to ring 3 with a far
# RET to an outer level (§5.8.6).
ENTRY kernel_gate_call
	movl $1, %edx
	lock xaddl %edx, callgate_calls
	incl %edx
	movl callgate_value, %eax
	lret
