"""Any line typed at the debugger gets a string back: the engine never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import example_scale
from tests.debugger.programs import machine_state, open_engine
from vmi.debugger.engine import COMMANDS, INFO_TOPICS

_WORDS = sorted({name for c in COMMANDS for name in (c.name, *c.aliases)} - {"record"})
_ARGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["$esp", "$pc", "*$esp", "loop", "*0x1000", "0x", "-1", "999999999",
                     "at 3", "cpu 1", "(", ")", "$", "1+", "bump+2", "0x1000 4",
                     *[t for names in INFO_TOPICS.values() for t in names]]),
    st.integers(-5, 1 << 33).map(str),
)
_FORMATS = st.from_regex(r"/[0-9]{0,3}[xducotasibhwgq]{0,3}", fullmatch=True)


@st.composite
def command_lines(draw: st.DrawFn) -> str:
    word = draw(st.sampled_from(_WORDS))
    fmt = draw(_FORMATS) if word in ("x", "display", "print", "p") and draw(st.booleans()) else ""
    args = draw(st.lists(_ARGS, max_size=3))
    return " ".join([word + fmt, *args])


@settings(max_examples=150 * example_scale())
@given(st.lists(st.one_of(command_lines(), st.text(max_size=40)), min_size=1, max_size=8))
def test_any_line_returns_a_string(lines):
    engine = open_engine(command_limit=300, step_budget=300)
    for line in lines:
        assert isinstance(engine.execute(line), str)
    # the machine still works and reverse execution still lands exactly
    before = machine_state(engine.machine)
    stop = engine.stepi()
    if stop.reason != "machine-stopped":
        engine.reverse_stepi()
        assert machine_state(engine.machine) == before
