# entry.S -- the ways into and out of the kernel, after Linux 2.6.16's
# arch/i386/kernel/entry.S with the VMI hooks of the seed, written from the
# pseudo-code of the reference (section 6) and the seed's diff.
#
# Every path builds the same pt_regs frame (defs.S, reference section 6):
#
#	0x00 EBX  0x04 ECX  0x08 EDX  0x0C ESI  0x10 EDI  0x14 EBP  0x18 EAX
#	0x1C DS   0x20 ES   0x24 ORIG_EAX
#	0x28 EIP  0x2C CS   0x30 EFLAGS  0x34 OLDESP  0x38 OLDSS
#
# EIP..OLDSS are what the processor pushes (OLDESP/OLDSS only when it came
# from user mode); ORIG_EAX is the system-call number, ~vector for an
# interrupt, -1 or the error code for an exception.
#
# The kernel is RPL-agnostic (VMI patch 11/24): "user mode" means CS & 3 == 3,
# so the same code is right when the kernel itself runs at ring 1.
#
# Hook sites (the seed): preempt_stop, resume_userspace, resume_kernel, the
# STI and CLI of the sysenter path and its STI_SYSEXIT, syscall_exit,
# restore_nocheck's IRET and iret_exc's STI, ldt_ss's CLI and IRET,
# work_resched, syscall_exit_work's STI, device_not_available's GET_CR0.

# CONFIG_PREEMPT: returning from an exception disables interrupts first.
.macro preempt_stop
	CLI
.endm


# ---------------------------------------------------------------------------
# Returning: ret_from_fork, ret_from_exception, ret_from_intr, and the paths
# to user mode and to interrupted kernel code.

# A new task's first switch_to lands here, on its pt_regs frame, inside the
# schedule() that switched to it: finish that switch, then leave through the
# system-call exit like the child of a fork.
ENTRY ret_from_fork
	call schedule_tail
	GET_THREAD_INFO %ebp
	jmp syscall_exit

ENTRY ret_from_exception
	preempt_stop
ENTRY ret_from_intr
	GET_THREAD_INFO %ebp
	# Back to user mode only if the frame is virtual-8086 or has RPL 3:
	# (EFLAGS & VM) | (CS & 3) < 3 means interrupted kernel code, whatever
	# ring the kernel runs in (VMI patch 11/24).
	movl EFLAGS(%esp), %eax
	movb CS(%esp), %al
	andl $(VM_MASK | SEGMENT_RPL_MASK), %eax
	cmpl $USER_RPL, %eax
	jb resume_kernel

ENTRY resume_userspace
	CLI				# no interrupt may set need_resched or
					# sigpending between this test and the iret
	movl TI_flags(%ebp), %ecx
	andl $_TIF_WORK_MASK, %ecx	# work other than syscall tracing?
	jne work_pending
	jmp restore_all

# CONFIG_PREEMPT: an interrupt or exception that hit kernel code may switch
# tasks on its way out, unless preemption is disabled or the interrupted code
# had interrupts off.
ENTRY resume_kernel
	CLI
	cmpl $0, TI_preempt_count(%ebp)
	jnz restore_nocheck
ENTRY need_resched
	movl TI_flags(%ebp), %ecx
	testb $_TIF_NEED_RESCHED, %cl
	jz restore_all
	testl $IF_MASK, EFLAGS(%esp)
	jz restore_all
	call preempt_schedule_irq
	jmp need_resched


# ---------------------------------------------------------------------------
# SYSENTER. The processor arrives with interrupts off, CS = __KERNEL_CS,
# SS = __KERNEL_DS and ESP = SYSENTER_ESP: the end of this CPU's tss_struct.
# Nothing was saved: the user's ESP is in %ebp (the vsyscall stub put it
# there) and its return address is the stub's SYSENTER_RETURN, kept in
# thread_info.

ENTRY sysenter_entry
	movl TSS_sysenter_esp0(%esp), %esp	# the task's kernel stack (TSS.esp0)
ENTRY sysenter_past_esp
	STI				# SYSENTER cleared IF
	# the frame an int $0x80 from the stub would have left
	pushl $__USER_DS		# OLDSS
	pushl %ebp			# OLDESP
	pushfl				# EFLAGS
	pushl $__USER_CS		# CS
	# EIP: thread_info.sysenter_return; thread_info is at the base of this
	# stack and %esp is now 16 bytes below its top
	pushl (TI_sysenter_return - THREAD_SIZE + 16)(%esp)

	# The sixth argument is the user's %ebp, pushed by the stub at the top
	# of the user stack. Load it through a guarded access: a bad user stack
	# pointer ends the call with -EFAULT instead of an oops.
	cmpl $(PAGE_OFFSET - 3), %ebp
	jae syscall_fault
.Lsysenter_arg6:
	movl (%ebp), %ebp
	EX_TABLE .Lsysenter_arg6, syscall_fault

	pushl %eax			# ORIG_EAX
	SAVE_ALL
	GET_THREAD_INFO %ebp
	testw $_TIF_SYSCALL_ENTRY_MASK, TI_flags(%ebp)
	jnz syscall_trace_entry
	cmpl $NR_syscalls, %eax
	jae syscall_badsys
	SYSCALL_ACCOUNT CPU_sys_sysenter
ENTRY sysenter_do_call
	call *sys_call_table(,%eax,4)
sysenter_exit_path:			# (a label: where the sysenter return begins)
	movl %eax, EAX(%esp)
	CLI
	movl TI_flags(%ebp), %ecx
	testw $_TIF_ALLWORK_MASK, %cx
	jne syscall_exit_work
	# SYSEXIT returns to EDX with ESP = ECX and leaves EFLAGS as it is:
	# STI;SYSEXIT must be one hook, so that STI's shadow covers SYSEXIT
	# and no interrupt can arrive in between (the seed's "N.B.").
	movl EIP(%esp), %edx
	movl OLDESP(%esp), %ecx
	xorl %ebp, %ebp
sysenter_exit:				# (a label for tests and the debugger)
	STI_SYSEXIT


# ---------------------------------------------------------------------------
# int $0x80, through a DPL-3 trap gate (interrupts stay as the user had them).

ENTRY system_call
	pushl %eax			# ORIG_EAX: the system-call number
	SAVE_ALL
	GET_THREAD_INFO %ebp
	# a user single-stepping into the call gets the step noted for the exit
	testl $TF_MASK, EFLAGS(%esp)
	jz 1f
	lock orl $_TIF_SINGLESTEP, TI_flags(%ebp)
1:	testw $_TIF_SYSCALL_ENTRY_MASK, TI_flags(%ebp)
	jnz syscall_trace_entry
	cmpl $NR_syscalls, %eax
	jae syscall_badsys
	SYSCALL_ACCOUNT CPU_sys_int80
ENTRY syscall_call
	call *sys_call_table(,%eax,4)
	movl %eax, EAX(%esp)		# the return value goes back in EAX
ENTRY syscall_exit
	CLI				# as in resume_userspace: sample the work
					# flags with interrupts off until the iret
	movl TI_flags(%ebp), %ecx
	testw $_TIF_ALLWORK_MASK, %cx
	jne syscall_exit_work

ENTRY restore_all
	# A return to a user stack segment from the LDT needs the espfix check:
	# (EFLAGS & VM) | (OLDSS & 4) << 8 | (CS & 3) == 0x403 (reference
	# section 6). OLDSS is garbage for kernel frames, but CS & 3 < 3 there.
	movl EFLAGS(%esp), %eax
	movb OLDSS(%esp), %ah
	movb CS(%esp), %al
	andl $(VM_MASK | (4 << 8) | SEGMENT_RPL_MASK), %eax
	cmpl $((4 << 8) | USER_RPL), %eax
	je ldt_ss
ENTRY restore_nocheck
	RESTORE_REGS
	addl $4, %esp			# ORIG_EAX
.Lrestore_iret:
	IRET
	EX_TABLE .Lrestore_iret, iret_exc

# The IRET above faulted (a user frame the processor refused): the faulting
# IRET's frame is still on the stack, whole. Make it the pt_regs of an
# exception with error code 0 handled by do_iret_error.
	.pushsection .fixup, "ax"
ENTRY iret_exc
	STI
	pushl $0			# no error code
	pushl $do_iret_error
	jmp error_code
	.popsection

# A 16-bit user stack: IRET would load only SP and leave the kernel's
# ESP[31:16] in the user's ESP (reference section 4). Return through this
# CPU's small espfix stack instead, with ESP[31:16] already the user's.
ENTRY ldt_ss
	# Deprivileged (ring 1, under VMI) the IRET is the ROM's, whose calls need
	# a flat SS (VMI spec; the seed defers the 16-bit case): no espfix switch
	# here; the ROM sees the 16-bit target and the monitor does the espfix.
	KERNEL_RPL %eax
	jnz restore_nocheck
	larl OLDSS(%esp), %eax
	jnz restore_nocheck		# not a descriptor: the IRET will say so
	testl $0x00400000, %eax		# B = 1: a 32-bit stack, nothing to fix
	jnz restore_nocheck
	subl $8, %esp			# room for the switch16 pointer
	CLI
	movl %esp, %eax
	call setup_x86_bogus_stack
	RESTORE_REGS
	lss 20+4(%esp), %esp		# onto the 16-bit stack
.Lldt_ss_iret:
	IRET
	EX_TABLE .Lldt_ss_iret, iret_exc


# ---------------------------------------------------------------------------
# Work before returning to user mode: reschedule, deliver signals.
# Entered with interrupts off and the work flags in %ecx.

ENTRY work_pending
	testb $_TIF_NEED_RESCHED, %cl
	jz work_notifysig
ENTRY work_resched
	CPU_STAT CPU_preempt_user, %eax
	call schedule
	CLI				# as in resume_userspace
	movl TI_flags(%ebp), %ecx
	andl $_TIF_WORK_MASK, %ecx	# only syscall tracing left?
	jz restore_all
	testb $_TIF_NEED_RESCHED, %cl
	jnz work_resched

ENTRY work_notifysig
	# (2.6.16 has a virtual-8086 variant here; this kernel has no vm86)
	movl %esp, %eax			# regs
	xorl %edx, %edx
	call do_notify_resume		# (regs, 0, work flags in %ecx)
	jmp resume_userspace

# The system call left work behind: tracing (never set by this kernel, kept
# for the structure), else the ordinary work of work_pending.
ENTRY syscall_exit_work
	testb $(_TIF_SYSCALL_TRACE | _TIF_SYSCALL_AUDIT | _TIF_SINGLESTEP), %cl
	jz work_pending
	STI				# do_syscall_trace may take its time
	movl %esp, %eax
	movl $1, %edx
	call do_syscall_trace
	jmp resume_userspace

# Entry tracing: the call runs with -ENOSYS in EAX unless the tracer lets it.
ENTRY syscall_trace_entry
	movl $-ENOSYS, EAX(%esp)
	movl %esp, %eax
	xorl %edx, %edx
	call do_syscall_trace
	movl ORIG_EAX(%esp), %eax	# the number, as the tracer may have left it
	cmpl $NR_syscalls, %eax
	jb syscall_call
	jmp syscall_exit

# The sysenter path could not read the sixth argument.
ENTRY syscall_fault
	pushl %eax			# ORIG_EAX
	SAVE_ALL
	GET_THREAD_INFO %ebp
	movl $-EFAULT, EAX(%esp)
	jmp resume_userspace

ENTRY syscall_badsys
	movl $-ENOSYS, EAX(%esp)
	jmp resume_userspace


# ---------------------------------------------------------------------------
# External interrupts. Vector v's stub pushes ~v as ORIG_EAX (a negative
# number: never a system-call number) and joins common_interrupt.

ENTRY common_interrupt
	SAVE_ALL
	movl %esp, %eax
	call do_IRQ
	jmp ret_from_intr

	.pushsection .data
	.p2align 2
interrupt:				# the stubs' addresses, for trap_init
	.popsection
.Lvector = FIRST_EXTERNAL_VECTOR
.rept NR_VECTORS - FIRST_EXTERNAL_VECTOR
	.p2align 3
	.pushsection .data
	.long 1f
	.popsection
1:	pushl $~.Lvector
	jmp common_interrupt
.Lvector = .Lvector + 1
.endr


# ---------------------------------------------------------------------------
# Processor exceptions. The stub leaves [error code or 0][handler] on the
# stack; error_code completes the pt_regs frame around them: the handler's
# slot becomes ES and the error code's slot ORIG_EAX (= -1 afterwards), and
# calls handler(regs, error_code).

ENTRY error_code
	pushl %ds
	pushl %eax
	pushl %ebp
	pushl %edi
	pushl %esi
	pushl %edx
	pushl %ecx
	pushl %ebx
	cld
	movl ES(%esp), %edi		# the handler, in the ES slot
	movl ORIG_EAX(%esp), %edx	# the error code, in the ORIG_EAX slot
	movl $-1, ORIG_EAX(%esp)
	movl %es, %ecx
	movl %ecx, ES(%esp)		# now the real ES
	movl $__USER_DS, %ecx
	movl %ecx, %ds
	movl %ecx, %es
	movl %esp, %eax			# regs
	call *%edi
	jmp ret_from_exception

# TRAP_STUB name, handler, errcode: the entry of an exception. The processor
# pushes an error code only for vectors 8, 10-14 and 17; the others push 0
# in its place so every frame has the same shape.
.macro TRAP_STUB name, handler, errcode=0
ENTRY \name
	.if \errcode == 0
	pushl $0
	.endif
	pushl $\handler
	jmp error_code
.endm

	TRAP_STUB divide_error, do_divide_error
	TRAP_STUB debug, do_debug
	TRAP_STUB nmi, do_nmi
	TRAP_STUB int3, do_int3
	TRAP_STUB overflow, do_overflow
	TRAP_STUB bounds, do_bounds
	TRAP_STUB invalid_op, do_invalid_op
	TRAP_STUB coprocessor_segment_overrun, do_coprocessor_segment_overrun
	TRAP_STUB invalid_TSS, do_invalid_TSS, 1
	TRAP_STUB segment_not_present, do_segment_not_present, 1
	TRAP_STUB stack_segment, do_stack_segment, 1
	TRAP_STUB general_protection, do_general_protection, 1
	TRAP_STUB page_fault, do_page_fault, 1
	TRAP_STUB spurious_interrupt_bug, do_spurious_interrupt_bug
	TRAP_STUB coprocessor_error, do_coprocessor_error
	TRAP_STUB alignment_check, do_alignment_check, 1
	TRAP_STUB machine_check, do_machine_check
	TRAP_STUB simd_coprocessor_error, do_simd_coprocessor_error

# #NM: an x87 instruction (or fwait with MP) while CR0.TS is set -- the lazy
# FPU switch -- or while CR0.EM asks for emulation.
ENTRY device_not_available
	pushl $-1			# ORIG_EAX: not a system call
	SAVE_ALL
	GET_CR0
	testl $CR0_EM, %eax
	jne device_not_available_emulate
	preempt_stop
	call math_state_restore
	jmp ret_from_exception
device_not_available_emulate:
	movl %esp, %eax
	xorl %edx, %edx
	call math_emulate
	jmp ret_from_exception


# ---------------------------------------------------------------------------
# The IDT's exception entries, vectors 0-19: handler, gate bits (P, DPL,
# type: 0x8E00 interrupt gate, 0x8F00 trap gate, 0xEF00 DPL-3 trap gate,
# 0x8500 task gate: vector 8, whose TSS selector trap_init fills in).
	.pushsection .data
	.p2align 2
exception_table:
	.long divide_error, 0x8F00
	.long debug, 0x8E00
	.long nmi, 0x8E00
	.long int3, 0xEF00
	.long overflow, 0xEF00
	.long bounds, 0xEF00
	.long invalid_op, 0x8F00
	.long device_not_available, 0x8F00
	.long 0, 0x8500			# #DF: a task gate, written by trap_init
	.long coprocessor_segment_overrun, 0x8F00
	.long invalid_TSS, 0x8F00
	.long segment_not_present, 0x8F00
	.long stack_segment, 0x8F00
	.long general_protection, 0x8F00
	.long page_fault, 0x8E00
	.long spurious_interrupt_bug, 0x8F00
	.long coprocessor_error, 0x8F00
	.long alignment_check, 0x8F00
	.long machine_check, 0x8E00
	.long simd_coprocessor_error, 0x8F00
	.popsection
