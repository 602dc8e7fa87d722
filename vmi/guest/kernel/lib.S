# lib.S -- console output (port 0xE9, vmi/devices.py) and user-memory copies.
#
# Output from several CPUs is kept whole line by line with console_spinlock,
# taken with spin_lock_irqsave like any other lock of this kernel.

	.text

# console_lock() -> flags
ENTRY console_lock
	movl $console_spinlock, %eax
	jmp _spin_lock_irqsave

# console_unlock(flags)
ENTRY console_unlock
	movl %eax, %edx
	movl $console_spinlock, %eax
	jmp _spin_unlock_irqrestore

# printk(string): a NUL-terminated string, under the console lock.
ENTRY printk
	pushl %ebx
	pushl %eax
	call console_lock
	movl %eax, %ebx
	popl %eax
	call put_str
	movl %ebx, %eax
	call console_unlock
	popl %ebx
	ret

# put_char(c), put_str(string), put_dec(n), put_hex(n): the caller holds the
# console lock.
ENTRY put_char
	outb %al, $PORT_CONSOLE
	ret

ENTRY put_str
	pushl %esi
	movl %eax, %esi
1:	movb (%esi), %al
	testb %al, %al
	jz 2f
	outb %al, $PORT_CONSOLE
	incl %esi
	jmp 1b
2:	popl %esi
	ret

ENTRY put_dec
	pushl %ebx
	pushl %esi
	subl $12, %esp
	leal 11(%esp), %esi
	movb $0, (%esi)
	movl $10, %ebx
1:	xorl %edx, %edx
	divl %ebx
	addb $'0, %dl
	decl %esi
	movb %dl, (%esi)
	testl %eax, %eax
	jnz 1b
	movl %esi, %eax
	call put_str
	addl $12, %esp
	popl %esi
	popl %ebx
	ret

ENTRY put_hex
	pushl %ebx
	movl %eax, %ebx
	movb $'0, %al
	outb %al, $PORT_CONSOLE
	movb $'x, %al
	outb %al, $PORT_CONSOLE
	movl $8, %ecx
1:	roll $4, %ebx
	movl %ebx, %eax
	andl $0xF, %eax
	movb hex_digits(%eax), %al
	outb %al, $PORT_CONSOLE
	loop 1b
	popl %ebx
	ret

# access_ok(address, size) -> 0 if [address, address + size) lies below the
# task's addr_limit (and does not wrap), else -EFAULT.
ENTRY access_ok
	addl %edx, %eax
	jc 1f
	GET_THREAD_INFO %edx
	cmpl TI_addr_limit(%edx), %eax
	ja 1f
	xorl %eax, %eax
	ret
1:	movl $-EFAULT, %eax
	ret

# copy_from_user(to, from, n) -> 0 or -EFAULT. A page fault inside the copy
# is caught by the exception table, as Linux's __copy_from_user does.
ENTRY copy_from_user
	pushl %esi
	pushl %edi
	pushl %ecx
	movl %eax, %edi
	movl %edx, %esi
	movl %edx, %eax
	movl %ecx, %edx
	call access_ok
	popl %ecx
	testl %eax, %eax
	jnz 1f
	cld
.Lcopy_from_user:
	rep movsb
	EX_TABLE .Lcopy_from_user, .Lcopy_from_user_fault
	xorl %eax, %eax
	popl %edi
	popl %esi
	ret
.Lcopy_from_user_fault:
	movl $-EFAULT, %eax
1:	popl %edi
	popl %esi
	ret

	.pushsection .rodata
hex_digits:
	.ascii "0123456789abcdef"
	.popsection
