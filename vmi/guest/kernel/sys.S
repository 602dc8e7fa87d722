# sys.S -- the system calls and their table.
#
# System calls are asmlinkage: they find their arguments in the pt_regs
# frame the entry path built, just above their return address: 4(%esp) is
# EBX (the first argument), 8(%esp) ECX, 12(%esp) EDX, 16(%esp) ESI,
# 20(%esp) EDI, 24(%esp) EBP. They return their result in %eax and preserve
# %ebp (the entry path keeps thread_info there).

LOCK_WORK_MAX		= 10000
LOCK_WORK_INNER		= 20		# delay inside the critical section
LOCK_WORK_OUTER		= 60		# preemptible delay outside it

	.text

ENTRY sys_ni_syscall
	movl $-ENOSYS, %eax
	ret

# exit(status): 2.6.16 keeps the low 8 bits.
ENTRY sys_exit
	movl 4(%esp), %eax
	andl $0xFF, %eax
	jmp do_exit

ENTRY sys_getpid
	GET_THREAD_INFO %eax
	movl TI_task(%eax), %eax
	movl TASK_pid(%eax), %eax
	ret

ENTRY sys_sched_yield
	call schedule
	xorl %eax, %eax
	ret

# write(fd, buf, count): fd 1 and 2 are the console. The user buffer is read
# byte by byte with the console lock held; a fault on it ends the call with
# -EFAULT through the exception table.
ENTRY sys_write
	pushl %ebx
	pushl %esi
	pushl %edi
	movl 16(%esp), %eax		# fd
	movl 20(%esp), %esi		# buf
	movl 24(%esp), %edi		# count
	cmpl $1, %eax
	je 1f
	cmpl $2, %eax
	je 1f
	movl $-9, %eax			# -EBADF
	jmp 9f
1:	movl %esi, %eax
	movl %edi, %edx
	call access_ok
	testl %eax, %eax
	jnz 9f
	call console_lock
	movl %eax, %ebx			# flags
	movl %edi, %ecx
	jecxz 3f
.Lwrite_byte:
	movb (%esi), %al
	EX_TABLE .Lwrite_byte, .Lwrite_fault
	outb %al, $PORT_CONSOLE
	incl %esi
	loop .Lwrite_byte
3:	movl %ebx, %eax
	call console_unlock
	movl %edi, %eax
9:	popl %edi
	popl %esi
	popl %ebx
	ret
	.pushsection .fixup, "ax"
.Lwrite_fault:
	movl %ebx, %eax
	call console_unlock
	movl $-EFAULT, %eax
	jmp 9b
	.popsection

# find_task_by_pid(pid) -> task_struct or 0
ENTRY find_task_by_pid
	decl %eax
	cmpl nr_tasks, %eax
	jae 1f
	imull $TASK_SIZE, %eax, %eax
	addl $task_structs, %eax
	ret
1:	xorl %eax, %eax
	ret

# kill(pid, sig): make `sig` pending for the task and flag it with
# TIF_SIGPENDING; it is delivered (recorded) by do_notify_resume on the
# task's next return to user mode, on whichever CPU that happens. Signal 0
# only checks that the task exists; signalling a zombie does nothing.
ENTRY sys_kill
	movl 8(%esp), %ecx		# sig
	cmpl $NSIG, %ecx
	jae 8f
	movl 4(%esp), %eax		# pid
	call find_task_by_pid
	testl %eax, %eax
	jz 7f
	jecxz 1f
	call send_signal
1:	xorl %eax, %eax
	ret
7:	movl $-ESRCH, %eax
	ret
8:	movl $-EINVAL, %eax
	ret

# send_signal(task %eax, sig %ecx): make `sig` pending for the task and flag
# it with TIF_SIGPENDING; a zombie is left alone. Clobbers %edx. Safe from
# interrupt context (the console interrupt sends SIGINT with it).
ENTRY send_signal
	cmpl $TASK_ZOMBIE, TASK_state(%eax)
	je 1f
	lock btsl %ecx, TASK_sigpending(%eax)
	movl TASK_ti(%eax), %edx
	lock orl $_TIF_SIGPENDING, TI_flags(%edx)
	lock incl signals_sent
1:	ret

# modify_ldt(func, ptr, bytecount): func 1 (or 0x11) writes the LDT entry
# described by the struct user_desc at ptr (16 bytes: entry_number,
# base_addr, limit, flags; flags bit 0 seg_32bit, 1-2 contents,
# 3 read_exec_only, 4 limit_in_pages, 5 seg_not_present, 6 useable). Every
# entry is DPL 3. This kernel has one LDT, shared by all tasks, and refuses
# non-present entries and conforming code, so that a selector ldt_ss
# returns to through the espfix stack is a present 16-bit data segment.
#
# As 2.6.16's write_ldt ("Allow LDTs to be cleared by the user"): base 0 and
# limit 0 with func 1 (oldmode), or with the flags of LDT_empty (0x28:
# read_exec_only and seg_not_present, nothing else), clear the entry to
# zeros. A task may clear the entry its own saved SS or CS names: the IRET
# that returns it to user mode then refuses the frame (#GP(selector): a null
# descriptor is no data segment, SDM Vol.3A §5.10.1, Vol.2 IRET) and the
# exception table sends the fault to iret_exc, which kills the task with
# SIGSEGV (the `badseg` program). A cleared entry fails ldt_ss's `lar`, so
# such a return never goes through the espfix stack; only another CPU
# clearing it between that `lar` and the IRET could make the espfix IRET
# fault (2.6.16 unwinds the espfix stack in error_code for that; this kernel
# does not, and its workloads never clear an entry another task's SS uses).
ENTRY sys_modify_ldt
	pushl %ebx
	pushl %edi
	subl $16, %esp			# the user_desc
	movl 28(%esp), %eax		# func
	cmpl $1, %eax
	je 1f
	cmpl $0x11, %eax
	je 1f
	movl $-ENOSYS, %eax
	jmp 9f
1:	cmpl $16, 36(%esp)		# bytecount
	jne 8f
	movl %esp, %eax
	movl 32(%esp), %edx		# ptr
	movl $16, %ecx
	call copy_from_user
	testl %eax, %eax
	jnz 9f
	movl (%esp), %edi		# entry_number
	cmpl $LDT_ENTRIES, %edi
	jae 8f
	movl 12(%esp), %ebx		# flags
	movl 4(%esp), %eax		# base_addr 0 and limit 0: a clear?
	orl 8(%esp), %eax
	jnz 6f
	cmpl $1, 28(%esp)		# oldmode
	je 7f
	cmpl $0x28, %ebx		# LDT_empty
	jne 6f
7:	xorl %eax, %eax			# clear: both words zero
	movl %eax, ldt_table(,%edi,8)
	movl %eax, ldt_table+4(,%edi,8)
	lock incl ldt_writes
	jmp 9f
6:
	testl $0x20, %ebx		# seg_not_present
	jnz 8f
	movl %ebx, %eax
	shrl $1, %eax
	andl $3, %eax			# contents
	cmpl $3, %eax
	je 8f
	shll $2, %eax			# type: code (8) or expand-down (4) ...
	testl $0x08, %ebx
	jnz 2f
	orl $2, %eax			# ... writable data / readable code
2:	orl $0xF0, %eax			# P, DPL 3, S
	testl $0x01, %ebx
	jz 3f
	orl $0x4000, %eax		# D/B: 32-bit
3:	testl $0x10, %ebx
	jz 4f
	orl $0x8000, %eax		# G: limit in pages
4:	testl $0x40, %ebx
	jz 5f
	orl $0x1000, %eax		# AVL: "useable"
5:	movl %eax, %ecx
	leal ldt_table(,%edi,8), %edi
	movl 4(%esp), %eax		# base_addr
	movl 8(%esp), %edx		# limit
	andl $0xFFFFF, %edx
	call set_descriptor
	lock incl ldt_writes
	xorl %eax, %eax
	jmp 9f
8:	movl $-EINVAL, %eax
9:	addl $16, %esp
	popl %edi
	popl %ebx
	ret

# vmi_lock_work(n): n rounds of: take work_lock with spin_lock_irqsave, do a
# slow read-modify-write of work_counter inside, release, then spin a while
# with interrupts as the caller had them (preemptible). Kernel-side checks:
# nobody else is inside the critical section (work_inside), and nobody else
# took it over meanwhile (work_owner); a failure counts in checks_failed.
# Returns n.
ENTRY sys_vmi_lock_work
	pushl %ebx
	pushl %esi
	pushl %edi
	pushl %ebp
	movl 20(%esp), %ebp		# n
	cmpl $LOCK_WORK_MAX, %ebp
	ja 8f
	xorl %edi, %edi			# rounds done
1:	cmpl %ebp, %edi
	jae 7f
	movl $work_lock, %eax
	call _spin_lock_irqsave
	movl %eax, %ebx			# flags
	movl $1, %eax
	lock xaddl %eax, work_inside
	testl %eax, %eax
	jz 2f
	lock incl mutual_exclusion_violations
	lock incl checks_failed
2:	GET_CPU %eax
	movl %eax, work_owner
	movl work_counter, %esi
	movl $LOCK_WORK_INNER, %ecx
3:	loop 3b
	incl %esi
	GET_CPU %eax
	cmpl %eax, work_owner
	je 4f
	lock incl mutual_exclusion_violations
	lock incl checks_failed
4:	movl %esi, work_counter
	lock decl work_inside
	movl $work_lock, %eax
	movl %ebx, %edx
	call _spin_unlock_irqrestore
	movl $LOCK_WORK_OUTER, %ecx
5:	loop 5b
	incl %edi
	jmp 1b
7:	movl %edi, %eax
	jmp 9f
8:	movl $-EINVAL, %eax
9:	popl %ebp
	popl %edi
	popl %esi
	popl %ebx
	ret

# vmi_check(id, ok): a user program reports one of its checks.
ENTRY sys_vmi_check
	cmpl $0, 8(%esp)
	je 1f
	lock incl user_checks_passed
	xorl %eax, %eax
	ret
1:	lock incl user_checks_failed
	pushl %ebx
	GET_THREAD_INFO %eax
	movl TI_task(%eax), %eax
	movl TASK_pid(%eax), %ebx
	shll $16, %ebx
	movzwl 8(%esp), %eax		# id
	orl %eax, %ebx
	movl %ebx, last_failed_check
	call console_lock
	pushl %eax
	movl $msg_task, %eax
	call put_str
	movl %ebx, %eax
	shrl $16, %eax
	call put_dec
	movl $msg_check_failed, %eax
	call put_str
	movzwl %bx, %eax
	call put_dec
	movl $msg_newline, %eax
	call put_str
	popl %eax
	call console_unlock
	popl %ebx
	xorl %eax, %eax
	ret

# vmi_query(what): a counter of the calling task (or this CPU's number).
ENTRY sys_vmi_query
	GET_THREAD_INFO %edx
	movl TI_task(%edx), %ecx
	movl 4(%esp), %eax
	cmpl $QUERY_signals, %eax
	jne 1f
	movl TASK_signals(%ecx), %eax
	ret
1:	cmpl $QUERY_last_signal, %eax
	jne 2f
	movl TASK_last_signal(%ecx), %eax
	ret
2:	cmpl $QUERY_nm_traps, %eax
	jne 3f
	movl TASK_nm_traps(%ecx), %eax
	ret
3:	cmpl $QUERY_cpu, %eax
	jne 4f
	movl TI_cpu(%edx), %eax
	ret
4:	cmpl $QUERY_pid, %eax
	jne 5f
	movl TASK_pid(%ecx), %eax
	ret
5:	movl $-EINVAL, %eax
	ret


# The table: Linux's numbers for the calls this kernel has, sys_ni_syscall
# (-ENOSYS) everywhere else.
.macro SYSCALL_SLOT nr
	.if \nr == __NR_exit
	.long sys_exit
	.elseif \nr == __NR_write
	.long sys_write
	.elseif \nr == __NR_getpid
	.long sys_getpid
	.elseif \nr == __NR_kill
	.long sys_kill
	.elseif \nr == __NR_modify_ldt
	.long sys_modify_ldt
	.elseif \nr == __NR_sched_yield
	.long sys_sched_yield
	.elseif \nr == __NR_vmi_lock_work
	.long sys_vmi_lock_work
	.elseif \nr == __NR_vmi_check
	.long sys_vmi_check
	.elseif \nr == __NR_vmi_query
	.long sys_vmi_query
	.else
	.long sys_ni_syscall
	.endif
.endm

	.pushsection .rodata
	.p2align 2
ENTRY sys_call_table
.Lnr = 0
.rept NR_syscalls
	SYSCALL_SLOT .Lnr
.Lnr = .Lnr + 1
.endr
	.popsection
