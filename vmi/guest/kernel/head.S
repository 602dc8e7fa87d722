# head.S -- from the boot ROM to the scheduler.
#
# Every CPU arrives here from the boot ROM (vmi/guest/boot.S): 32-bit
# protected mode, flat boot segments, paging off, interrupts off, executing
# at the kernel's physical address (KERNEL_PHYS). Until paging is on, every
# absolute address is written `sym - PAGE_OFFSET` (the kernel is linked at
# PAGE_OFFSET + KERNEL_PHYS); relative jumps and calls need no care.
#
# CPU 0 zeroes .bss, builds the page tables and turns paging on; the other
# CPUs wait for the page tables, turn paging on too and wait to be released.
# CPU 0 then sets up the GDT, IDT, tasks and timer, releases them, and every
# CPU runs cpu_init and enters its idle loop, which schedules the tasks.
#
# head.S reads and writes CR0 with plain `mov` before and while paging is
# switched on, as Linux's head.S does: that is firmware-like boot code, not one
# of the seed's hook points. After boot the kernel reads CR0 through GET_CR0.

	.text
ENTRY startup_32
	cld
	# Which CPU is this? CPUID leaf 1 reports the initial APIC ID in
	# EBX[31:24], which the machine makes the CPU's index. A raw cpuid, not
	# the CPUID hook: this runs before the CPU has called the VMI ROM's Init
	# (below), and a patched site would call into a ROM not yet mapped.
	movl $1, %eax
	{nooptimize} cpuid
	shrl $24, %ebx				# %ebx = CPU number, kept until cpu_init
	testl %ebx, %ebx
	jnz .Lwait_for_pgtables

	# ---- CPU 0: clear .bss (its page-aligned start holds the page tables)
	movl $(__bss_start - PAGE_OFFSET), %edi
	movl $(__bss_stop - PAGE_OFFSET), %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl

	# Kernel page tables: the first KERNEL_PGTABLES * 4 MiB of physical
	# memory, present, writable, supervisor only.
	movl $(pg0 - PAGE_OFFSET), %edi
	movl $0x003, %eax
	movl $(KERNEL_PGTABLES * 1024), %ecx
1:	stosl
	addl $PAGE_SIZE, %eax
	loop 1b

	# The user region: USER_VIRT.. onto USER_PHYS.., present, writable, user.
	movl $(user_pg0 - PAGE_OFFSET), %edi
	movl $(USER_PHYS + 0x007), %eax
	movl $1024, %ecx
2:	stosl
	addl $PAGE_SIZE, %eax
	loop 2b

	# The page directory: each kernel page table twice, at 0 (the identity
	# map this code runs on while paging is switched on; removed once every
	# CPU runs at its linked address) and at PAGE_OFFSET; the user table.
	movl $(swapper_pg_dir - PAGE_OFFSET), %edi
	movl $(pg0 - PAGE_OFFSET + 0x003), %eax
	xorl %ecx, %ecx
3:	movl %eax, (%edi,%ecx,4)
	movl %eax, (PAGE_OFFSET >> 22) * 4(%edi,%ecx,4)
	addl $PAGE_SIZE, %eax
	incl %ecx
	cmpl $KERNEL_PGTABLES, %ecx
	jb 3b
	movl $(user_pg0 - PAGE_OFFSET + 0x007), (USER_VIRT >> 22) * 4(%edi)
	movl $1, (boot_pgtables_ready - PAGE_OFFSET)
	jmp .Lenable_paging

	# ---- the other CPUs: no stack and no .bss yet; spin on a .data flag.
.Lwait_for_pgtables:
	rep; nop
	cmpl $0, (boot_pgtables_ready - PAGE_OFFSET)
	je .Lwait_for_pgtables

.Lenable_paging:
	movl $(swapper_pg_dir - PAGE_OFFSET), %eax
	movl %eax, %cr3
	movl %cr0, %eax
	orl $(CR0_PG | CR0_WP), %eax
	movl %eax, %cr0
	movl $.Lpaged, %eax			# an absolute jump onto the linked address
	jmp *%eax
.Lpaged:
	# This CPU's idle stack; its thread_info sits at the base. The stack
	# starts a little below its top: an empty stack's %esp, exactly at the
	# top, would round down to the next stack's thread_info.
	movl %ebx, %eax
	shll $13, %eax				# * THREAD_SIZE
	leal (idle_stacks + THREAD_SIZE - IDLE_STACK_RESERVE)(%eax), %esp
	# Before this CPU runs any hook site: the VMI handshake. Natively there
	# is no ROM and nothing happens; under the hypervisor, Init patches the
	# hook sites (the first time) and deprivileges this CPU to ring 1.
	call vmi_init
	movl %ebx, %eax
	call init_idle_task
	testl %ebx, %ebx
	jnz .Lsecondary

	call start_kernel			# CPU 0 does not come back

.Lsecondary:
	lock incl cpus_online
1:	rep; nop
	cmpl $0, smp_go
	je 1b
	movl %ebx, %eax
	call cpu_init
	jmp cpu_idle


# start_kernel: CPU 0's set-up of the machine, then its idle loop.
ENTRY start_kernel
	lock incl cpus_online
	movl $banner, %eax
	call printk
	# the LDT descriptor of the master GDT: the one LDT all tasks share
	movl $(gdt_master + GDT_ENTRY_LDT * 8), %edi
	movl $ldt_table, %eax
	movl $(LDT_ENTRIES * 8 - 1), %edx
	movl $0x0082, %ecx
	call set_descriptor
	call trap_init
	call create_tasks
	call time_init
	# Wait for every other CPU to reach its linked address, then drop the
	# identity map (zap_low_mappings) and let them go.
	movl boot_params + BP_nr_cpus, %eax
	cmpl $NR_CPUS, %eax
	jbe 1f
	movl $NR_CPUS, %eax
1:	cmpl %eax, cpus_online
	jae 2f
	rep; nop
	jmp 1b
2:	movl $swapper_pg_dir, %edi
	xorl %ecx, %ecx
3:	movl $0, (%edi,%ecx,4)
	incl %ecx
	cmpl $KERNEL_PGTABLES, %ecx
	jb 3b
	movl %cr3, %eax				# flush the TLB
	movl %eax, %cr3
	movl $smp_go_message, %eax
	call printk
	movl $1, smp_go
	xorl %eax, %eax
	call cpu_init
	jmp cpu_idle


# vmi_init() -> 0 if a VMI hypervisor took this CPU, non-zero if there is
# none. The 2006 VMI probe (reference section 1; docs/hypervisor.md, "Init"):
# scan physical 0xC0000-0xE0000 in 2 KiB steps for an option ROM (0xAA55 at
# +0) with the "cVmi" signature at +8 and a zero byte sum over its length
# (+2, in 512-byte units), then call its Init entry at +0x80 through the
# kernel's mapping of that physical address, with paging on, at CPL 0.
VMI_ROM_SCAN_START	= 0xC0000
VMI_ROM_SCAN_END	= 0xE0000
VMI_ROM_SIGNATURE	= 0x696D5663	# "cVmi"
VMI_ROM_INIT		= 0x80
VMI_ROM_VIRTUAL_TOP	= 0x10		# header: the ROM's linear address once published

ENTRY vmi_init
	pushl %esi
	movl $(PAGE_OFFSET + VMI_ROM_SCAN_START), %esi
1:	cmpw $0xAA55, (%esi)
	jne 3f
	cmpl $VMI_ROM_SIGNATURE, 8(%esi)
	jne 3f
	movzbl 2(%esi), %ecx
	shll $9, %ecx			# the ROM's length in bytes
	jz 3f
	xorl %eax, %eax
	movl %esi, %edx
2:	addb (%edx), %al
	incl %edx
	loop 2b
	testb %al, %al
	jnz 3f
	movl %esi, vmi_rom
	movl VMI_ROM_VIRTUAL_TOP(%esi), %eax
	movl %eax, vmi_rom_top		# where the ROM is published after Init
	leal VMI_ROM_INIT(%esi), %eax
	call *%eax
	testl %eax, %eax
	jnz 9f
	lock incl vmi_cpus		# this CPU now runs under the hypervisor
	jmp 9f
3:	addl $2048, %esi
	cmpl $(PAGE_OFFSET + VMI_ROM_SCAN_END), %esi
	jb 1b
	movl $-1, %eax			# no ROM: native
9:	popl %esi
	ret


# init_idle_task(cpu): the task_struct and thread_info of CPU `cpu`'s idle
# task, which owns the boot stack this CPU is running on. Its preempt_count
# is 1: the idle loop runs with preemption off and opens it only around
# schedule(), as 2.6.16's cpu_idle does.
ENTRY init_idle_task
	pushl %ebx
	movl %eax, %ecx
	imull $TASK_SIZE, %eax, %ebx
	addl $idle_tasks, %ebx			# %ebx = the idle task_struct
	movl %ecx, %edx
	shll $13, %edx
	addl $idle_stacks, %edx			# %edx = its thread_info
	movl $TASK_RUNNING, TASK_state(%ebx)
	movl $PF_IDLE, TASK_flags(%ebx)
	movl $0, TASK_pid(%ebx)
	movl %edx, TASK_ti(%ebx)
	leal THREAD_SIZE(%edx), %eax
	movl %eax, TASK_esp0(%ebx)
	movl %ebx, TI_task(%edx)
	movl %ecx, TI_cpu(%edx)
	movl $1, TI_preempt_count(%edx)
	movl $PAGE_OFFSET, TI_addr_limit(%edx)
	movl %ebx, idle_task(,%ecx,4)
	popl %ebx
	ret


# cpu_init(cpu): this CPU's descriptor tables, TSS, SYSENTER MSRs and CR0.
# Each CPU has its own copy of the GDT (2.6.16's per-CPU cpu_gdt_table),
# differing in the TSS descriptor and the base of the espfix 16-bit stack.
ENTRY cpu_init
	pushl %ebx
	pushl %esi
	pushl %edi
	pushl %ebp
	movl %eax, %ebp				# %ebp = cpu
	# copy the master GDT
	movl %ebp, %edi
	shll $8, %edi				# GDT_ENTRIES * 8 = 256 bytes per CPU
	addl $cpu_gdt_table, %edi
	movl %edi, %ebx				# %ebx = this CPU's GDT
	movl $gdt_master, %esi
	movl $(GDT_ENTRIES * 2), %ecx
	rep movsl
	# the TSS descriptor: this CPU's tss_struct, 32-bit available TSS
	movl %ebp, %eax
	imull $TSS_STRUCT_SIZE, %eax, %esi
	addl $init_tss, %esi			# %esi = this CPU's TSS
	leal (GDT_ENTRY_TSS * 8)(%ebx), %edi
	movl %esi, %eax
	movl $(TSS_HW_SIZE - 1), %edx
	movl $0x0089, %ecx
	call set_descriptor
	# the espfix segment: a 16-bit (B=0) data segment over this CPU's
	# cpu_16bit_stack, at the kernel's privilege level
	leal (GDT_ENTRY_ESPFIX_SS * 8)(%ebx), %edi
	movl %ebp, %eax
	shll $10, %eax				# * CPU_16BIT_STACK_SIZE
	addl $cpu_16bit_stack, %eax
	movl $(CPU_16BIT_STACK_SIZE - 1), %edx
	KERNEL_RPL %ecx
	shll $5, %ecx
	orl $0x0092, %ecx
	call set_descriptor
	# the double-fault task (2.6.16 doublefault.c): this CPU's TSS with its
	# own stack, the kernel's page directory, EIP = doublefault_fn and
	# interrupts off; EBX = this CPU's number, so that the handler finds
	# its GDT. IDT entry 8 is a task gate to GDT entry 31 (trap_init).
	imull $DOUBLEFAULT_TSS_SIZE, %ebp, %edi
	addl $doublefault_tss, %edi		# %edi = this CPU's double-fault TSS
	leal 1(%ebp), %eax
	imull $DOUBLEFAULT_STACK_SIZE, %eax, %eax
	addl $doublefault_stack, %eax		# the top of its stack
	movl %eax, TSS_esp(%edi)
	movl %eax, TSS_esp0(%edi)
	movl $__KERNEL_DS, TSS_ss0(%edi)
	movl $(swapper_pg_dir - PAGE_OFFSET), TSS_cr3(%edi)
	movl $doublefault_fn, TSS_eip(%edi)
	movl $0x2, TSS_eflags(%edi)		# IF clear
	movl %ebp, TSS_ebx(%edi)
	movl $__USER_DS, TSS_es(%edi)
	movl $__KERNEL_CS, TSS_cs(%edi)
	movl $__KERNEL_DS, TSS_ss(%edi)
	movl $__USER_DS, TSS_ds(%edi)
	movw $0x8000, TSS_iomap_base(%edi)
	movl %edi, %eax
	leal (GDT_ENTRY_DOUBLEFAULT_TSS * 8)(%ebx), %edi
	movl $(TSS_HW_SIZE - 1), %edx
	movl $0x0089, %ecx
	call set_descriptor
	# load the GDT and reload every segment register from it
	subl $8, %esp
	movw $(GDT_ENTRIES * 8 - 1), 2(%esp)
	movl %ebx, 4(%esp)
	lgdt 2(%esp)
	addl $8, %esp
	ljmp $__KERNEL_CS, $.Lnew_cs
.Lnew_cs:
	KERNEL_RPL %eax			# SS must have RPL = CPL (ring 1 under VMI)
	orl $__KERNEL_DS, %eax
	movl %eax, %ss
	movl $__USER_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	lidt idt_descr
	# the TSS: ring-0 stack = the idle stack top until the first switch,
	# no I/O bitmap (its offset lies past the limit)
	movl idle_task(,%ebp,4), %eax
	movl TASK_esp0(%eax), %eax
	movl %eax, TSS_esp0(%esi)
	movl $__KERNEL_DS, TSS_ss0(%esi)
	movw $0x8000, TSS_iomap_base(%esi)
	movl $__TSS, %eax
	ltr %ax
	movl $__LDT, %eax
	lldt %ax
	# SYSENTER: CS = __KERNEL_CS (SS = CS + 8), ESP = the end of this CPU's
	# tss_struct (sysenter_entry loads the real stack from TSS.esp0 through
	# it), EIP = sysenter_entry (reference section 5, item 7; section 6)
	movl $0x174, %ecx
	movl $__KERNEL_CS, %eax
	xorl %edx, %edx
	WRMSR
	movl $0x175, %ecx
	leal TSS_STRUCT_SIZE(%esi), %eax
	xorl %edx, %edx
	WRMSR
	movl $0x176, %ecx
	movl $sysenter_entry, %eax
	xorl %edx, %edx
	WRMSR
	# CR0: MP so that fwait traps with TS, no EM (x87 instructions are not
	# emulated), TS so that the first x87 instruction of a task traps to
	# device_not_available (lazy FPU switching)
	GET_CR0
	orl $(CR0_MP | CR0_TS), %eax
	andl $~CR0_EM, %eax
	movl %eax, %cr0
	movl %cr3, %eax				# drop the boot identity map from the TLB
	movl %eax, %cr3
	movl %ebp, %eax
	shll $CPU_STATS_SHIFT, %eax
	movl $1, cpu_stats + CPU_online(%eax)
	# the loader's per-CPU delay (vmi run --seed): shifts where this CPU's
	# timer ticks fall in the work it does
	movl boot_params + BP_boot_delay(,%ebp,4), %ecx
	jecxz 2f
1:	loop 1b
2:	popl %ebp
	popl %edi
	popl %esi
	popl %ebx
	ret


# set_descriptor(base, limit, attributes) with the descriptor at %edi:
# the 8 bytes of a segment descriptor (SDM Vol.3A §3.4.5). `attributes` is
# bits 8..23 of the high dword shifted right by 8 (type, S, DPL, P; AVL, D/B,
# G), the format of the processor's segment caches (docs/system-model.md).
ENTRY set_descriptor
	pushl %ebx
	movl %edx, %ebx
	andl $0xFFFF, %ebx
	pushl %eax
	shll $16, %eax
	orl %eax, %ebx
	movl %ebx, (%edi)			# limit 15:0, base 15:0
	popl %eax
	movl %eax, %ebx
	andl $0xFF000000, %ebx			# base 31:24
	andl $0x000F0000, %edx			# limit 19:16
	orl %edx, %ebx
	shll $8, %ecx
	andl $0x00F0FF00, %ecx			# type, S, DPL, P; AVL, D/B, G
	orl %ecx, %ebx
	shrl $16, %eax
	andl $0xFF, %eax			# base 23:16
	orl %eax, %ebx
	movl %ebx, 4(%edi)
	popl %ebx
	ret


# trap_init: the IDT (reference section 5, item 6; section 6). Processor
# exceptions go through trap gates, except the page fault (an interrupt
# gate, so CR2 is read before anything can fault again) and NMI/debug,
# and the double fault, which switches to its own task (doublefault_fn);
# int3, into and bound are callable from user mode; every external vector
# 0x20..0xFF is an interrupt gate into its stub; int $0x80 is a DPL-3 trap
# gate (interrupts stay enabled in system calls).
ENTRY trap_init
	pushl %ebx
	pushl %esi
	xorl %esi, %esi
1:	movl exception_table(,%esi,8), %eax
	movl exception_table + 4(,%esi,8), %ecx
	movl %esi, %edx
	call set_gate
	incl %esi
	cmpl $20, %esi
	jb 1b
	movl $FIRST_EXTERNAL_VECTOR, %esi
2:	movl (interrupt - FIRST_EXTERNAL_VECTOR * 4)(,%esi,4), %eax
	movl $0x8E00, %ecx			# interrupt gate, DPL 0
	movl %esi, %edx
	call set_gate
	incl %esi
	cmpl $NR_VECTORS, %esi
	jb 2b
	movl $system_call, %eax
	movl $0xEF00, %ecx			# trap gate, DPL 3
	movl $SYSCALL_VECTOR, %edx
	call set_gate
	# #DF: a task gate (type 5, present, DPL 0) to the double-fault TSS, as
	# 2.6.16's trap_init does (set_task_gate(8, GDT_ENTRY_DOUBLEFAULT_TSS));
	# the gate holds only the TSS selector (SDM Vol.3A §6.11, Figure 6-2)
	movl $(__DOUBLEFAULT_TSS << 16), idt_table + 8 * 8
	movl $0x8500, idt_table + 8 * 8 + 4
	# the user call gate in the master GDT: a 32-bit call gate (type 12),
	# DPL 3, present, no parameters, to kernel_gate_call at __KERNEL_CS
	# (SDM Vol.3A §5.8.3, Figure 5-8: offset 15:0 | selector << 16, then
	# offset 31:16 | P | DPL | type | count)
	movl $kernel_gate_call, %eax
	movl %eax, %edx
	andl $0xFFFF, %eax
	orl $(__KERNEL_CS << 16), %eax
	movl %eax, gdt_master + GDT_ENTRY_CALL_GATE * 8
	andl $0xFFFF0000, %edx
	orl $0xEC00, %edx
	movl %edx, gdt_master + GDT_ENTRY_CALL_GATE * 8 + 4
	popl %esi
	popl %ebx
	ret

# set_gate(handler, vector, type/DPL bits): IDT entry `vector` (SDM Vol.3A
# §6.11): selector __KERNEL_CS, offset = handler, high word bits as given.
ENTRY set_gate
	leal idt_table(,%edx,8), %edx
	pushl %eax
	andl $0xFFFF, %eax
	orl $(__KERNEL_CS << 16), %eax
	movl %eax, (%edx)
	popl %eax
	andl $0xFFFF0000, %eax
	orl %ecx, %eax
	movl %eax, 4(%edx)
	ret


# create_tasks: one task per entry of boot_params.tasks, each with an 8 KiB
# kernel stack whose top holds the pt_regs frame of its first return to user
# mode; switch_to first resumes it at ret_from_fork.
ENTRY create_tasks
	pushl %ebx
	pushl %esi
	pushl %edi
	pushl %ebp
	movl boot_params + BP_nr_tasks, %eax
	cmpl $NR_TASKS, %eax
	jbe 1f
	movl $NR_TASKS, %eax
1:	movl %eax, nr_tasks
	movl %eax, tasks_alive
	xorl %ebp, %ebp				# %ebp = task index
2:	cmpl nr_tasks, %ebp
	jae 9f
	imull $TASK_SIZE, %ebp, %ebx
	addl $task_structs, %ebx		# %ebx = task_struct
	movl %ebp, %edi
	shll $13, %edi
	addl $task_stacks, %edi			# %edi = thread_info
	movl $TASK_RUNNING, TASK_state(%ebx)
	leal 1(%ebp), %eax
	movl %eax, TASK_pid(%ebx)
	movl %edi, TASK_ti(%ebx)
	leal THREAD_SIZE(%edi), %eax
	movl %eax, TASK_esp0(%ebx)
	movl %ebx, TI_task(%edi)
	movl $1, TI_preempt_count(%edi)		# released by schedule_tail
	movl $PAGE_OFFSET, TI_addr_limit(%edi)
	movl boot_params + BP_sysenter_return, %eax
	movl %eax, TI_sysenter_return(%edi)
	# the first pt_regs frame: zeroed registers, user segments, IF set
	leal (THREAD_SIZE - PT_REGS_SIZE)(%edi), %esi
	movl %esi, TASK_esp(%ebx)
	movl $ret_from_fork, TASK_eip(%ebx)
	movl $__USER_DS, DS(%esi)
	movl $__USER_DS, ES(%esi)
	movl $-1, ORIG_EAX(%esi)
	movl boot_params + BP_tasks(,%ebp,BP_TASK_SIZE), %eax
	movl %eax, EIP(%esi)
	movl $__USER_CS, CS(%esi)
	movl $(IF_MASK | 0x2), EFLAGS(%esi)
	movl boot_params + BP_tasks + 4(,%ebp,BP_TASK_SIZE), %eax
	movl %eax, OLDESP(%esi)
	movl $__USER_DS, OLDSS(%esi)
	movl %ebx, %eax
	call enqueue_task
	incl %ebp
	jmp 2b
9:	popl %ebp
	popl %edi
	popl %esi
	popl %ebx
	ret


# time_init: PIT channel 0, mode 2 (rate generator), LSB then MSB of the
# divisor (vmi/devices.py); the machine gives every CPU its own tick.
ENTRY time_init
	movb $0x34, %al
	outb %al, $PORT_PIT_CONTROL
	movl boot_params + BP_pit_divisor, %eax
	testl %eax, %eax
	jnz 1f
	movl $DEFAULT_PIT_DIVISOR, %eax
1:	outb %al, $PORT_PIT_DATA
	movb %ah, %al
	outb %al, $PORT_PIT_DATA
	ret
