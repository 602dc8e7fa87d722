"""The naive platform: the ``naive`` macro set (virtual IF stored inline, then a plain
``iret``; reference docs/asm.md) on the same monitor, which knows no window. The race
of the seed happens in the kernel's own code, at addresses the monitor cannot know,
whatever the policy."""

from __future__ import annotations

import pytest

from tests.hypervisor import test_window as w
from tests.hypervisor.kit import Guest
from vmi.hypervisor import layout

#: The naive IRET's store of the virtual IF, then `popl %eax; iret`.
STORE = b"\x36\xa3" + layout.VMI_VIF.to_bytes(4, "little")


def naive(policy: str = "defer") -> Guest:
    return Guest(w.KERNEL, w.USER, macros="naive", monitor="naive", policy=policy,
                 defines=w.DEFINES)


def exit_path_pop(g: Guest) -> int:
    """The address of the `popl %eax` after the store in the exit path's IRET."""
    start = g.sym("exit_path") - g.kernel.base
    offset = g.kernel.image.index(STORE + b"\x58\xcf", start)
    return g.kernel.base + offset + len(STORE)


def test_runs_like_native_without_an_interrupt() -> None:
    g = naive()
    g.run()
    assert g.stuck and g.u32(w.MISSED) == 0 and g.var("syscalls") == 4
    stats = g.monitor.stats
    assert g.monitor.policy == "none" and stats.patched_sites == 0
    # WRMSR is a plain wrmsr in the naive set: it traps; so does its raw sysexit
    assert stats.emulated["wrmsr"] == 3 and stats.emulated["sysexit"] == 3
    assert "cli" not in stats.emulated and "sti" not in stats.emulated


@pytest.mark.parametrize("policy", ["defer", "fixup", "none"])
def test_the_inline_window_races_whatever_the_policy(policy: str) -> None:
    g = naive(policy)
    pop = exit_path_pop(g)
    g.run_to(pop, count=2)
    g.interrupt(0x20)
    g.run()
    assert g.stuck
    assert g.var("tick_cs") == 0x61 and g.var("tick_eip") == pop  # nested in the kernel
    assert g.u32(w.MISSED) == 1
    stats = g.monitor.stats
    assert stats.deferred == stats.fixups == stats.nested_in_window == 0  # no window known


def test_events_wait_for_the_next_exit() -> None:
    """The naive STI is a store: nothing delivers what became pending meanwhile until
    the next exit of any kind (here the emulated sysexit, or a timer)."""
    g = naive()
    g.run_to(g.sym("sysenter_entry"), count=2)
    g.interrupt(0x20)  # arrives with the virtual IF clear (SYSENTER cleared it)
    g.run()
    stats = g.monitor.stats
    assert stats.pending_recorded == 1 and g.var("ticks") == 1
    # the STI_SYSEXIT store turned the virtual IF on with the event waiting; the raw
    # sysexit's trap was the next exit, and it found the event stale
    assert stats.stale_pending == 1
    assert g.var("tick_cs") == 0x73 and g.var("tick_eip") == g.sym("back")
