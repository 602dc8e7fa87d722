# native-system.S -- the plain-instruction expansions of the hooks that are not
# about the interrupt flag: GET_CR0, WRMSR, RDMSR, CPUID. Not a macro set of
# its own: native.S and naive.S `.include` it (naive paravirtualises only the
# interrupt flag and leaves these native), so the two sets share one copy.
# `{nooptimize}` makes the next word the real instruction, not the macro of the
# same (case-insensitive) name; see native.S.

.macro GET_CR0
	mov %cr0, %eax
.endm

.macro WRMSR
	{nooptimize} wrmsr
.endm

.macro RDMSR
	{nooptimize} rdmsr
.endm

.macro CPUID
	{nooptimize} cpuid
.endm
