# boot.S -- the boot ROM: 64 KiB at physical 0xF0000, whose last 16 bytes
# hold the reset vector (the machine aliases 0xF0000-0xFFFFF at the top of
# the address space, so F000:FFF0 after RESET fetches from 0xFFFF0).
#
# Every CPU runs it from RESET (SDM Vol.3A §9.1.1, §9.9.1 "Switching to
# Protected Mode"): a far jump into the ROM proper, LGDT of a flat boot GDT,
# CR0.PE, a far jump to 32-bit code, the data segments, then a jump to the
# kernel's physical entry point KERNEL_ENTRY (defined by vmi/guest/build.py).
# This is firmware, assembled without a macro set: it is no part of the
# kernel the hypervisor patches.

ROM_BASE	= 0xF0000			# = rom_start: the image starts here
BOOT_CS		= 0x08
BOOT_DS		= 0x10

	.code16
rom_start:
	cli
	cld
	# offsets in the ROM segment (CS base ROM_BASE) are label - rom_start: a
	# difference of two labels is a constant to GNU as too (label - ROM_BASE
	# would need a 16-bit relocation an ELF object cannot hold)
	lgdtl %cs:(boot_gdt_descr - rom_start)
	movl %cr0, %eax
	orl $1, %eax			# PE
	movl %eax, %cr0
	# the far jump loads CS from the new GDT and ends the 16-bit code
	ljmpl $BOOT_CS, $rom_start32

	.code32
rom_start32:
	movl $BOOT_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	xorl %esp, %esp			# no stack: the kernel sets its own
	jmp KERNEL_ENTRY

	.p2align 3
boot_gdt:
	.quad 0				# null
	.quad 0x00cf9a000000ffff	# 0x08: flat 32-bit code, DPL 0
	.quad 0x00cf92000000ffff	# 0x10: flat data, DPL 0
boot_gdt_end:

boot_gdt_descr:
	.word boot_gdt_end - boot_gdt - 1
	.long boot_gdt

	# the reset vector, at F000:FFF0
	.org 0xFFF0
	.code16
reset_vector:
	ljmp $0xF000, $(rom_start - rom_start)	# F000:0000, rom_start
	.org 0x10000
