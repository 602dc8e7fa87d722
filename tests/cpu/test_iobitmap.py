"""The TSS I/O permission bit map (``vmi.cpu.iobitmap``): SDM Vol.1 §18.5.2 "I/O
Permission Bit Map"; Vol.3A §7.2.1 (the map base at TSS offset 0x66) and §20.2.8.1
(virtual-8086 mode). Each test names the rule it checks."""

from __future__ import annotations

import struct

import pytest

from tests.cpu.test_protected import TSS, enter_v86, system_cpu
from vmi.cpu import CPU
from vmi.cpu.errors import CPUException

MAP = 0x68  # the map right after the 104-byte TSS


class FakeBus:
    """A port bus that records the accesses it sees."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, int]] = []

    def read(self, port: int, size: int) -> int:
        self.log.append(("r", port, size))
        return 0x12345678

    def write(self, port: int, size: int, value: int) -> None:
        self.log.append(("w", port, size))


def user_cpu(*, map_bytes: bytes | None = None, limit: int | None = None, iopl: int = 0,
             map_base: int = MAP, tss_type: int = 0xB) -> CPU:
    """A CPL-3 CPU (no platform: faults propagate) whose TSS has the map ``map_bytes``
    at ``map_base`` and the given limit (default: the map's last byte)."""
    cpu = system_cpu(cpl=3, platform=False)
    cpu.flags = (cpu.flags & ~0x3000) | iopl << 12
    data = map_bytes if map_bytes is not None else b""
    cpu.mem.write16(TSS + 0x66, map_base)
    cpu.mem.load(TSS + map_base, data)
    if limit is None:
        limit = max(map_base + len(data) - 1, 0x67)
    cpu.tr[:] = [0x40, TSS, limit, 0x80 | tss_type]
    cpu.io = FakeBus()
    return cpu


def allowed_map(*clear_ports: int, length: int = 0x2001) -> bytes:
    """A map of ``length`` bytes with every port forbidden but ``clear_ports``."""
    data = bytearray(b"\xff" * length)
    for port in clear_ports:
        data[port >> 3] &= ~(1 << (port & 7)) & 0xFF
    return bytes(data)


def run(cpu: CPU, code: bytes) -> None:
    cpu.mem.load(0x50000, code)
    cpu.icache.clear()
    cpu.eip = 0x50000
    cpu.run(1)


def gp(cpu: CPU, code: bytes) -> CPUException:
    with pytest.raises(CPUException) as info:
        run(cpu, code)
    assert (info.value.vector, info.value.error_code) == (13, 0)
    assert cpu.eip == 0x50000  # reported on the instruction
    return info.value


def test_clear_bit_allows_a_byte_access_at_cpl_above_iopl():
    """SDM Vol.1 §18.5.2: at CPL > IOPL the map decides; a clear bit lets the access
    through (in $0x60,%al reads the port)."""
    cpu = user_cpu(map_bytes=allowed_map(0x60))
    run(cpu, b"\xe4\x60")  # in $0x60,%al
    assert cpu.io.log == [("r", 0x60, 1)] and cpu.r[0] & 0xFF == 0x78


def test_set_bit_faults_gp0_before_the_port_is_touched():
    """SDM Vol.1 §18.5.2: a set bit raises #GP(0); the port is not accessed."""
    cpu = user_cpu(map_bytes=allowed_map(0x61))
    gp(cpu, b"\xe6\x60")  # out %al,$0x60
    assert cpu.io.log == []


def test_cpl_at_or_below_iopl_never_reads_the_map():
    """SDM Vol.1 §18.5.1: CPL <= IOPL allows every port whatever the map says."""
    cpu = user_cpu(map_bytes=allowed_map(), iopl=3)
    run(cpu, b"\xe4\x60")
    assert cpu.io.log == [("r", 0x60, 1)]


def test_word_access_checks_two_bits_and_dword_four():
    """SDM Vol.1 §18.5.2: a 16-bit access checks the bits of both ports, a 32-bit one
    the bits of four consecutive ports."""
    cpu = user_cpu(map_bytes=allowed_map(0x70))
    cpu.r[2] = 0x70
    gp(cpu, b"\x66\xed")  # in (%dx),%ax: port 0x71 is forbidden
    cpu = user_cpu(map_bytes=allowed_map(0x70, 0x71))
    cpu.r[2] = 0x70
    run(cpu, b"\x66\xed")
    assert cpu.io.log == [("r", 0x70, 2)]
    gp(cpu, b"\xed")  # in (%dx),%eax: 0x72, 0x73 forbidden
    cpu = user_cpu(map_bytes=allowed_map(0x70, 0x71, 0x72, 0x73))
    cpu.r[2] = 0x70
    run(cpu, b"\xed")
    assert cpu.io.log == [("r", 0x70, 4)]


def test_access_spanning_two_map_bytes():
    """SDM Vol.1 §18.5.2: the processor reads two bytes of the map, so ports 0x7E-0x81
    (a dword at 0x7E) take bits from two bytes; one set bit in the second faults."""
    ports = (0x7E, 0x7F, 0x80, 0x81)
    cpu = user_cpu(map_bytes=allowed_map(*ports))
    cpu.r[2] = 0x7E
    run(cpu, b"\xef")  # out %eax,(%dx)
    assert cpu.io.log == [("w", 0x7E, 4)]
    cpu = user_cpu(map_bytes=allowed_map(*ports[:3]))
    cpu.r[2] = 0x7E
    gp(cpu, b"\xef")


def test_bits_past_the_tss_limit_count_as_set():
    """SDM Vol.1 §18.5.2: bytes of the map beyond the TSS limit count as set bits; the
    processor reads two bytes, so the byte after a port's byte must be within the
    limit too (hence the SDM's trailing 0xFF byte)."""
    data = allowed_map(0x08, 0x10, length=3)  # bytes 0..2 of the map: ports 0x00-0x17
    cpu = user_cpu(map_bytes=data, limit=MAP + 2)
    run(cpu, b"\xe4\x08")  # port 0x08: bytes 1 and 2 are within the limit
    assert cpu.io.log == [("r", 0x08, 1)]
    gp(cpu, b"\xe4\x10")  # port 0x10: its bit is clear, but byte 3 is past the limit
    cpu = user_cpu(map_bytes=data + b"\xff", limit=MAP + 3)
    run(cpu, b"\xe4\x10")  # with the trailing 0xFF byte inside the limit it passes


def test_map_base_beyond_the_limit_forbids_everything():
    """SDM Vol.1 §18.5.2: a map base at or past the TSS limit means no map: every
    access at CPL > IOPL faults (Linux's INVALID_IO_BITMAP_OFFSET)."""
    cpu = user_cpu(map_bytes=b"", map_base=0x8000, limit=0x67)
    gp(cpu, b"\xe4\x00")


def test_a_16bit_tss_has_no_map():
    """SDM Vol.3A §7.6: a 16-bit TSS has no I/O map, so at CPL > IOPL every I/O
    instruction faults."""
    cpu = user_cpu(map_bytes=allowed_map(0x60), tss_type=0x3)
    gp(cpu, b"\xe4\x60")


def test_ins_and_outs_consult_the_map():
    """SDM Vol.2 INS/OUTS: the same permission check as IN/OUT (port DX, the element
    size), made before the memory operand is touched."""
    cpu = user_cpu(map_bytes=allowed_map(0x80, 0x81))
    cpu.r[2], cpu.r[7], cpu.r[6] = 0x80, 0x30000, 0x30000
    run(cpu, b"\x66\x6d")  # insw
    assert cpu.io.log == [("r", 0x80, 2)] and cpu.mem.read16(0x30000) == 0x5678
    run(cpu, b"\x66\x6f")  # outsw
    assert cpu.io.log[-1] == ("w", 0x80, 2)
    gp(cpu, b"\x6d")  # insl: 0x82, 0x83 forbidden
    assert cpu.r[7] == 0x30002  # the faulting insl did not advance EDI
    gp(cpu, b"\x6f")


def test_virtual8086_io_ignores_iopl_and_uses_the_map():
    """SDM Vol.3A §20.2.8.1 and Vol.1 §18.5.2: in virtual-8086 mode IN and OUT are
    not IOPL-sensitive; the map alone decides, even with IOPL 3."""
    cpu = system_cpu(cpl=0, platform=False)
    struct.pack_into("<H", buf := bytearray(2), 0, MAP)
    cpu.mem.load(TSS + 0x66, bytes(buf))
    cpu.mem.load(TSS + MAP, allowed_map(0x60))
    cpu.tr[:] = [0x40, TSS, MAP + 0x2000, 0x8B]
    cpu.io = FakeBus()
    enter_v86(cpu, iopl=0)
    cpu.mem.load(0x20100, b"\xe4\x60\xe4\x61")  # in $0x60,%al ; in $0x61,%al
    cpu.icache.clear()
    cpu.run(1)
    assert cpu.io.log == [("r", 0x60, 1)]
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert info.value.vector == 13 and cpu.eip == 0x102
    cpu = system_cpu(cpl=0, platform=False)
    cpu.tr[:] = [0x40, TSS, 0x67, 0x8B]  # no map at all
    cpu.mem.write16(TSS + 0x66, 0x8000)
    enter_v86(cpu, iopl=3)
    cpu.mem.load(0x20100, b"\xe4\x60")
    cpu.icache.clear()
    with pytest.raises(CPUException):
        cpu.run(1)


# -- under the VMI monitor ---------------------------------------------------------------------
MONITOR_KERNEL = """
main:
	movl $KSTACK, IOTSS + 4			# a 32-bit TSS with an I/O map at 0x68
	movl $KERNEL_DS, IOTSS + 8
	movw $0x68, IOTSS + 0x66
	movl $0xFFFFFFFF, IOTSS + 0x68		# ports 0x00-0x7F forbidden ...
	movl $0xFFFFFFFF, IOTSS + 0x6C
	movl $0xFFFFFFFF, IOTSS + 0x70
	movl $0xFFFFFFFE, IOTSS + 0x74		# ... but 0x60 (bit 0 of map byte 0x0C)
	movb $0xFF, IOTSS + 0x78		# the trailing byte, the TSS's last
	movl $0x00000078, GDT_BASE + 0xA0	# base IOTSS, limit 0x78, available 32-bit TSS
	movl $0x00008902, GDT_BASE + 0xA4
	movw $0xA0, %ax
	ltr %ax
	movb $0x5A, %al
	outb %al, $0x61				# ring 0 (1 under the monitor): always allowed
	ENTER_USER

int_13:
	incl nfault
	pushl %eax
	movl 4(%esp), %eax
	movl %eax, gp_code
	movl 8(%esp), %eax
	movl %eax, gp_eip
	addl $2, 8(%esp)			# past the two-byte in
	popl %eax
	addl $4, %esp
	IRET

utrap_128:
	CLI
	hlt

.data
nfault: .long 0
gp_code: .long 0xFFFFFFFF
gp_eip: .long 0
"""

MONITOR_USER = """
	inb $0x60, %al		# allowed by the map
	inb $0x61, %al		# forbidden: #GP(0) to the guest kernel
	int $0x80
"""


@pytest.mark.parametrize("monitor", [None, "vmi"])
def test_guest_user_io_is_checked_against_the_guests_own_map(monitor):
    """SDM Vol.1 §18.5.2 under the VMI monitor (vmi/hypervisor/emulate.py, emulate_in):
    the guest kernel's LTR makes the real TR mirror the guest's TSS, so a ring-3 IN
    is checked by the processor against the guest's own map. An allowed port runs
    natively; a forbidden one is the guest's #GP(0), delivered to its handler with
    EIP on the IN, exactly as on bare hardware. The kernel's own OUT (virtual CPL 0)
    is never checked."""
    from tests.hypervisor.kit import USER_BASE, Guest

    guest = Guest(MONITOR_KERNEL, MONITOR_USER, monitor=monitor, defines={"IOTSS": 0x20000})
    guest.run()
    assert guest.stuck
    assert guest.var("nfault") == 1
    assert guest.var("gp_code") == 0
    assert guest.var("gp_eip") == USER_BASE + 2
