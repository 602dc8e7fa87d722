# sched.S -- spinlocks, the run queue, schedule() and switch_to, the idle
# loop, and task exit.
#
# One round-robin run queue for all CPUs, protected by runqueue_lock, which
# schedule() takes with spin_lock_irqsave: the seed's spin_lock_flags path
# (STI while spinning if the caller had interrupts on, CLI before retrying)
# runs on every reschedule. The lock is held across the switch itself and
# released by the task switched to, so no other CPU can pick up the task
# that was switched out while its stack is still in use.

	.text

# _spin_lock_irqsave(lock) -> flags: save EFLAGS, disable interrupts, disable
# preemption, take the lock (CONFIG_PREEMPT's order in 2.6.16).
ENTRY _spin_lock_irqsave
	pushl %eax
	call local_save_flags
	movl %eax, %edx
	popl %eax
	CLI
	GET_THREAD_INFO %ecx
	incl TI_preempt_count(%ecx)
	SPIN_LOCK_FLAGS %eax, %edx
	movl %edx, %eax
	ret

# local_save_flags() -> EFLAGS with the interrupt flag as the kernel set it.
# Natively that is pushfl. Deprivileged (ring 1 under VMI) the real IF is
# always 1 and pushfl would always say "enabled", so the VMI ROM's
# GetInterruptMask (call 37, at the ROM's published address + 32 * 37) is
# asked instead: EFLAGS with the virtual IF in bit 9. The macro sets have no
# hook for this (the seed's eight hooks cover entry.S and spinlock.h only);
# 2.6.21's paravirt_ops made it an indirect call in the same way.
VMI_CALL_GET_INTERRUPT_MASK = 37

ENTRY local_save_flags
	movl %cs, %eax
	testl $SEGMENT_RPL_MASK, %eax
	jnz 1f
	pushfl
	popl %eax
	ret
1:	movl vmi_rom_top, %eax
	addl $(VMI_CALL_GET_INTERRUPT_MASK * 32), %eax
	jmp *%eax			# the ROM returns to our caller

# _spin_unlock_irqrestore(lock, flags): release, enable preemption, and
# enable interrupts again if `flags` had them (the STI hook: no popfl, whose
# IF a deprivileged kernel could not change).
ENTRY _spin_unlock_irqrestore
	SPIN_UNLOCK %eax
	GET_THREAD_INFO %ecx
	decl TI_preempt_count(%ecx)
	testl $IF_MASK, %edx
	jz 1f
	STI
1:	ret


# enqueue_task(task): append to the run queue (runqueue_lock held).
ENTRY enqueue_task
	movl $0, TASK_next(%eax)
	movl runqueue_tail, %edx
	testl %edx, %edx
	jz 1f
	movl %eax, TASK_next(%edx)
	jmp 2f
1:	movl %eax, runqueue_head
2:	movl %eax, runqueue_tail
	incl nr_running
	ret

# dequeue_task() -> the task at the head of the run queue, or 0.
ENTRY dequeue_task
	movl runqueue_head, %eax
	testl %eax, %eax
	jz 2f
	movl TASK_next(%eax), %edx
	movl %edx, runqueue_head
	testl %edx, %edx
	jnz 1f
	movl $0, runqueue_tail
1:	decl nr_running
2:	ret


# schedule(): put the current task at the tail of the run queue (if it is a
# runnable user task) and switch to the task at the head, or to this CPU's
# idle task when the queue is empty.
ENTRY schedule
	pushl %ebp
	pushl %edi
	pushl %esi
	pushl %ebx
	subl $4, %esp			# (%esp): the EFLAGS spin_lock_irqsave saved
.Lschedule_again:
	GET_THREAD_INFO %ebp
	movl TI_task(%ebp), %esi	# prev
	movl $runqueue_lock, %eax
	call _spin_lock_irqsave
	movl %eax, (%esp)
	lock andl $~_TIF_NEED_RESCHED, TI_flags(%ebp)
	cmpl $TASK_RUNNING, TASK_state(%esi)
	jne 1f
	testl $PF_IDLE, TASK_flags(%esi)
	jnz 1f
	movl %esi, %eax
	call enqueue_task
1:	call dequeue_task
	testl %eax, %eax
	jnz 2f
	movl TI_cpu(%ebp), %eax
	movl idle_task(,%eax,4), %eax
2:	cmpl %eax, %esi
	je .Lswitch_done
	movl %eax, %edi			# next
	CPU_STAT CPU_switches, %eax
	movl %esi, %eax
	movl %edi, %edx
	# switch_to(prev, next), as 2.6.16's asm-i386/system.h arranges it: keep
	# EFLAGS and EBP on prev's stack, record where prev's stack and resume
	# point are, move onto next's stack and "return" from __switch_to to
	# next's resume point: .Lswitch_resumed for a task that called
	# schedule(), ret_from_fork for a new one.
	pushfl
	pushl %ebp
	movl %esp, TASK_esp(%eax)
	movl TASK_esp(%edx), %esp
	movl $.Lswitch_resumed, TASK_eip(%eax)
	pushl TASK_eip(%edx)
	jmp __switch_to
.Lswitch_resumed:
	popl %ebp
	popfl
.Lswitch_done:
	# Now running as the task switched to (or still prev): its own frame.
	movl $runqueue_lock, %eax
	movl (%esp), %edx
	call _spin_unlock_irqrestore
	GET_THREAD_INFO %ebp
	testl $_TIF_NEED_RESCHED, TI_flags(%ebp)
	jnz .Lschedule_again
	addl $4, %esp
	popl %ebx
	popl %esi
	popl %edi
	popl %ebp
	ret

# __switch_to(prev, next) -> prev, on next's stack: the lazy FPU save of
# prev (fnsave, then CR0.TS so that next's first x87 instruction traps),
# next's thread_info.cpu, and TSS.esp0 = next's kernel stack top.
ENTRY __switch_to
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %eax, %esi			# prev
	movl %edx, %edi			# next
	movl TASK_ti(%esi), %ebx	# prev's thread_info: its cpu is this CPU
	testl $TS_USEDFPU, TI_status(%ebx)
	jz 1f
	fnsave TASK_i387(%esi)
	andl $~TS_USEDFPU, TI_status(%ebx)
	GET_CR0
	orl $CR0_TS, %eax		# stts()
	movl %eax, %cr0
1:	movl TI_cpu(%ebx), %ecx
	movl TASK_ti(%edi), %edx
	movl %ecx, TI_cpu(%edx)
	lock btsl %ecx, TASK_cpus(%edi)
	imull $TSS_STRUCT_SIZE, %ecx, %ecx
	movl TASK_esp0(%edi), %eax
	movl %eax, init_tss + TSS_esp0(%ecx)
	movl %esi, %eax
	popl %edi
	popl %esi
	popl %ebx
	ret

# schedule_tail(): a new task finishes the switch that started it (2.6.16
# finish_task_switch): release the run queue and the preemption count it
# was created with. Interrupts stay off: the first IRET to user mode sets IF.
ENTRY schedule_tail
	movl $runqueue_lock, %eax
	SPIN_UNLOCK %eax
	GET_THREAD_INFO %ecx
	decl TI_preempt_count(%ecx)
	ret

# preempt_schedule_irq(): kernel preemption from resume_kernel, called with
# interrupts off. PREEMPT_ACTIVE keeps a nested interrupt from preempting
# again while schedule() runs with interrupts on.
ENTRY preempt_schedule_irq
	pushl %ebx
	GET_THREAD_INFO %ebx
	CPU_STAT CPU_preempt_kernel, %eax
	addl $PREEMPT_ACTIVE, TI_preempt_count(%ebx)
	STI
	call schedule
	CLI
	subl $PREEMPT_ACTIVE, TI_preempt_count(%ebx)
	popl %ebx
	ret


# cpu_idle: the idle task's loop. Work is looked for with interrupts off;
# if there is none, `STI; hlt` waits for the next interrupt: natively STI's
# shadow covers the hlt, so an interrupt that sets need_resched after the
# test cannot be taken before the hlt and then slept through.
ENTRY cpu_idle
	GET_THREAD_INFO %ebp
.Lidle_loop:
	CLI
	cmpl $0, system_halted
	jne halt_this_cpu
	testl $_TIF_NEED_RESCHED, TI_flags(%ebp)
	jnz .Lidle_schedule
	cmpl $0, runqueue_head
	jne .Lidle_schedule
	CPU_STAT CPU_idle_halts, %eax
	STI
	hlt
	jmp .Lidle_loop
.Lidle_schedule:
	decl TI_preempt_count(%ebp)
	STI
	call schedule
	incl TI_preempt_count(%ebp)
	jmp .Lidle_loop

# halt_this_cpu: interrupts off, halted for good.
ENTRY halt_this_cpu
1:	CLI
	hlt
	jmp 1b


# do_exit(code): the current task becomes a zombie and never runs again.
# The last task to exit prints the summary and stops the machine: every
# CPU's idle loop then halts with interrupts off.
ENTRY do_exit
	CLI				# no preemption between here and schedule()
	GET_THREAD_INFO %edx
	movl TI_task(%edx), %ecx
	movl %eax, TASK_exit_code(%ecx)
	movl $TASK_ZOMBIE, TASK_state(%ecx)
	lock incl tasks_exited
	lock decl tasks_alive
	jnz 1f
	call announce_shutdown
1:	call schedule
	# a zombie is never put back on the run queue
	movl %esp, %eax
	xorl %edx, %edx
	movl $0xEE, %ecx
	call die

# announce_shutdown(): the summary line, then stop.
ENTRY announce_shutdown
	pushl %ebx
	call console_lock
	movl %eax, %ebx
	movl $msg_summary_tasks, %eax
	call put_str
	movl tasks_exited, %eax
	call put_dec
	movl $msg_summary_jiffies, %eax
	call put_str
	movl jiffies, %eax
	call put_dec
	movl $msg_summary_checks, %eax
	call put_str
	movl checks_failed, %eax
	addl user_checks_failed, %eax
	call put_dec
	movl $msg_newline, %eax
	call put_str
	movl %ebx, %eax
	call console_unlock
	movl $1, system_halted
	popl %ebx
	ret
