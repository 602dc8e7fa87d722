"""Basic blocks (vmi.cpu.blocks) end in exactly the state one closure per
instruction reaches: after a fault inside a block, at a batch cut by
``max_steps`` or by the cycle limit, after a store that rewrites the next
instruction of the same block, and on random programs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import example_scale
from tests.strategies import encoding, register_value
from vmi.cpu import CPU, CPUException, Memory, blocks
from vmi.cpu.core import BLOCK
from vmi.cpu.decoder import decode
from vmi.cpu.descriptors import UnsupportedSystemFeature
from vmi.cpu.errors import DecodeError, ProcessorShutdown, StopBatch
from vmi.cpu.isa import FORMS
from vmi.cpu.segmentation import install_accessors

CODE = 0x1000

# top: add $0x100,%esi ; mov (%esi),%eax ; inc %ebx ; add %eax,%edx ; dec %ecx ; jne top ; hlt
FAULT_LOOP = bytes.fromhex("81c600010000" "8b06" "43" "01c2" "49" "75f2" "f4")
FAULTING_MOV = CODE + 6

# top: mov %cl,(%edi) ; patch: mov $0x10,%eax ; mov $patch+1,%edi ; add %eax,%ebx ;
#      dec %ecx ; jne top ; hlt
PATCH = CODE + 6
SMC_LOOP = (bytes.fromhex("880f" "90" "90" "90" "90") + bytes.fromhex("b810000000")
            + b"\xbf" + (PATCH + 1).to_bytes(4, "little")
            + bytes.fromhex("01c3" "49" "75eb" "f4"))


@pytest.fixture(autouse=True)
def hot_at_the_second_visit(monkeypatch):
    """Build a block the second time its EIP is reached, so short loops use blocks."""
    monkeypatch.setattr(blocks, "HOT", 2)


def flat(code: bytes, **registers: int) -> CPU:
    cpu = CPU.flat(Memory(1 << 20))
    cpu.mem.load(CODE, code)
    cpu.eip = CODE
    cpu.regs.esp = 0x8000
    for name, value in registers.items():
        setattr(cpu.regs, name, value)
    return cpu


def outcome(cpu: CPU, run) -> tuple:
    """What a run ended in: its result (or the exception's vector), the CPU's state
    and every byte of memory."""
    try:
        result = ("retired", run())
    except CPUException as exc:
        result = ("exception", exc.vector, exc.error_code, getattr(exc, "trap", False))
    except (ProcessorShutdown, UnsupportedSystemFeature) as exc:
        result = (type(exc).__name__,)
    return result, cpu.state(), bytes(cpu.mem.array)


def both(make, run) -> tuple[tuple, tuple, list[int]]:
    """``run(cpu)`` on a CPU from ``make()`` fused and not; also the lengths of the
    blocks the fused run built."""
    plain = make()
    plain.fuse = False
    first = outcome(plain, lambda: run(plain))
    fused = make()
    built: list[int] = []
    original = blocks.build

    def spy(entries, starts, *rest):
        built.append(len(entries))
        return original(entries, starts, *rest)

    blocks.build = spy
    try:
        second = outcome(fused, lambda: run(fused))
    finally:
        blocks.build = original
    return first, second, built


def test_a_fault_inside_a_block_leaves_the_state_of_one_by_one():
    def make():
        cpu = flat(FAULT_LOOP, ecx=10)
        cpu.seg_limit[3] = 0x3FF  # DS: the third pass reads at 0x300 .. 0x303; the fourth faults
        install_accessors(cpu)
        return cpu

    plain, fused, entered = both(make, lambda cpu: cpu.run(1000))
    assert entered and max(entered) == 6  # the loop ran as one block
    assert fused == plain
    result, state, _ = fused
    assert result[:2] == ("exception", 13)
    assert state["eip"] == FAULTING_MOV
    assert state["r"][6] == 0x400 and state["r"][3] == 3  # the add before it retired, inc not
    assert state["instructions"] == 3 * 6 + 1


@pytest.mark.parametrize("steps", range(1, 30))
def test_a_batch_cut_by_max_steps_stops_at_the_exact_instruction(steps):
    loop = bytes.fromhex("01d8" "11f2" "31c7" "40" "d1e7" "89c5" "49" "75f2" "f4")

    def run(cpu):
        counts = [cpu.run(steps) for _ in range(4)]
        return counts, cpu.run(1000)

    plain, fused, _ = both(lambda: flat(loop, ecx=20, ebx=7, esi=3), run)
    assert fused == plain
    assert fused[0][1][0] == [steps] * 4


@pytest.mark.parametrize("limit", range(1, 80, 3))
def test_a_batch_cut_by_the_cycle_limit_stops_at_the_exact_instruction(limit):
    loop = bytes.fromhex("01d8" "50" "5b" "40" "49" "75f8" "f4")  # add push pop inc dec jne

    def run(cpu):
        first = cpu.run(1000, cycle_limit=limit)
        return first, cpu.cycles, cpu.run(1000, cycle_limit=limit + 50)

    plain, fused, entered = both(lambda: flat(loop, ecx=30), run)
    assert fused == plain
    cycles = fused[1]["cycles"]
    assert cycles >= limit and fused[0][1][1] >= limit
    assert entered  # the blocks did run between the cuts


def test_a_store_that_rewrites_the_next_instruction_of_its_block_runs_the_new_bytes():
    def make():
        return flat(SMC_LOOP, ecx=3, edi=0x9000)

    plain, fused, entered = both(make, lambda cpu: cpu.run(1000))
    assert entered  # the second pass ran the store inside a block
    assert fused == plain
    # first pass: the store goes to data, eax = 0x10; then it rewrites the
    # immediate of the next instruction with ECX: 2, then 1
    assert fused[1]["r"][3] == 0x10 + 2 + 1


def test_fusion_off_by_environment(monkeypatch):
    monkeypatch.setenv(blocks.ENV, "0")
    assert not CPU.flat().fuse
    monkeypatch.setenv(blocks.ENV, "1")
    assert CPU.flat().fuse


def test_a_block_is_built_where_code_is_hot(monkeypatch):
    monkeypatch.setattr(blocks, "HOT", 5)
    cpu = flat(FAULT_LOOP, ecx=10)
    cpu.run(6 * 4)  # four passes: not yet hot
    assert not cpu.icache.get(CODE + BLOCK)
    cpu.run(6)
    assert isinstance(cpu.icache[CODE + BLOCK], blocks.Block)


def test_a_block_is_kept_under_its_eip_and_cut_at_the_branch():
    cpu = flat(FAULT_LOOP, ecx=10)
    cpu.run(30)
    block = cpu.icache[CODE + BLOCK]
    assert isinstance(block, blocks.Block)
    assert block.starts == (CODE, CODE + 6, CODE + 8, CODE + 9, CODE + 11, CODE + 12)
    assert block.nexts[-1] == CODE + 14 and block.length == 6


# -- random programs: fused and per-instruction runs agree ----------------------------
_FUSIBLE = {"add", "adc", "sub", "sbb", "and", "or", "xor", "cmp", "test", "inc", "dec",
            "neg", "not", "mov", "lea", "movzx", "movsx", "xchg", "push", "pop", "shl",
            "shr", "sar", "rol", "ror", "rcl", "rcr", "imul", "mul", "div", "idiv", "clc",
            "stc", "cmc", "cld", "std", "bt", "bts", "btr", "btc", "cmovne", "cmove",
            "sete", "setne", "setb", "jne", "je", "jb", "cbw/cwde", "cwd/cdq", "lahf",
            "sahf", "xadd", "cmpxchg", "bswap", "pushf/pushfd", "leave", "shld", "shrd"}
FORMS_IN_BLOCKS = [f for f in FORMS if f.mnemonic in _FUSIBLE]


@st.composite
def program(draw) -> bytes:
    """Random instructions of the fusible families, then ``dec %ecx ; jne top ; hlt``."""
    code = b""
    for raw in draw(st.lists(encoding(FORMS_IN_BLOCKS, prefixes=(0x66,), max_prefixes=1),
                             min_size=1, max_size=12)):
        try:
            insn = decode(raw, CODE + len(code), bits=32)
        except DecodeError:
            continue
        code += raw[:insn.length]
    back = -(len(code) + 1 + 6)
    return code + b"\x49\x0f\x85" + (back & 0xFFFFFFFF).to_bytes(4, "little") + b"\xf4"


@settings(max_examples=300 * example_scale(), deadline=None)
@given(program(), st.lists(register_value(), min_size=8, max_size=8),
       st.integers(0, 2**32 - 1), st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_fused_and_per_instruction_runs_agree_on_random_programs(code, values, seed, cuts):
    def make():
        rng = random.Random(seed)
        cpu = CPU.flat(Memory(1 << 20))
        cpu.mem.load(CODE, code)
        cpu.mem.load(0x10000, rng.randbytes(0x2000))
        cpu.r[:] = values
        cpu.regs.esp = 0x18000
        cpu.regs.ecx = 1 + seed % 4
        cpu.eflags = (rng.getrandbits(32) & 0x8D5) | 2  # arithmetic flags and DF
        cpu.eip = CODE
        return cpu

    def run(cpu):
        counts = [cpu.run(n, cycle_limit=cpu.cycles + 7 * n) for n in cuts]
        return counts, cpu.run(400)

    plain, fused, _ = both(make, run)
    assert fused == plain


class ClockDevice:
    """A device window that reads back its CPU's cycle count and logs each write
    with the count it saw; a write of an odd value ends the batch (as a write that
    changes what the machine checks at boundaries would)."""

    def __init__(self) -> None:
        self.cpu: CPU | None = None
        self.log: list[tuple[int, int]] = []

    def read(self, offset: int, size: int, index: int) -> int:
        return self.cpu.cycles & 0xFFFFFFFF

    def write(self, offset: int, size: int, value: int, index: int) -> None:
        self.log.append((self.cpu.cycles, value))
        if value & 1:
            raise StopBatch()

    def peek(self, offset: int, size: int, index: int) -> int:
        return 0


def test_a_device_inside_a_block_sees_the_cycles_and_may_end_the_batch():
    # top: inc %edx ; mov (%esi),%eax ; add %eax,%ebx ; mov %ebx,(%esi) ; inc %edi ;
    #      dec %ecx ; jne top ; hlt
    loop = bytes.fromhex("42" "8b06" "01c3" "891e" "47" "49" "75f5" "f4")
    devices = []

    def make():
        cpu = flat(loop, ecx=12, esi=1 << 20)
        device = ClockDevice()
        device.cpu = cpu
        cpu.mem.map_device(1 << 20, 0x1000, device)
        devices.append(device)
        return cpu

    def run(cpu):
        return [cpu.run(1000, stop_on_event_change=True) for _ in range(12)]

    plain, fused, built = both(make, run)
    assert built
    assert fused == plain
    assert devices[0].log == devices[1].log and len(devices[0].log) == 12
    assert any(value & 1 for _, value in devices[0].log)  # some writes ended batches
