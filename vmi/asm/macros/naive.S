# naive.S -- a paravirtual kernel without a confined window: the strawman the
# seed argues against.
#
# The virtual interrupt flag is a 32-bit word at VMI_VIF (0 = disabled,
# 0x200 = enabled, the EFLAGS.IF bit) and pending events are flagged at
# VMI_PENDING, both in a page the hypervisor shares with the guest. The
# addresses below are placeholders until the hypervisor publishes its
# layout; define VMI_VIF and VMI_PENDING before the first hook (or with
# `defines=` / a .set in front of the source) to choose others.
#
# The stores use %ss: because at IRET time %ds already holds the user's
# selector (RESTORE_REGS popped it); %ss is the kernel stack segment.
#
# IRET copies the IF bit of the EFLAGS image in the IRET frame into VMI_VIF
# and then executes a plain `iret`. That is the race: once the store has
# enabled virtual interrupts, one can be injected before the iret, on the
# same kernel stack, and the window is inline in every kernel, not at one
# address the hypervisor knows.

.ifndef VMI_VIF
.set VMI_VIF, 0xfffff000
.endif
.ifndef VMI_PENDING
.set VMI_PENDING, 0xfffff004
.endif

.macro CLI
	movl $0, %ss:VMI_VIF
.endm

.macro STI
	movl $0x200, %ss:VMI_VIF
.endm

.macro IRET
	pushl %eax
	movl 12(%esp), %eax		# EFLAGS image: 8(%esp) before the push
	andl $0x200, %eax		# its IF bit
	movl %eax, %ss:VMI_VIF		# virtual interrupts on: the window opens
	popl %eax
	{nooptimize} iret
.endm

.macro STI_SYSEXIT
	movl $0x200, %ss:VMI_VIF
	{nooptimize} sysexit
.endm

# GET_CR0, WRMSR, RDMSR, CPUID: the plain instructions (shared with native.S).
.include "native-system.S"
