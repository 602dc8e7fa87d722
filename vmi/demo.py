"""A tiny bundled program for ``python -m vmi run`` until the guest kernel exists.

It computes Fibonacci(20) in a loop, passes it on the stack to a subroutine
that stores it at 0x9000, and halts. Source (GNU as, AT&T)::

    start:  mov $0x8000,%esp ; mov $20,%ecx ; xor %eax,%eax ; mov $1,%ebx
    fib:    mov %eax,%edx ; add %ebx,%eax ; mov %edx,%ebx ; dec %ecx ; jnz fib
            push %eax ; call store ; hlt
    store:  mov 4(%esp),%edx ; mov %edx,0x9000 ; ret $4
"""

from __future__ import annotations

DEMO_BASE = 0x1000
DEMO_RESULT = 0x9000
DEMO_EXPECTED = 6765  # Fibonacci(20)
DEMO_CODE = bytes.fromhex(
    "bc00800000b91400000031c0bb0100000089c201d889d34975f750e801000000f4"
    "8b542404891500900000c20400"
)
