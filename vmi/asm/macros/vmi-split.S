# vmi-split.S -- the vmi set, deliberately broken: STI_SYSEXIT is two hook
# sites, `sti` padded to a site of its own and then `sysexit`. The padding
# nop after sti takes sti's one-instruction interrupt shadow, so an interrupt
# can arrive between the (virtual) sti and sysexit -- on the kernel stack,
# with user registers loaded. Race tests use it to show why the seed makes
# STI_SYSEXIT one abstraction. Everything else is vmi.S.

.include "vmi.S"

.purgem STI_SYSEXIT

.macro STI_SYSEXIT
.Lvmi_sti\@:
	{nooptimize} sti
	VMI_ANNOTATE VMI_CALL_EnableInterrupts, .Lvmi_sti\@
.Lvmi_sysexit\@:
	{nooptimize} sysexit
	VMI_ANNOTATE VMI_CALL_SYSEXIT, .Lvmi_sysexit\@
.endm
