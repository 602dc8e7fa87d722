"""Miscellaneous instructions: nop (and pause), flag control (clc stc cmc cld
std cli sti), hlt, cpuid, rdtsc, rdmsr, wrmsr, ud2, in, out, fwait, and the
software interrupts int1, int3, into, int, bound (SDM Vol.2 under each mnemonic).

Privilege checks read ``cpu.cpl``, ``cpu.cr[0]`` (PE, bit 0) and IOPL at run
time, since the same code may run at different privilege levels.

**The processor that CPUID describes** (a fixed, documented feature set):

* leaf 0: EAX = 1 (the highest basic leaf), EBX:EDX:ECX = "GenuineIntel";
* leaf 1: EAX = 0x00000633: family 6, model 3, stepping 3. Family 6 with
  model and stepping >= 3 is the first signature on which software that follows
  Intel's rule for the SEP bit believes it (a Pentium Pro reports SEP without
  having SYSENTER; Linux 2.6.16 ``arch/i386/kernel/cpu/intel.c`` clears it
  for family 6, model < 3, stepping < 3). EBX[31:24] = the initial APIC ID,
  which is the CPU's index in its machine (how an SMP kernel tells its CPUs
  apart at boot); the rest of EBX and ECX are 0.
  EDX = 0x00008830: TSC (bit 4, rdtsc), MSR (bit 5, rdmsr/wrmsr), SEP
  (bit 11, sysenter/sysexit) and CMOV (bit 15, cmovcc: what a program built
  for i686, such as a stock ``gcc -m32`` xv6, checks before using it). No FPU
  (bit 0): the interpreter has no x87 unit. No VME, PSE, PAE, PGE, APIC or
  CX8 either.
* any other leaf returns leaf 1, as Intel processors do for a leaf above the
  highest one (SDM Vol.2 CPUID).

**Model-specific registers** (``cpu.msr``; anything else faults #GP(0)):
0x10 IA32_TIME_STAMP_COUNTER, 0x174 IA32_SYSENTER_CS, 0x175 IA32_SYSENTER_ESP,
0x176 IA32_SYSENTER_EIP. The time-stamp counter is ``cpu.cycles``; writing it
stores an offset in ``cpu.msr[0x10]`` so ``rdtsc`` reads ``cycles + offset``.
The SYSENTER MSRs hold the 64-bit values written (absent = 0).

**I/O ports** go through ``cpu.io.read(port, size)`` and
``cpu.io.write(port, size, value)`` with ``size`` in bytes (1, 2, 4); with no
bus every read returns all ones and writes vanish (an ISA bus with nothing on
it). In protected mode with CPL > IOPL, and always in virtual-8086 mode, the
TSS I/O permission bit map decides (``vmi.cpu.iobitmap``; SDM Vol.1 §18.5.2):
a port whose bit is set, or that lies past the TSS limit, faults #GP(0).

**Software interrupts** raise a ``CPUException`` with ``trap = True`` (EIP
stays after the instruction) and, for int n, int3 and into, ``software = True``
(the gate DPL check of SDM Vol.3A §6.12.1.1 applies to those, not to int1);
the system model delivers them. ``bound`` raises #BR, a fault.
"""

from __future__ import annotations

from vmi.cpu.access import effective_address
from vmi.cpu.core import Halted
from vmi.cpu.errors import BP, BR, DB, GP, NM, OF, UD, CPUException
from vmi.cpu.iobitmap import IO_CHECK_SOURCE, require_io_map
from vmi.cpu.operands import Immediate
from vmi.cpu.ops import END_BATCH, build, semantics

#: CPUID leaf -> (EAX, EBX, ECX, EDX).
CPUID_LEAVES = {
    0: (1, 0x756E6547, 0x6C65746E, 0x49656E69),  # "Genu" "ntel" "ineI"
    1: (0x00000633, 0, 0, (1 << 4) | (1 << 5) | (1 << 11) | (1 << 15)),
}
CPUID_MAX_LEAF = 1

MSR_TSC, MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x10, 0x174, 0x175, 0x176
#: The model-specific registers rdmsr/wrmsr accept.
KNOWN_MSRS = frozenset((MSR_TSC, MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP))

#: Source of the I/O privilege check (in, out, ins, outs, cli, sti share it):
#: in protected mode, CPL > IOPL faults #GP(0) (SDM Vol.1 §18.5.1). In
#: virtual-8086 mode the system model keeps CPL = 3, so IOPL < 3 faults as well.
IOPL_CHECK = """
if cpu.cr[0] & 1 and cpu.cpl > (cpu.flags >> 12) & 3:
    raise CPUException(13, 0)
"""


def trap(vector: int, *, software: bool = False) -> CPUException:
    """A trap-type exception: reported with EIP after the instruction."""
    exc = CPUException(vector, None)
    exc.trap = True  # type: ignore[attr-defined]
    exc.software = software  # type: ignore[attr-defined]
    return exc


# -- no-ops and flag bits ---------------------------------------------------------
@semantics("nop", "pause")
def nop(insn, cpu):
    """Do nothing. ``pause`` (F3 90) is a spin-loop hint, and a nop on processors
    that predate it (SDM Vol.2 PAUSE); whatever prefixes come with a nop are
    ignored too."""
    return build("pass")


@semantics("fwait")
def fwait(insn, cpu):
    """Wait for the FPU: there is none, so nothing to wait for; CR0.MP and
    CR0.TS both set still raise #NM (SDM Vol.2 WAIT/FWAIT)."""
    return build(f"if cpu.cr[0] & 0xA == 0xA:\n    raise CPUException({NM})")


_ARITH_FLAG_OPS = {
    "clc": "f & ~1",
    "stc": "f | 1",
    "cmc": "f ^ 1",
}


@semantics(*_ARITH_FLAG_OPS)
def carry_flag(insn, cpu):
    """Clear, set or complement CF; the other arithmetic flags are kept."""
    new = _ARITH_FLAG_OPS[insn.mnemonic]
    body = f"f = arith_flags(cpu.lf)\ncpu.lf = (EXPLICIT, 32, {new}, 0, 0)"
    return build(body)


@semantics("cld", "std")
def direction_flag(insn, cpu):
    """Clear or set DF (string instructions step down when it is set)."""
    return build("cpu.flags &= ~0x400" if insn.mnemonic == "cld" else "cpu.flags |= 0x400")


@semantics("cli")
def cli(insn, cpu):
    """Clear IF. In protected mode at CPL > IOPL this faults #GP(0) (SDM Vol.2
    CLI, without the VME/PVI variants): the trap a paravirtual kernel at ring 1
    with IOPL 0 takes, and the reason VMI replaces cli with a call."""
    return build(IOPL_CHECK.strip() + "\ncpu.flags &= ~0x200")


@semantics("sti")
def sti(insn, cpu):
    """Set IF, with the same privilege rule as cli. When IF was 0, interrupts
    stay blocked until the next instruction retires (the STI shadow, SDM Vol.2
    STI): this sets ``cpu.shadow`` and the system model honours and clears it."""
    body = IOPL_CHECK.strip() + """
if not cpu.flags & 0x200:
    cpu.shadow = True
    cpu.flags |= 0x200
    """ + END_BATCH + "\n"
    return build(body)


# -- processor control ------------------------------------------------------------
@semantics("hlt")
def hlt(insn, cpu):
    """Stop until an interrupt. CPL > 0 in protected mode faults #GP(0)
    (SDM Vol.2 HLT). Sets ``cpu.halted`` and leaves the run loop by raising
    ``Halted``; EIP is already past the hlt, where an interrupt returns to."""
    body = f"""
if cpu.cr[0] & 1 and cpu.cpl:
    raise CPUException({GP}, 0)
cpu.halted = True
raise HALTED()
"""
    return build(body, HALTED=Halted)


@semantics("ud2")
def ud2(insn, cpu):
    """The architecturally undefined instruction: always #UD."""
    return build(f"raise CPUException({UD}, None, 'ud2')")


@semantics("cpuid")
def cpuid(insn, cpu):
    """Identify the processor (see the module docstring for the values)."""
    body = """
r = cpu.r
leaf = r[0]
values = LEAVES.get(leaf) or LEAVES[MAX]
r[0], r[3], r[1], r[2] = values
if values is LEAVES[1]:
    r[3] = (cpu.index & 0xFF) << 24
"""
    return build(body, LEAVES=CPUID_LEAVES, MAX=CPUID_MAX_LEAF)


@semantics("rdtsc")
def rdtsc(insn, cpu):
    """EDX:EAX = the time-stamp counter (``cpu.cycles`` plus the offset a wrmsr
    set). CR4.TSD makes it privileged: CPL > 0 in protected mode faults #GP(0)."""
    body = f"""
if cpu.cr[4] & 4 and cpu.cr[0] & 1 and cpu.cpl:
    raise CPUException({GP}, 0)
t = (cpu.cycles + cpu.msr.get({MSR_TSC}, 0)) & 0xFFFFFFFFFFFFFFFF
r = cpu.r
r[0] = t & 0xFFFFFFFF
r[2] = t >> 32
"""
    return build(body)


_MSR_PRIVILEGE = f"""
if cpu.cr[0] & 1 and cpu.cpl:
    raise CPUException({GP}, 0)
r = cpu.r
n = r[1]
if n not in KNOWN:
    raise CPUException({GP}, 0, f"unknown MSR {{n:#x}}")
"""


@semantics("rdmsr")
def rdmsr(insn, cpu):
    """EDX:EAX = MSR[ECX]; CPL > 0 or an unknown MSR faults #GP(0) (SDM Vol.2 RDMSR)."""
    body = _MSR_PRIVILEGE + f"""
if n == {MSR_TSC}:
    v = (cpu.cycles + cpu.msr.get(n, 0)) & 0xFFFFFFFFFFFFFFFF
else:
    v = cpu.msr.get(n, 0)
r[0] = v & 0xFFFFFFFF
r[2] = v >> 32
"""
    return build(body, KNOWN=KNOWN_MSRS)


@semantics("wrmsr")
def wrmsr(insn, cpu):
    """MSR[ECX] = EDX:EAX; CPL > 0 or an unknown MSR faults #GP(0) (SDM Vol.2 WRMSR).
    Writing the TSC stores its offset from ``cpu.cycles``."""
    body = _MSR_PRIVILEGE + f"""
v = (r[2] << 32) | r[0]
if n == {MSR_TSC}:
    cpu.msr[n] = v - cpu.cycles
else:
    cpu.msr[n] = v
"""
    return build(body, KNOWN=KNOWN_MSRS)


# -- port I/O ---------------------------------------------------------------------
def _port(op) -> tuple[str, dict]:
    """The port of in/out: an immediate byte, or DX."""
    if isinstance(op, Immediate):
        return "PORT", {"PORT": op.value & 0xFF}
    return "(cpu.r[2] & 0xFFFF)", {}


@semantics("in")
def in_(insn, cpu):
    """AL/AX/EAX = the port (immediate or DX); see the module docstring for the bus."""
    dst, src = insn.operands
    size = dst.size
    port, params = _port(src)
    ones = (1 << size * 8) - 1
    store = {1: "r[0] = (r[0] & 0xFFFFFF00) | v", 2: "r[0] = (r[0] & 0xFFFF0000) | v",
             4: "r[0] = v"}[size]
    body = IO_CHECK_SOURCE.format(port=port, size=size).strip() + f"""
io = cpu.io
v = {ones:#x} if io is None else io.read({port}, {size}) & {ones:#x}
r = cpu.r
{store}
"""
    return build(body, params, REQUIRE_IO_MAP=require_io_map)


@semantics("out")
def out(insn, cpu):
    """Write AL/AX/EAX to the port (immediate or DX)."""
    dst, src = insn.operands
    size = src.size
    port, params = _port(dst)
    value = {1: "cpu.r[0] & 0xFF", 2: "cpu.r[0] & 0xFFFF", 4: "cpu.r[0]"}[size]
    body = IO_CHECK_SOURCE.format(port=port, size=size).strip() + f"""
io = cpu.io
if io is not None:
    io.write({port}, {size}, {value})
{END_BATCH}
"""
    return build(body, params, REQUIRE_IO_MAP=require_io_map)


# -- software interrupts ------------------------------------------------------------
@semantics("int")
def int_(insn, cpu):
    """int n: a software interrupt, a trap reported after the instruction."""
    (vector,) = insn.operands
    return build("raise TRAP(N, software=True)", TRAP=trap, N=vector.value & 0xFF)


@semantics("int3")
def int3(insn, cpu):
    """The one-byte breakpoint: #BP as a trap."""
    return build("raise TRAP(N, software=True)", TRAP=trap, N=BP)


@semantics("int1")
def int1(insn, cpu):
    """ICEBP (F1): #DB as a trap, delivered like a hardware debug exception
    (no gate DPL check)."""
    return build("raise TRAP(N)", TRAP=trap, N=DB)


@semantics("into")
def into(insn, cpu):
    """#OF as a trap if OF is set, else nothing."""
    return build("if arith_flags(cpu.lf) & 0x800:\n    raise TRAP(N, software=True)",
                 TRAP=trap, N=OF)


@semantics("bound")
def bound(insn, cpu):
    """Check a signed array index against the pair [lower, upper] in memory;
    outside it raise #BR, a fault (SDM Vol.2 BOUND). The register form does not
    decode (#UD)."""
    index_reg, pair = insn.operands
    bits = insn.opsize
    size = bits // 8
    sign = 1 << (bits - 1)
    amask = 0xFFFFFFFF if pair.addrsize == 32 else 0xFFFF
    ea, params = effective_address(pair, "m")
    value = "r[I]" if bits == 32 else "r[I] & 0xFFFF"
    body = f"""
r = cpu.r
a = {ea}
lo = cpu.rd{bits}(SEG, a)
hi = cpu.rd{bits}(SEG, (a + {size}) & {amask:#x})
i = (({value}) ^ {sign:#x}) - {sign:#x}
if i < (lo ^ {sign:#x}) - {sign:#x} or i > (hi ^ {sign:#x}) - {sign:#x}:
    raise CPUException({BR})
"""
    return build(body, params, I=index_reg.index, SEG=pair.segment)
