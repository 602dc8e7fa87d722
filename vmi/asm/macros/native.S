# native.S -- the mach-default expansions of the VMI hook points: the plain
# instructions (Linux 2.6.16 include/asm-i386/mach-default/mach_asm.h).
#
# GNU as macro names are case-insensitive and a macro is looked up before an
# instruction of the same name, so inside `.macro CLI` a bare `cli` would
# invoke CLI again (and so would every `cli` in the kernel source: with a
# macro set prepended, `cli` and `CLI` are the same hook). `{nooptimize}` is
# a pseudo-prefix that emits no byte and makes the next word an instruction;
# it is how a body (or a kernel that wants a raw instruction) says "the real
# instruction".

.macro CLI
	{nooptimize} cli
.endm

.macro STI
	{nooptimize} sti
.endm

.macro IRET
	{nooptimize} iret
.endm

# sti's interrupt shadow covers exactly the next instruction: sysexit.
.macro STI_SYSEXIT
	{nooptimize} sti
	{nooptimize} sysexit
.endm

# GET_CR0, WRMSR, RDMSR, CPUID: the plain instructions (shared with naive.S).
.include "native-system.S"
