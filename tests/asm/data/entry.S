/*
 * A reduced Linux 2.6.16 arch/i386/kernel/entry.S with the VMI hook points of
 * "[RFC, PATCH 8/24] i386 Vmi syscall assembly" (CLI, STI, IRET, STI_SYSEXIT,
 * GET_CR0), plus the MSR/CPUID hooks and a spin_lock_flags loop. Test data for
 * the macro sets: it is assembled with each set prepended.
 */

EBX		= 0x00
ECX		= 0x04
EDX		= 0x08
ESI		= 0x0C
EDI		= 0x10
EBP		= 0x14
EAX		= 0x18
DS		= 0x1C
ES		= 0x20
ORIG_EAX	= 0x24
EIP		= 0x28
CS		= 0x2C
EFLAGS		= 0x30
OLDESP		= 0x34
OLDSS		= 0x38

CF_MASK		= 0x00000001
IF_MASK		= 0x00000200
VM_MASK		= 0x00020000

.equ __KERNEL_CS, 0x60
.equ __KERNEL_DS, 0x68
.equ __USER_CS, 0x73
.equ __USER_DS, 0x7b

.set TI_flags, 8
.set TI_preempt_count, 20
.set TI_sysenter_return, 28
.set TSS_sysenter_esp0, -0x1f8

_TIF_SYSCALL_TRACE	= (1<<0)
_TIF_NEED_RESCHED	= (1<<3)
_TIF_SINGLESTEP		= (1<<4)
_TIF_SYSCALL_AUDIT	= (1<<7)
_TIF_WORK_MASK		= 0x0000FFFF & ~(_TIF_SYSCALL_TRACE|_TIF_SYSCALL_AUDIT|_TIF_SINGLESTEP)
_TIF_ALLWORK_MASK	= 0x0000FFFF

.macro ENTRY name
	.globl \name
	.align 4
\name:
.endm

.macro GET_THREAD_INFO reg
	movl $-8192, \reg
	andl %esp, \reg
.endm

.macro SAVE_ALL
	cld
	pushl %es
	pushl %ds
	pushl %eax
	pushl %ebp
	pushl %edi
	pushl %esi
	pushl %edx
	pushl %ecx
	pushl %ebx
	movl $(__USER_DS), %edx
	movl %edx, %ds
	movl %edx, %es
.endm

.macro RESTORE_INT_REGS
	popl %ebx
	popl %ecx
	popl %edx
	popl %esi
	popl %edi
	popl %ebp
	popl %eax
.endm

.macro RESTORE_REGS
	RESTORE_INT_REGS
1:	popl %ds
2:	popl %es
.section .fixup,"ax"
3:	movl $0,(%esp)
	jmp 1b
4:	movl $0,(%esp)
	jmp 2b
.previous
.section __ex_table,"a"
	.align 4
	.long 1b,3b
	.long 2b,4b
.previous
.endm

	.text
ENTRY ret_from_exception
	CLI					# preempt_stop
ret_from_intr:
	GET_THREAD_INFO %ebp
	movl EFLAGS(%esp), %eax		# mix EFLAGS and CS
	movb CS(%esp), %al
	testl $(VM_MASK | 3), %eax
	jz resume_kernel
ENTRY resume_userspace
	CLI				# make sure we don't miss an interrupt
	movl TI_flags(%ebp), %ecx
	andl $_TIF_WORK_MASK, %ecx
	jne work_pending
	jmp restore_all

ENTRY resume_kernel
	CLI
	cmpl $0,TI_preempt_count(%ebp)
	jnz restore_nocheck
need_resched:
	movl TI_flags(%ebp), %ecx
	testb $_TIF_NEED_RESCHED, %cl
	jz restore_all
	testl $IF_MASK,EFLAGS(%esp)
	jz restore_all
	call preempt_schedule_irq
	jmp need_resched

ENTRY sysenter_entry
	movl TSS_sysenter_esp0(%esp),%esp
sysenter_past_esp:
	STI
	pushl $(__USER_DS)
	pushl %ebp
	pushfl
	pushl $(__USER_CS)
	pushl TI_sysenter_return-8192(%esp)
	cmpl $__PAGE_OFFSET-3,%ebp
	jae syscall_fault
1:	movl (%ebp),%ebp
.section __ex_table,"a"
	.align 4
	.long 1b,syscall_fault
.previous
	pushl %eax
	SAVE_ALL
	GET_THREAD_INFO %ebp
	testw $(_TIF_SYSCALL_TRACE|_TIF_SINGLESTEP|_TIF_SYSCALL_AUDIT),TI_flags(%ebp)
	jnz syscall_trace_entry
	cmpl $(nr_syscalls), %eax
	jae syscall_badsys
	call *sys_call_table(,%eax,4)
	movl %eax,EAX(%esp)
	CLI
	movl TI_flags(%ebp), %ecx
	testw $_TIF_ALLWORK_MASK, %cx
	jne syscall_exit_work
	movl EIP(%esp), %edx
	movl OLDESP(%esp), %ecx
	xorl %ebp,%ebp
	STI_SYSEXIT

ENTRY system_call
	pushl %eax			# save orig_eax
	SAVE_ALL
	GET_THREAD_INFO %ebp
	testw $(_TIF_SYSCALL_TRACE|_TIF_SYSCALL_AUDIT|_TIF_SINGLESTEP),TI_flags(%ebp)
	jnz syscall_trace_entry
	cmpl $(nr_syscalls), %eax
	jae syscall_badsys
syscall_call:
	call *sys_call_table(,%eax,4)
	movl %eax,EAX(%esp)		# store the return value
syscall_exit:
	CLI
	movl TI_flags(%ebp), %ecx
	testw $_TIF_ALLWORK_MASK, %cx	# current->work
	jne syscall_exit_work

restore_all:
	movl EFLAGS(%esp), %eax		# mix EFLAGS, SS and CS
	movb OLDSS(%esp), %ah
	movb CS(%esp), %al
	andl $(VM_MASK | (4 << 8) | 3), %eax
	cmpl $((4 << 8) | 3), %eax
	je ldt_ss			# returning to user-space with LDT SS
restore_nocheck:
	RESTORE_REGS
	addl $4, %esp
1:	IRET
.pushsection .fixup,"ax"
iret_exc:
	STI
	pushl $0			# no error code
	pushl $do_iret_error
	jmp error_code
.popsection
.section __ex_table,"a"
	.align 4
	.long 1b,iret_exc
.previous

ldt_ss:
	larl OLDSS(%esp), %eax
	jnz restore_nocheck
	testl $0x00400000, %eax		# returning to 32bit stack?
	jnz restore_nocheck		# allright, normal return
	subl $8, %esp			# reserve space for switch16 pointer
	CLI
	movl %esp, %eax
	call setup_x86_bogus_stack
	RESTORE_REGS
	lss 20+4(%esp), %esp		# switch to 16bit stack
1:	IRET
.section __ex_table,"a"
	.align 4
	.long 1b,iret_exc
.previous

work_pending:
	testb $_TIF_NEED_RESCHED, %cl
	jz work_notifysig
work_resched:
	call schedule
	CLI
	movl TI_flags(%ebp), %ecx
	andl $_TIF_WORK_MASK, %ecx
	jz restore_all
	testb $_TIF_NEED_RESCHED, %cl
	jnz work_resched
work_notifysig:
	movl %esp, %eax
	xorl %edx, %edx
	call do_notify_resume
	jmp resume_userspace

syscall_trace_entry:
	movl $-38,EAX(%esp)
	movl %esp, %eax
	xorl %edx,%edx
	call do_syscall_trace
	jmp syscall_exit
syscall_exit_work:
	testb $(_TIF_SYSCALL_TRACE|_TIF_SYSCALL_AUDIT|_TIF_SINGLESTEP), %cl
	jz work_pending
	STI				# could let do_syscall_trace() call schedule()
	movl %esp, %eax
	movl $1, %edx
	call do_syscall_trace
	jmp resume_userspace

syscall_fault:
	pushl %eax
	SAVE_ALL
	GET_THREAD_INFO %ebp
	movl $-14,EAX(%esp)
	jmp resume_userspace
syscall_badsys:
	movl $-38,EAX(%esp)
	jmp resume_userspace

ENTRY error_code
	pushl %ds
	pushl %eax
	xorl %eax, %eax
	pushl %ebp
	pushl %edi
	pushl %esi
	pushl %edx
	decl %eax			# eax = -1
	pushl %ecx
	pushl %ebx
	cld
	movl %es, %ecx
	movl ES(%esp), %edi		# get the function address
	movl ORIG_EAX(%esp), %edx	# get the error code
	movl %eax, ORIG_EAX(%esp)
	movl %ecx, ES(%esp)
	movl $(__USER_DS), %ecx
	movl %ecx, %ds
	movl %ecx, %es
	movl %esp,%eax
	call *%edi
	jmp ret_from_exception

ENTRY device_not_available
	pushl $-1			# mark this as an int
	SAVE_ALL
	GET_CR0
	testl $0x4, %eax		# EM (math emulation bit)
	jne device_not_available_emulate
	CLI				# preempt_stop
	call math_state_restore
	jmp ret_from_exception
device_not_available_emulate:
	pushl $0
	call math_emulate
	addl $4, %esp
	jmp ret_from_exception

/* __raw_spin_lock_flags: %eax = lock, %edx = saved flags; IRQs off on entry. */
ENTRY spin_lock_flags
1:	lock; decb (%eax)
	jns 4f
2:	testl $0x200, %edx
	jz 3f
	STI
3:	rep; nop
	cmpb $0, (%eax)
	jle 3b
	CLI
	jmp 1b
4:	ret

ENTRY probe_cpu
	pushl %ebx
	xorl %eax, %eax
	CPUID
	movl $0x1b, %ecx		# IA32_APIC_BASE
	RDMSR
	orl $0x800, %eax
	WRMSR
	popl %ebx
	ret

/* Stubs for the C functions the real kernel calls. */
preempt_schedule_irq:
schedule:
do_notify_resume:
do_syscall_trace:
setup_x86_bogus_stack:
math_state_restore:
math_emulate:
do_iret_error:
sys_ni_syscall:
	ret

	.data
	.align 4
ENTRY sys_call_table
	.long sys_ni_syscall, sys_ni_syscall, sys_ni_syscall
	.rept 5
	.long sys_ni_syscall
	.endr
syscall_table_size = (. - sys_call_table)
nr_syscalls = ((syscall_table_size)/4)
banner:	.asciz "vmi entry.S\n"
	.p2align 3
	.quad 0x0123456789abcdef

	.bss
	.align 16
stack:	.space 8192
stack_top:

	.text
__PAGE_OFFSET = 0xC0000000
