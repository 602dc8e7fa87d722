# kernel.S -- the guest kernel, one image: vmi/guest/build.py assembles this
# file with a macro set in front (native, vmi, naive or vmi-split), linked at
# PAGE_OFFSET + KERNEL_PHYS and loaded at KERNEL_PHYS. See docs/guest.md.
#
# The order of first appearance fixes the order of the sections: .text
# (always first), .fixup, the exception table, .rodata, .data, .bss. The labels at the start and end
# of __ex_table and .bss bound the table search and the clearing of .bss.

	.include "defs.S"
	.include "macros.S"

	.ifndef MACRO_SET_ID
MACRO_SET_ID = -1
	.endif

	.section .fixup, "ax"
	.section __ex_table, "a"
	.p2align 2
__start___ex_table:
	.section .rodata
	# .data is written all the time (spinlocks, boot flags): keep it off the
	# pages that hold code, or every write would flush the decoded-code cache
	.data
	.p2align 12
	.bss
__bss_start:

	.text
	.include "head.S"
	.include "entry.S"
	.include "traps.S"
	.include "sched.S"
	.include "sys.S"
	.include "lib.S"
	.include "data.S"

	.section __ex_table, "a"
__stop___ex_table:
	.bss
__bss_stop:
