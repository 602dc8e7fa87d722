# macros.S -- the kernel's own assembler macros: building and unbuilding the
# pt_regs frame, finding thread_info, exception-table entries, and the spinlock
# of include/asm-i386/spinlock.h as the seed patches it.
#
# The hook points (CLI, STI, IRET, STI_SYSEXIT, GET_CR0, WRMSR, RDMSR, CPUID)
# come from the macro set that vmi/guest/build.py puts in front of the kernel
# (vmi/asm/macros/*.S, docs/asm.md); nothing here writes their bare forms.
#
# Calling convention of the kernel's functions (that of 2.6.16's fastcall,
# regparm(3)): arguments in %eax, %edx, %ecx; result in %eax; %eax, %ecx, %edx
# and the flags may be clobbered; %ebx, %esi, %edi, %ebp are preserved.

# ENTRY name: a global, 16-byte aligned entry point, as <linux/linkage.h>.
.macro ENTRY name
	.globl \name
	.p2align 4
\name:
.endm

# An exception-table entry: if `insn` faults, the #GP/#PF handler resumes at
# `fixup` (search_exception_table in traps.S).
.macro EX_TABLE insn, fixup
	.pushsection __ex_table, "a"
	.long \insn, \fixup
	.popsection
.endm

# GET_THREAD_INFO reg: thread_info lies at the base of the 8 KiB kernel stack,
# so it is %esp rounded down to THREAD_SIZE (reference section 6).
.macro GET_THREAD_INFO reg
	movl $-THREAD_SIZE, \reg
	andl %esp, \reg
.endm

# GET_CPU reg: this CPU's number, from the current thread_info.
.macro GET_CPU reg
	GET_THREAD_INFO \reg
	movl TI_cpu(\reg), \reg
.endm

# CPU_STAT field, scratch: one more event in this CPU's row of cpu_stats.
# Locked: in preemptible code the task may have moved to another CPU
# between reading TI_cpu and the increment.
.macro CPU_STAT field, scratch
	GET_CPU \scratch
	shll $CPU_STATS_SHIFT, \scratch
	lock incl cpu_stats + \field(\scratch)
.endm

# SYSCALL_ACCOUNT path: count a system call (number in %eax, thread_info in
# %ebp) by number, by entry path and by task. Clobbers %edx only: system
# calls take their arguments from the pt_regs frame (asmlinkage).
.macro SYSCALL_ACCOUNT path
	lock incl syscall_counts(,%eax,4)
	movl TI_cpu(%ebp), %edx
	shll $CPU_STATS_SHIFT, %edx
	lock incl cpu_stats + \path(%edx)
	movl TI_task(%ebp), %edx
	lock incl TASK_syscalls(%edx)
.endm

# SAVE_ALL: complete the pt_regs frame below what the processor and the entry
# stub pushed (the stub pushed ORIG_EAX), in the order of the reference's
# pt_regs table: ES at the top, EBX at the bottom. The data segments become
# __USER_DS as in Linux: a flat segment usable at any privilege level, so it
# does not depend on the ring the kernel runs in.
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
	movl $__USER_DS, %edx
	movl %edx, %ds
	movl %edx, %es
.endm

# RESTORE_INT_REGS: pop the general registers of the frame.
.macro RESTORE_INT_REGS
	popl %ebx
	popl %ecx
	popl %edx
	popl %esi
	popl %edi
	popl %ebp
	popl %eax
.endm

# RESTORE_REGS: the general registers, then DS and ES. A saved selector that
# no longer loads (a user LDT entry changed under us) must not kill the
# kernel: the fixup zeroes the slot and retries, so the user gets a null
# segment instead (reference section 6, RESTORE_REGS).
.macro RESTORE_REGS
	RESTORE_INT_REGS
.Lpop_ds\@:
	popl %ds
.Lpop_es\@:
	popl %es
	.pushsection .fixup, "ax"
.Lfix_ds\@:
	movl $0, (%esp)
	jmp .Lpop_ds\@
.Lfix_es\@:
	movl $0, (%esp)
	jmp .Lpop_es\@
	.popsection
	EX_TABLE .Lpop_ds\@, .Lfix_ds\@
	EX_TABLE .Lpop_es\@, .Lfix_es\@
.endm

# SPIN_LOCK_FLAGS lock, flags: __raw_spin_lock_flags of the seed's spinlock.h.
# `lock` is a register holding the spinlock_t address, `flags` an operand
# holding the EFLAGS the caller had before it disabled interrupts. Interrupts
# are off on entry and on exit. While the lock is held elsewhere the CPU
# spins with interrupts re-enabled if the caller had them enabled: STI's
# one-instruction shadow covers the `rep; nop` that follows it, and CLI comes
# before the next `lock decb` (reference section 6, "Spinlock"). The one
# addition to the seed's sequence is the locked count of failed attempts
# (SPIN_contended), so that contention can be measured.
.macro SPIN_LOCK_FLAGS lock, flags
.Lspin_try\@:					# 1:
	lock decb SPIN_slock(\lock)
	jns .Lspin_acquired\@			# jns 4f
	lock incl SPIN_contended(\lock)
	testl $IF_MASK, \flags			# 2:
	jz .Lspin_wait\@
	STI
.Lspin_wait\@:					# 3:
	rep; nop
	cmpb $0, SPIN_slock(\lock)
	jle .Lspin_wait\@
	CLI
	jmp .Lspin_try\@
.Lspin_acquired\@:				# 4:
.endm

# SPIN_UNLOCK lock: release (spinlock.h: movb $1, slock).
.macro SPIN_UNLOCK lock
	movb $1, SPIN_slock(\lock)
.endm

# SPINLOCK name: a spinlock_t in .data, initially free.
.macro SPINLOCK name
	.p2align 2
\name:
	.byte 1, 0, 0, 0
	.long 0
.endm

# KERNEL_RPL reg: the privilege level the kernel runs at (VMI patch 11/24,
# get_kernel_rpl): 0 natively, 1 under the hypervisor.
.macro KERNEL_RPL reg
	movl %cs, \reg
	andl $SEGMENT_RPL_MASK, \reg
.endm
