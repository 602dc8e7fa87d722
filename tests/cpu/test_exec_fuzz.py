"""Robustness: random bytes executed on a flat CPU end in a ``CPUException``,
a halt or the step budget, never in any other Python exception (but the two
documented stops: a processor shutdown, and a system feature the model refuses
rather than fakes, such as a task switch through random descriptors).

Whatever a guest executes, the interpreter must answer as a processor does
(a fault or a result), so a bug in an executor shows up here as a stray
``TypeError``/``IndexError``/``KeyError``/``struct.error``.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import example_scale
from vmi.cpu import CPU, CPUException, Memory
from vmi.cpu.descriptors import UnsupportedSystemFeature
from vmi.cpu.errors import ProcessorShutdown

CODE = 0x1000
STEPS = 48
POINTERS = (0, 0x1000, 0x8000, 0xFFFF, 0xFFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000)


def run_random_code(code: bytes, seed: int, cpl: int) -> None:
    rng = random.Random(seed)
    cpu = CPU.flat(Memory(1 << 20), cpl=cpl)
    cpu.mem.load(CODE, code)
    cpu.mem.load(0x8000, rng.randbytes(0x800))
    for i in range(8):
        cpu.r[i] = rng.choice(POINTERS) if rng.random() < 0.4 else rng.getrandbits(32)
    cpu.regs.esp = rng.choice((0x8400, 0x8002, 0x2, 0xFFFFFFFE))
    # random arithmetic and control flags, IOPL, NT, RF, VM and AC (not TF)
    cpu.eflags = (rng.getrandbits(32) & 0x2470DD5) | 2
    cpu.eip = CODE
    try:
        cpu.run(STEPS)
    except (CPUException, ProcessorShutdown, UnsupportedSystemFeature):
        pass


@settings(max_examples=1000 * example_scale())
@given(st.binary(min_size=1, max_size=48), st.integers(0, 2**32 - 1))
def test_random_code_at_cpl0_raises_only_cpu_exceptions(code, seed):
    run_random_code(code, seed, 0)


@settings(max_examples=1000 * example_scale())
@given(st.binary(min_size=1, max_size=48), st.integers(0, 2**32 - 1))
def test_random_code_at_cpl3_raises_only_cpu_exceptions(code, seed):
    run_random_code(code, seed, 3)


@settings(max_examples=500 * example_scale())
@given(st.lists(st.sampled_from(
    # prefixes and the opcodes of the families in move/stack/control/string/misc,
    # so the fuzz spends its steps in them
    [0x66, 0x67, 0xF2, 0xF3, 0x26, 0x64, 0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC, 0xAD,
     0xAE, 0xAF, 0x6C, 0x6D, 0x6E, 0x6F, 0x60, 0x61, 0x9C, 0x9D, 0xC8, 0xC9, 0xE0, 0xE1,
     0xE2, 0xE3, 0xC2, 0xC3, 0xE8, 0x8F, 0xFF, 0x0F, 0xB0, 0xB1, 0xC0, 0xC1, 0xC8, 0xD7,
     0x9E, 0x9F, 0x98, 0x99, 0x62, 0xCE, 0xCC, 0xF4, 0xFA, 0xFB, 0xE4, 0xEC, 0x31, 0x32,
     0xA2, 0x00, 0x04, 0x24, 0x44, 0x87, 0x86]), min_size=1, max_size=48),
    st.integers(0, 2**32 - 1), st.sampled_from((0, 3)))
def test_family_heavy_random_code_raises_only_cpu_exceptions(code, seed, cpl):
    run_random_code(bytes(code), seed, cpl)
