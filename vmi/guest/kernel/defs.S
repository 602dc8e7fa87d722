# defs.S -- constants of the guest kernel: memory layout, selectors, the
# pt_regs frame, thread_info, task_struct, system-call numbers.
#
# The values that are Linux 2.6.16's (selectors, pt_regs offsets, thread_info
# offsets, TIF bits, system-call numbers) are those listed in the reference,
# section 6 ("Linux 2.6.16 entry.S / spinlock"). Everything else (task_struct,
# per-CPU statistics, the boot-parameter block) is this kernel's own layout,
# read by the Python side through the symbol table (vmi/guest/build.py).

# ---- memory layout -------------------------------------------------------
PAGE_SIZE		= 4096
PAGE_OFFSET		= 0xC0000000	# kernel virtual = physical + PAGE_OFFSET
KERNEL_PHYS		= 0x00100000	# the kernel image is loaded at 1 MiB
KERNEL_PGTABLES		= 2		# page tables for the kernel map: 2 x 4 MiB
USER_VIRT		= 0x08000000	# the user region, 4 MiB, user-accessible ...
USER_PHYS		= 0x00400000	# ... backed by physical 4 MiB .. 8 MiB
USER_SIZE		= 0x00400000

THREAD_SIZE		= 8192		# kernel stack + thread_info, aligned
IDLE_STACK_RESERVE	= 16		# kept free at the top of an idle stack
NR_CPUS			= 4
NR_TASKS		= 16		# user tasks the kernel can hold

# ---- segment selectors (reference section 6; include/asm-i386/segment.h) --
GDT_ENTRY_KERNEL_CS	= 12
GDT_ENTRY_TSS		= 16
GDT_ENTRY_LDT		= 17
GDT_ENTRY_ESPFIX_SS	= 26
GDT_ENTRY_CALL_GATE	= 27		# this kernel's: the user call gate (callgate.S)
GDT_ENTRY_DOUBLEFAULT_TSS = 31
GDT_ENTRIES		= 32
__KERNEL_CS		= 0x60
__KERNEL_DS		= 0x68
__USER_CS		= 0x73
__USER_DS		= 0x7b
__TSS			= 0x80
__LDT			= 0x88
__ESPFIX_SS		= 0xd0
__CALL_GATE		= 0xdb		# GDT_ENTRY_CALL_GATE * 8, RPL 3
__DOUBLEFAULT_TSS	= 0xf8
LDT_ENTRIES		= 8
SEGMENT_RPL_MASK	= 3
USER_RPL		= 3

# ---- EFLAGS bits ------------------------------------------------------------
CF_MASK			= 0x00000001
TF_MASK			= 0x00000100
IF_MASK			= 0x00000200
DF_MASK			= 0x00000400
NT_MASK			= 0x00004000
VM_MASK			= 0x00020000

# ---- CR0 bits ---------------------------------------------------------------
CR0_PE			= 0x00000001
CR0_MP			= 0x00000002
CR0_EM			= 0x00000004
CR0_TS			= 0x00000008
CR0_WP			= 0x00010000
CR0_PG			= 0x80000000

# ---- the pt_regs frame (reference section 6) ---------------------------------
EBX			= 0x00
ECX			= 0x04
EDX			= 0x08
ESI			= 0x0C
EDI			= 0x10
EBP			= 0x14
EAX			= 0x18
DS			= 0x1C
ES			= 0x20
ORIG_EAX		= 0x24
EIP			= 0x28
CS			= 0x2C
EFLAGS			= 0x30
OLDESP			= 0x34
OLDSS			= 0x38
PT_REGS_SIZE		= 0x3C

# ---- thread_info, at the base of every kernel stack (reference section 6) ----
TI_task			= 0
TI_exec_domain		= 4
TI_flags		= 8
TI_status		= 12
TI_cpu			= 16
TI_preempt_count	= 20
TI_addr_limit		= 24
TI_sysenter_return	= 28

# TIF_* flag numbers and masks (2.6.16 include/asm-i386/thread_info.h)
TIF_SYSCALL_TRACE	= 0
TIF_NOTIFY_RESUME	= 1
TIF_SIGPENDING		= 2
TIF_NEED_RESCHED	= 3
TIF_SINGLESTEP		= 4
TIF_IRET		= 5
TIF_SYSCALL_EMU		= 6
TIF_SYSCALL_AUDIT	= 7
TIF_SECCOMP		= 8
_TIF_SYSCALL_TRACE	= 1 << TIF_SYSCALL_TRACE
_TIF_NOTIFY_RESUME	= 1 << TIF_NOTIFY_RESUME
_TIF_SIGPENDING		= 1 << TIF_SIGPENDING
_TIF_NEED_RESCHED	= 1 << TIF_NEED_RESCHED
_TIF_SINGLESTEP		= 1 << TIF_SINGLESTEP
_TIF_IRET		= 1 << TIF_IRET
_TIF_SYSCALL_EMU	= 1 << TIF_SYSCALL_EMU
_TIF_SYSCALL_AUDIT	= 1 << TIF_SYSCALL_AUDIT
_TIF_SECCOMP		= 1 << TIF_SECCOMP
_TIF_WORK_MASK		= 0xFFFF & ~(_TIF_SYSCALL_TRACE | _TIF_SYSCALL_AUDIT | _TIF_SECCOMP | _TIF_SYSCALL_EMU)
_TIF_ALLWORK_MASK	= 0xFFFF & ~_TIF_SECCOMP
_TIF_SYSCALL_ENTRY_MASK	= _TIF_SYSCALL_EMU | _TIF_SYSCALL_TRACE | _TIF_SECCOMP | _TIF_SYSCALL_AUDIT

TS_USEDFPU		= 0x0001	# thread_info.status: this task owns the FPU now

# preempt_count fields (2.6.16 include/linux/hardirq.h, CONFIG_PREEMPT)
HARDIRQ_OFFSET		= 0x00010000
PREEMPT_ACTIVE		= 0x10000000

# ---- task_struct (this kernel's own layout) ---------------------------------
TASK_state		= 0		# TASK_RUNNING / TASK_ZOMBIE / TASK_UNUSED
TASK_flags		= 4		# PF_IDLE
TASK_pid		= 8
TASK_ti			= 12		# thread_info = base of the kernel stack
TASK_esp		= 16		# thread.esp: saved by switch_to
TASK_eip		= 20		# thread.eip: where switch_to resumes the task
TASK_esp0		= 24		# thread.esp0: top of the kernel stack (TSS.esp0)
TASK_next		= 28		# run-queue link
TASK_sigpending		= 32		# pending signals, bit n = signal n
TASK_signals		= 36		# signals delivered by do_notify_resume
TASK_last_signal	= 40
TASK_exit_code		= 44
TASK_nm_traps		= 48		# device_not_available traps taken
TASK_used_math		= 52		# the task has an FPU context (fninit done)
TASK_syscalls		= 56
TASK_cpus		= 60		# bit n set: ran on CPU n
TASK_i387		= 64		# fnsave area, 108 bytes
TASK_SIZE		= 192

TASK_RUNNING		= 0
TASK_ZOMBIE		= 1
TASK_UNUSED		= 2
PF_IDLE			= 1

# ---- per-CPU statistics (cpu_stats[cpu], this kernel's own layout) ------------
CPU_ticks		= 0		# timer interrupts
CPU_irqs		= 4		# external interrupts of any vector
CPU_switches		= 8		# context switches (prev != next)
CPU_sys_int80		= 12		# system calls through int $0x80
CPU_sys_sysenter	= 16		# system calls through sysenter
CPU_preempt_user	= 20		# reschedules on the way back to user mode
CPU_preempt_kernel	= 24		# preempt_schedule_irq (CONFIG_PREEMPT)
CPU_idle_halts		= 28		# hlt in the idle loop
CPU_nm_traps		= 32		# device_not_available
CPU_espfix		= 36		# returns through ldt_ss with the espfix stack
CPU_exceptions		= 40		# processor exceptions of any vector
CPU_spurious		= 44		# external vectors other than the timer's
CPU_signals		= 48		# do_notify_resume calls
CPU_online		= 52		# 1 once cpu_init has run
CPU_console		= 56		# console interrupts (IRQ 1, vector 0x21)
CPU_STATS_SHIFT		= 6
CPU_STATS_SIZE		= 1 << CPU_STATS_SHIFT

# ---- spinlock_t: the byte lock of spinlock.h plus a contention counter -------
SPIN_slock		= 0		# 1 free, <= 0 held (reference section 6)
SPIN_contended		= 4		# times `lock decb` found the lock held
SPIN_SIZE		= 8

# ---- boot parameters, written by the loader (vmi/guest/build.py) -------------
BP_nr_cpus		= 0
BP_nr_tasks		= 4
BP_sysenter_return	= 8		# SYSENTER_RETURN of the vsyscall stub
BP_pit_divisor		= 12
BP_boot_delay		= 16		# per-CPU delay loops: NR_CPUS longs
BP_tasks		= 32		# NR_TASKS x {entry, user stack}
BP_TASK_SIZE		= 8
BP_SIZE			= BP_tasks + NR_TASKS * BP_TASK_SIZE

# ---- system-call numbers (Linux's where they exist) --------------------------
__NR_exit		= 1
__NR_write		= 4
__NR_getpid		= 20
__NR_kill		= 37
__NR_modify_ldt		= 123
__NR_sched_yield	= 158
__NR_vmi_lock_work	= 320		# this kernel's: the spinlock test
__NR_vmi_check		= 321		# this kernel's: report a user check
__NR_vmi_query		= 322		# this kernel's: read a per-task counter
NR_syscalls		= 323

QUERY_signals		= 0
QUERY_last_signal	= 1
QUERY_nm_traps		= 2
QUERY_cpu		= 3
QUERY_pid		= 4

# errno values
EPERM			= 1
ESRCH			= 3
EFAULT			= 14
EINVAL			= 22
ENOSYS			= 38

SIGINT			= 2
SIGKILL			= 9
SIGUSR1			= 10
SIGSEGV			= 11
SIGFPE			= 8
NSIG			= 32

# ---- devices (vmi/devices.py) ---------------------------------------------------
PORT_CONSOLE		= 0xE9
PORT_PIC		= 0x20
PIC_EOI			= 0x20
PORT_PIT_DATA		= 0x40
PORT_PIT_CONTROL	= 0x43
FIRST_EXTERNAL_VECTOR	= 0x20
TIMER_VECTOR		= 0x20
CONSOLE_VECTOR		= 0x21		# IRQ 1: ^C on the console (the race explorer's)
SYSCALL_VECTOR		= 0x80
NR_VECTORS		= 256

# ---- tss_struct: the hardware TSS, then the scratch stack that SYSENTER_ESP
# points at the end of (2.6.16 keeps a small stack at the end of tss_struct) --
TSS_link		= 0
TSS_esp0		= 4
TSS_ss0			= 8
TSS_cr3			= 28
TSS_eip			= 32
TSS_eflags		= 36
TSS_ebx			= 52
TSS_esp			= 56
TSS_es			= 72
TSS_cs			= 76
TSS_ss			= 80
TSS_ds			= 84
TSS_iomap_base		= 102
TSS_HW_SIZE		= 104
TSS_STRUCT_SIZE		= 384
TSS_sysenter_esp0	= TSS_esp0 - TSS_STRUCT_SIZE	# from SYSENTER_ESP to TSS.esp0

# the timer: HZ = 1000 at the PIT's 1.193182 MHz
DEFAULT_PIT_DIVISOR	= 1193

# ---- the double-fault task (2.6.16 arch/i386/kernel/doublefault.c): one TSS
# and one small stack per CPU, reached through the task gate of IDT entry 8 --
DOUBLEFAULT_TSS_SIZE	= 128		# TSS_HW_SIZE, rounded up
DOUBLEFAULT_STACK_SIZE	= 1024		# doublefault.c: DOUBLEFAULT_STACKSIZE

# what the user call gate's routine returns in EAX (callgate.S checks it)
CALLGATE_VALUE		= 0x0CA11AB1

# ---- the 16-bit stack used by ldt_ss (reference section 4, 2.6.10-2.6.18) ----
CPU_16BIT_STACK_SIZE	= 1024
