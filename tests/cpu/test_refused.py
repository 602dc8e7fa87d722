"""A feature the model refuses (``UnsupportedSystemFeature``) stops the CPU with EIP
on the refused instruction, not past it, so its state can be inspected or the run
resumed there (vmi/cpu/core.py ``CPU.run``)."""

from __future__ import annotations

import pytest

from tests.cpu.test_protected import CODE, K_CS, system_cpu
from vmi.cpu import segmentation
from vmi.cpu.descriptors import UnsupportedSystemFeature
from vmi.machine import Machine, MachineStopped


def refuse(*args, **kwargs):
    raise UnsupportedSystemFeature("far jump through a feature this test refuses")


def test_instruction_refusal_leaves_eip_on_the_instruction(monkeypatch):
    """The far JMP is refused: EIP stays on it, the NOP before it is counted."""
    monkeypatch.setitem(segmentation.PROTECTED, "jump", refuse)
    cpu = system_cpu(cpl=0)
    cpu.mem.load(CODE, b"\x90\xea\x00\x10\x00\x00\xa0\x00")  # nop; ljmp $0xa0,$0x1000
    cpu.icache.clear()
    with pytest.raises(UnsupportedSystemFeature):
        cpu.run(5)
    assert cpu.eip == CODE + 1 and cpu.instructions == 1


class RefusingPlatform:
    """A platform that refuses every delivery (as a task gate would be refused)."""

    def deliver_exception(self, cpu, exc):
        raise UnsupportedSystemFeature(f"delivery of vector {exc.vector} refused")

    def deliver_interrupt(self, cpu, vector):
        raise UnsupportedSystemFeature(f"delivery of vector {vector} refused")


@pytest.mark.parametrize("code,retired", [
    (b"\xcd\x21", 0),  # int $0x21: a trap, taken back
    (b"\x0f\x0b", 0),  # ud2: a fault
])
def test_refused_delivery_leaves_eip_on_the_instruction(code, retired):
    """INT n and a faulting instruction whose delivery is refused: EIP on the
    instruction, which does not count as retired."""
    cpu = system_cpu(cpl=0)
    cpu.platform = RefusingPlatform()
    cpu.mem.load(CODE, code)
    cpu.icache.clear()
    with pytest.raises(UnsupportedSystemFeature):
        cpu.run(3)
    assert cpu.eip == CODE and cpu.instructions == retired


def test_machine_stopped_names_the_refused_instructions_eip(monkeypatch):
    """MachineStopped's reason carries the EIP of the refused instruction."""
    monkeypatch.setitem(segmentation.PROTECTED, "jump", refuse)
    machine = Machine(cpus=1, memory_size=4 << 20)
    cpu = machine.cpus[0]
    template = system_cpu(cpl=0)
    machine.memory.write_bytes(0, template.mem.read_bytes(0, 0x60000))
    cpu.set_state(template.state())
    machine.memory.write_bytes(CODE, b"\xea\x00\x10\x00\x00\xa0\x00")
    with pytest.raises(MachineStopped) as info:
        machine.run(3)
    assert cpu.eip == CODE and f"eip={CODE:#x}" in info.value.reason
    assert cpu.sreg[1] == K_CS
