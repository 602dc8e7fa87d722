# data.S -- the kernel's tables, counters, stacks and page tables.
#
# The counters are read by the Python side through the symbol table
# (vmi/guest/build.py: KERNEL_COUNTERS); keep their names stable.

	.data
	.p2align 2
# Written by the loader before the CPUs start (defs.S, BP_*).
ENTRY boot_params
	.space BP_SIZE

boot_pgtables_ready:	.long 0		# CPU 0 -> the others: page tables built
smp_go:			.long 0		# CPU 0 -> the others: run cpu_init
cpus_online:		.long 0
vmi_rom:		.long 0		# the VMI ROM found by vmi_init (virtual)
vmi_rom_top:		.long 0		# its published address (header virtual_top)
vmi_cpus:		.long 0		# CPUs whose Init returned 0
callgate_value:		.long CALLGATE_VALUE	# what kernel_gate_call returns

	SPINLOCK runqueue_lock
	SPINLOCK console_spinlock
	SPINLOCK work_lock

# The master GDT, 2.6.16's layout (reference section 6): every CPU copies it
# and fills in its own TSS and espfix descriptors (cpu_init); start_kernel
# fills in the LDT descriptor.
	.p2align 3
gdt_master:
	.quad 0				# 0x00 null
	.fill 11, 8, 0			# 0x08-0x58: TLS, reserved (unused here)
	.quad 0x00cf9a000000ffff	# 0x60 __KERNEL_CS: flat, 32-bit, DPL 0
	.quad 0x00cf92000000ffff	# 0x68 __KERNEL_DS
	.quad 0x00cffa000000ffff	# 0x73 __USER_CS: flat, 32-bit, DPL 3
	.quad 0x00cff2000000ffff	# 0x7b __USER_DS
	.quad 0				# 0x80 TSS (per CPU)
	.quad 0				# 0x88 LDT
	.fill 8, 8, 0			# 0x90-0xc8: PnP BIOS, APM BIOS (unused)
	.quad 0				# 0xd0 __ESPFIX_SS (per CPU)
	.quad 0				# 0xd8 the user call gate (trap_init)
	.fill 3, 8, 0			# 0xe0-0xf0
	.quad 0				# 0xf8 double-fault TSS (per CPU)

idt_descr:
	.word NR_VECTORS * 8 - 1
	.long idt_table

	.section .rodata
banner:
	.ascii "vmi guest kernel (Linux 2.6.16-style entry paths), macro set "
	.if MACRO_SET_ID == 0
	.ascii "native"
	.elseif MACRO_SET_ID == 1
	.ascii "vmi"
	.elseif MACRO_SET_ID == 2
	.ascii "naive"
	.elseif MACRO_SET_ID == 3
	.ascii "vmi-split"
	.else
	.ascii "(unknown)"
	.endif
	.asciz "\n"
smp_go_message:
	.asciz "all CPUs online\n"
msg_task:		.asciz "task "
msg_killed_vector:	.asciz ": exception "
msg_error:		.asciz " error "
msg_at:			.asciz " at "
msg_signal:		.asciz ", killed by signal "
msg_newline:		.asciz "\n"
msg_oops:		.asciz "Oops: exception "
msg_check_failed:	.asciz ": user check failed: "
msg_summary_tasks:	.asciz "vmi guest: all tasks exited: "
msg_summary_jiffies:	.asciz " tasks, jiffies "
msg_summary_checks:	.asciz ", checks failed "
msg_double_fault:	.asciz "double fault on cpu "
msg_df_eip:		.asciz ": previous task (TSS "
msg_df_esp:		.asciz ") eip "
msg_df_stack:		.asciz " esp "
msg_df_own:		.asciz ", handler esp "

	.bss
	.p2align 12
swapper_pg_dir:		.space PAGE_SIZE
pg0:			.space PAGE_SIZE * KERNEL_PGTABLES
user_pg0:		.space PAGE_SIZE

	.p2align 13
idle_stacks:		.space THREAD_SIZE * NR_CPUS
task_stacks:		.space THREAD_SIZE * NR_TASKS

	.p2align 7
init_tss:		.space TSS_STRUCT_SIZE * NR_CPUS
cpu_16bit_stack:	.space CPU_16BIT_STACK_SIZE * NR_CPUS
cpu_gdt_table:		.space GDT_ENTRIES * 8 * NR_CPUS
idt_table:		.space NR_VECTORS * 8
ldt_table:		.space LDT_ENTRIES * 8
idle_tasks:		.space TASK_SIZE * NR_CPUS
task_structs:		.space TASK_SIZE * NR_TASKS
cpu_stats:		.space CPU_STATS_SIZE * NR_CPUS
syscall_counts:		.space 4 * NR_syscalls
idle_task:		.space 4 * NR_CPUS

	.p2align 7
doublefault_tss:	.space DOUBLEFAULT_TSS_SIZE * NR_CPUS
doublefault_stack:	.space DOUBLEFAULT_STACK_SIZE * NR_CPUS

	.p2align 2
runqueue_head:		.long 0
runqueue_tail:		.long 0
nr_running:		.long 0
nr_tasks:		.long 0
tasks_alive:		.long 0
tasks_exited:		.long 0
jiffies:		.long 0
system_halted:		.long 0
checks_failed:		.long 0
kernel_oopses:		.long 0
mutual_exclusion_violations: .long 0
user_checks_passed:	.long 0
user_checks_failed:	.long 0
last_failed_check:	.long 0
user_faults:		.long 0
signals_sent:		.long 0
signals_delivered:	.long 0
exception_fixups:	.long 0
syscall_traces:		.long 0
last_fault_address:	.long 0
ldt_writes:		.long 0
work_inside:		.long 0
work_owner:		.long 0
work_counter:		.long 0
double_faults:		.long 0		# doublefault_fn runs
double_fault_esp:	.long 0		# the ESP the last one started with
callgate_calls:		.long 0		# kernel_gate_call runs
