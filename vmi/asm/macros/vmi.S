# vmi.S -- VMI hook sites (2006 inline-annotation binding, "[RFC, PATCH 4/24]
# i386 Vmi inline implementation").
#
# Each hook site is the native instruction(s), then prefix-nop padding
# (66 ... 66 90) up to VMI_SITE_LENGTH bytes -- the length of the `call rel32`
# the ROM's patcher writes over the site -- then an 8-byte record in the
# .vmi.annotation section:
#
#	.long site_address
#	.byte call_number, site_length, native_length, 0
#
# Call numbers are the VMI API 13 numbers of March 2006. The image runs
# natively as it is: the padding is a no-op. See native.S for `{nooptimize}`.

.set VMI_SITE_LENGTH, 5

.set VMI_CALL_CPUID, 5
.set VMI_CALL_WRMSR, 6
.set VMI_CALL_RDMSR, 7
.set VMI_CALL_GetCR0, 24
.set VMI_CALL_EnableInterrupts, 35
.set VMI_CALL_DisableInterrupts, 36
.set VMI_CALL_IRET, 39
.set VMI_CALL_SYSEXIT, 40

# Close a hook site that began at label `start`: pad, then annotate.
.macro VMI_ANNOTATE call:req, start:req
.Lvmi_native\@:
	.if VMI_SITE_LENGTH - (.Lvmi_native\@ - \start) > 0
	.fill VMI_SITE_LENGTH - (.Lvmi_native\@ - \start) - 1, 1, 0x66
	.byte 0x90
	.endif
.Lvmi_end\@:
	.pushsection .vmi.annotation, "a"
	.long \start
	.byte \call, .Lvmi_end\@ - \start, .Lvmi_native\@ - \start, 0
	.popsection
.endm

.macro CLI
.Lvmi_site\@:
	{nooptimize} cli
	VMI_ANNOTATE VMI_CALL_DisableInterrupts, .Lvmi_site\@
.endm

.macro STI
.Lvmi_site\@:
	{nooptimize} sti
	VMI_ANNOTATE VMI_CALL_EnableInterrupts, .Lvmi_site\@
.endm

.macro IRET
.Lvmi_site\@:
	{nooptimize} iret
	VMI_ANNOTATE VMI_CALL_IRET, .Lvmi_site\@
.endm

# ONE site: padding between sti and sysexit would end sti's interrupt shadow
# on the nop, so the padding goes after sysexit (the seed's "N.B.").
.macro STI_SYSEXIT
.Lvmi_site\@:
	{nooptimize} sti
	{nooptimize} sysexit
	VMI_ANNOTATE VMI_CALL_SYSEXIT, .Lvmi_site\@
.endm

.macro GET_CR0
.Lvmi_site\@:
	mov %cr0, %eax
	VMI_ANNOTATE VMI_CALL_GetCR0, .Lvmi_site\@
.endm

.macro WRMSR
.Lvmi_site\@:
	{nooptimize} wrmsr
	VMI_ANNOTATE VMI_CALL_WRMSR, .Lvmi_site\@
.endm

.macro RDMSR
.Lvmi_site\@:
	{nooptimize} rdmsr
	VMI_ANNOTATE VMI_CALL_RDMSR, .Lvmi_site\@
.endm

.macro CPUID
.Lvmi_site\@:
	{nooptimize} cpuid
	VMI_ANNOTATE VMI_CALL_CPUID, .Lvmi_site\@
.endm
