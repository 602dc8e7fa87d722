# rom.S -- the VMI ROM of the monitor: the guest-visible machine code that the
# patched hook sites call. Built by vmi/hypervisor/rom.py at base ROM_LINEAR
# (0xFFC00000) with the constants of vmi/hypervisor/layout.py as defines; the
# image is also copied to physical 0xC0000, where the guest's scan finds it.
#
# Why a ROM at one fixed address: the seed says the IRET race "is much easier
# [to handle] if the window in which the race exists is confined to a well
# defined region, such as a single region of code published at a fixed address
# by the hypervisor". The two windows below (vmi_iret_window_*,
# vmi_sysexit_window_*) are that region; the monitor reads their bounds from
# this file's symbols and applies its window policy (defer, fixup or none) to
# an interrupt that arrives while the guest's EIP is inside one.
#
# Calling convention (reference §1, "Calling convention", spec Appendix A):
# each call is entered by `call ROM+32*N` from the patched site, with flat CS
# and SS; the interrupt calls clobber nothing (not even the arithmetic flags,
# which the native cli/sti do not touch either, so injected frames match the
# native ones); IRET and SYSEXIT never return.
#
# Hypercalls: a `ud2` at a hc_* label. It faults (#UD) at every privilege
# level, so the same mechanism serves Init (called at ring 0, before the
# monitor takes over) and the calls made at ring 1. The monitor recognises the
# faulting instruction by its physical address in this ROM, does the work,
# and returns from the call itself (EIP = the return address on the stack):
# nothing after a ud2 ever runs.
#
# The shared page (SHARED_LINEAR, one per CPU at the same address) is reached
# with %ss: overrides: at IRET time %ds/%es already hold the user's selectors
# (RESTORE_REGS popped them), while %ss is the kernel stack (reference §6).

VIF = SHARED_LINEAR + SHARED_VIF
PENDING = SHARED_LINEAR + SHARED_PENDING
CR0_SHADOW = SHARED_LINEAR + SHARED_CR0
SYSEXIT_CS = SHARED_LINEAR + SHARED_SYSEXIT_CS
SYSEXIT_SS = SHARED_LINEAR + SHARED_SYSEXIT_SS

EFLAGS_IF = 0x200
SEGMENT_B = 0x400000		# D/B bit of a LAR result (SDM Vol.2 LAR; reference §5 fact 9)

.text
rom_start:

# -- the header (2.6.21 struct vrom_header offsets, reference §1) -----------------
	.byte 0x55, 0xAA		# +00 option-ROM signature 0xAA55
	.byte ROM_SIZE / 512		# +02 length in 512-byte units
	.byte 0xCB, 0x90, 0x90, 0x90	# +03 init stub for a BIOS POST: retf (nothing to do)
	.org 0x08
	.long SIGNATURE			# +08 "cVmi"
	.byte API_MINOR			# +0C API minor
	.byte API_MAJOR			# +0D API major (13: the March 2006 call numbering)
	.word SLOT_COUNT		# +0E number of 32-byte call slots
	.long ROM_LINEAR		# +10 virtual_top: the linear address the ROM is
					#     published at; the guest leaves everything from
					#     here to 4 GiB (page-directory entry 1023) alone
	.word 0				# +14
	.word rom_license - rom_start	# +16 license_offs
	.word 0				# +18 pci_header_offs: none
	.word 0				# +1A pnp_header_offs: none
	.long 0				# +1C
	.long SHARED_LINEAR		# +20 (reserved in 2.6.21) this model: the shared
					#     page, the same linear address on every CPU
	.long SHARED_VIF		# +24 offset of the virtual IF in it
	.long SHARED_PENDING		# +28 offset of the pending word in it

# -- call slots: call N at ROM + 32*N (API 13; N = 0..3 are the header) -----------
# Slots the monitor does not implement hold a bare `ud2`: the monitor reports the
# call and raises #UD in the guest at the call site. `.org` only moves forward,
# so the slots below are written in call-number order.
.macro UNIMPLEMENTED first:req, last:req
	.set .Lslot, \first
	.rept \last - \first + 1
	.org .Lslot * SLOT_SIZE
	ud2
	.set .Lslot, .Lslot + 1
	.endr
.endm

# Init (4): the guest calls it once per CPU, through whatever mapping of the
# ROM it found by scanning, at CPL 0 with paging on; the monitor patches the
# hook sites (first call only), deprivileges this CPU to ring 1 and returns
# EAX = 0 (non-zero: stay native, as VMI_Init did, reference §1 "Binding").
	.org CALL_INIT * SLOT_SIZE
hc_init:
	ud2

# CPUID (5): unprivileged even at ring 1 (reference §5 fact 8), so no exit.
	.org CALL_CPUID * SLOT_SIZE
vmi_cpuid:
	cpuid
	ret

# WRMSR (6): ECX = MSR, EDX:EAX = value; the monitor keeps the virtual MSRs
# (the real IA32_SYSENTER_CS stays 0 so that a user sysenter traps).
	.org CALL_WRMSR * SLOT_SIZE
hc_wrmsr:
	ud2

# RDMSR (7): ECX = MSR -> EDX:EAX.
	.org CALL_RDMSR * SLOT_SIZE
hc_rdmsr:
	ud2

# GetCR0 (24): the shadow the monitor keeps in the shared page; no exit. The
# native `mov %cr0,%eax` would trap at ring 1 (reference §5 fact 10).
	UNIMPLEMENTED 8, 23

	.org CALL_GET_CR0 * SLOT_SIZE
vmi_get_cr0:
	movl %ss:CR0_SHADOW, %eax
	ret

# CLTS (34): CR0.TS lives in the real CR0 (it must, for #NM to be raised), so
# clearing it needs the monitor.
	UNIMPLEMENTED 25, 33

	.org CALL_CLTS * SLOT_SIZE
hc_clts:
	ud2

# EnableInterrupts (35): set the virtual IF; if events are pending, deliver
# them at once ("Enable ... deliver[s] pending interrupts immediately",
# reference §1). The pending test is made after the store, so an event that
# arrives between the two is either seen here or injected by the monitor
# (the virtual IF is already 1): none is left waiting.
	.org CALL_ENABLE_INTERRUPTS * SLOT_SIZE
vmi_sti:
	movl $EFLAGS_IF, %ss:VIF
	pushfl				# keep the arithmetic flags, as sti does
	cmpl $0, %ss:PENDING
	jne 1f
	popfl
	ret
1:	popfl
hc_sti_pending:
	ud2				# the monitor returns from the call, then injects

# DisableInterrupts (36): one store, no exit.
	.org CALL_DISABLE_INTERRUPTS * SLOT_SIZE
vmi_cli:
	movl $0, %ss:VIF
	ret

# GetInterruptMask (37): EAX = EFLAGS with the virtual IF in bit 9 (what a
# native `pushfl; popl %eax` gives; the real IF is always 1 at ring 1).
	.org CALL_GET_INTERRUPT_MASK * SLOT_SIZE
vmi_get_mask:
	pushfl
	popl %eax
	pushfl
	andl $~EFLAGS_IF, %eax
	orl %ss:VIF, %eax
	popfl
	ret

# SetInterruptMask (38): EAX bit 9 = the new virtual IF; enabling delivers
# pending events as Enable does.
	.org CALL_SET_INTERRUPT_MASK * SLOT_SIZE
vmi_set_mask:
	pushfl
	testl $EFLAGS_IF, %eax
	jz 1f
	popfl
	jmp vmi_sti
1:	popfl
	movl $0, %ss:VIF
	ret

# IRET (39) and SYSEXIT (40): the bodies are longer than a slot.
	.org CALL_IRET * SLOT_SIZE
	jmp vmi_iret

	.org CALL_SYSEXIT * SLOT_SIZE
	jmp vmi_sysexit

# Halt (42): idle the virtual CPU until an event (the monitor returns from the
# call first, so the frame of the waking interrupt points after the site).
	UNIMPLEMENTED 41, 41

	.org CALL_HALT * SLOT_SIZE
hc_halt:
	ud2

# -- IRET ----------------------------------------------------------------------
# Entered by call from the site `IRET` (native: `iret`), so the stack holds the
# return address and above it the native IRET frame: EIP, CS, EFLAGS and, for
# a return to ring 3, ESP and SS (reference §5 fact 5). At ring 1 with IOPL 0
# the real `iret` keeps IF (SDM Vol.2 IRET: IF only if CPL <= IOPL; reference
# §5 fact 4), so the virtual IF is restored from the frame by a store, and
# from that store until the iret has switched stacks an interrupt could be
# injected on a half-returned kernel stack: the window.
#
# The return address stays in memory below the frame (the `leal` only moves
# ESP): if the iret faults, the monitor reports the fault at the call site
# (return address - 5) with ESP on the frame, as the native `iret` would
# have faulted there (the kernel's exception table names the site).
	UNIMPLEMENTED 43, 71

	.org SLOT_COUNT * SLOT_SIZE
vmi_iret:
	pushl %eax			# 0(%esp) EAX, 4 return address, 8 the frame
	# An IRET that lands on a 16-bit stack segment would load only SP and
	# keep the kernel's ESP[31:16] (reference §4; the seed defers the case:
	# "no hypervisor support for the IRET instructions which land on a
	# 16-bit stack"). Hand it to the monitor, which does the return itself
	# with the user's whole ESP (its espfix). One that runs on a 16-bit
	# stack (VMI calls need a flat SS) the monitor refuses: #GP at the site.
	movw %ss, %ax
	lar %ax, %eax
	testl $SEGMENT_B, %eax		# the current stack: 32-bit?
	jz hc_iret16
	testb $2, 12(%esp)		# RPL of the frame's CS: 3 = return to user
	jz 1f
	lar 24(%esp), %eax		# the frame's SS
	jnz 1f				# not visible: the iret itself faults on it
	testl $SEGMENT_B, %eax
	jz hc_iret16
1:
vmi_iret_window_start:
	movl 16(%esp), %eax		# the frame's EFLAGS image
	andl $EFLAGS_IF, %eax		# its IF is the virtual IF this return restores
	jz 2f
	cmpl $0, %ss:PENDING		# enabling with events waiting: the monitor
	jne hc_iret_pending		# takes them on this frame (no iret)
2:
vmi_iret_store:
	movl %eax, %ss:VIF		# from here the virtual IF may be 1 ...
vmi_iret_pop:
	popl %eax
vmi_iret_drop:
	leal 4(%esp), %esp		# skip the return address (flags untouched)
vmi_iret_insn:
	iret				# ... until this has switched the stack
vmi_iret_window_end:
hc_iret_pending:
	ud2				# stack: EAX, return address, frame
hc_iret16:
	ud2				# stack: EAX, return address, frame

# -- STI; SYSEXIT -----------------------------------------------------------------
# Native: EDX = user EIP, ECX = user ESP, `sti; sysexit` with sti's shadow
# covering sysexit (the seed's N.B.; reference §5 facts 1, 7). SYSEXIT faults at
# ring 1 (#GP unless CPL 0), so the ROM returns with an iret instead, on a
# frame built from EDX and ECX and the selectors SYSEXIT would load, with
# EFLAGS as sysexit leaves them; the virtual IF is set as the last thing
# before that iret. Every register but ESP and EIP keeps its value, as with
# sysexit. The return address stays above the frame, for fault reports.
vmi_sysexit:
	pushl %ss:SYSEXIT_SS		# (IA32_SYSENTER_CS + 24) | 3
	pushl %ecx			# user ESP
	pushfl				# EFLAGS: the real IF is 1, IOPL 0
	pushl %ss:SYSEXIT_CS		# (IA32_SYSENTER_CS + 16) | 3
	pushl %edx			# user EIP
vmi_sysexit_window_start:
	cmpl $0, %ss:PENDING		# events waiting: the monitor takes them on
	jne hc_sysexit_pending		# this frame
vmi_sysexit_store:
	movl $EFLAGS_IF, %ss:VIF	# from here the virtual IF is 1 ...
vmi_sysexit_insn:
	iret				# ... until this has left for ring 3
vmi_sysexit_window_end:
hc_sysexit_pending:
	ud2				# stack: the frame, return address

rom_license:
	.asciz "vmi model ROM (MIT)"
rom_code_end:

	.org ROM_SIZE - 1
rom_checksum:
	.byte 0				# rom.py makes the byte sum of the ROM 0
