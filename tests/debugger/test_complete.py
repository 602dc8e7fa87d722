"""Tab completion in ``vmi debug`` (issue 17): command words never complete to
symbols, ``$registers`` complete, symbols complete after address commands."""

from __future__ import annotations

import io
import readline

from tests.debugger.programs import open_engine
from vmi.debugger.complete import completions
from vmi.debugger.repl import DebuggerShell


def test_a_command_word_completes_to_commands_only():
    engine = open_engine()
    assert completions(engine, "rev") == ["reverse-continue", "reverse-finish",
                                          "reverse-nexti", "reverse-stepi"]
    assert completions(engine, "reverse-") == completions(engine, "rev")
    assert completions(engine, "reverse-f") == ["reverse-finish"]
    assert completions(engine, "_st") == []  # a symbol is no command
    assert completions(engine, "fi") == ["finish"]
    assert {"awatch", "rwatch", "backtrace", "bt", "up", "down", "frame"} <= \
        set(completions(engine, ""))


def test_registers_complete_after_a_dollar():
    engine = open_engine()
    assert completions(engine, "x $es") == ["$es", "$esi", "$esp"]
    assert completions(engine, "p $ei") == ["$eip"]
    assert completions(engine, "set $ea") == ["$eax"]
    assert completions(engine, "x/4wx $esp+$eb") == ["$esp+$ebp", "$esp+$ebx"]
    assert "$pc" in completions(engine, "display/i $p")


def test_symbols_complete_after_address_commands():
    engine = open_engine()
    assert completions(engine, "break bu") == ["bump"]
    assert completions(engine, "b *bu") == ["*bump"]
    assert completions(engine, "x/4wx cou") == ["counter"]
    assert completions(engine, "print $esp+cou") == ["$esp+counter"]
    assert completions(engine, "until sa") == ["saved"]
    assert completions(engine, "rwatch ti") == ["ticks"]
    assert completions(engine, "stepi bu") == []  # a count, not an address


def test_topics_settings_and_help():
    engine = open_engine()
    assert completions(engine, "info reg") == ["reg", "registers"]
    assert completions(engine, "set st") == ["step-budget"]
    assert completions(engine, "help reverse-n") == ["reverse-nexti"]
    assert completions(engine, "frobnicate x") == []


def test_the_shell_completes_whole_words_through_readline(monkeypatch):
    engine = open_engine()
    shell = DebuggerShell(engine, stdin=io.StringIO(""), stdout=io.StringIO(),
                          interactive=True)
    before = readline.get_completer_delims()
    shell.preloop()
    try:
        assert readline.get_completer_delims() == " \t\n"
        line = "x/2wx $es"
        monkeypatch.setattr(readline, "get_line_buffer", lambda: line)
        monkeypatch.setattr(readline, "get_endidx", lambda: len(line))
        found = []
        state = 0
        while (match := shell.complete("$es", state)) is not None:
            found.append(match)
            state += 1
        assert found == ["$es", "$esi", "$esp"]
    finally:
        shell.postloop()
    assert readline.get_completer_delims() == before
