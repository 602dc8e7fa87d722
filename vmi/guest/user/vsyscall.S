# vsyscall.S -- the page user programs call to enter the kernel through
# SYSENTER (after 2.6.16's vsyscall-sysenter.S, written from the reference,
# section 6: "push ECX, EDX, EBP; mov %esp,%ebp; sysenter; ...").
#
# SYSENTER saves nothing and SYSEXIT returns to EDX with ESP = ECX, so the
# stub keeps ECX, EDX and EBP on the user stack and hands the kernel that
# stack pointer in EBP (the kernel reads the sixth argument, the caller's
# EBP, from it). The kernel returns to SYSENTER_RETURN (thread_info's
# sysenter_return); a call that must be repeated is sent back two bytes
# earlier, to the short jmp that re-enters.

	.text
__kernel_vsyscall:
	pushl %ecx
	pushl %edx
	pushl %ebp
.Lenter_kernel:
	movl %esp, %ebp
	sysenter
	.space 7, 0x90			# room, as the original leaves it
	jmp .Lenter_kernel		# SYSENTER_RETURN - 2: the restart point
SYSENTER_RETURN:
	popl %ebp
	popl %edx
	popl %ecx
	ret
