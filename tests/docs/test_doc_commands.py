"""Every command the README, docs/cli.md, docs/tutorial.md and docs/race.md show is
run, and its output compared with the one shown exactly, timings aside
(tests/docs/doccommands.py says how; docs/testing.md how to refresh them)."""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.docs import doccommands as dc

CASES = [block for document in dc.DOCUMENTS for block in dc.blocks(document)]


@pytest.fixture(scope="session")
def sessions(request: pytest.FixtureRequest) -> Any:
    """Each document's session (doccommands.run_document), started at once for every
    document with a selected test and run side by side, one thread per document
    (the commands are subprocesses, so the sessions use the cores in parallel)."""
    wanted = [item.callspec.params["block"].document for item in request.session.items
              if hasattr(item, "callspec") and isinstance(item.callspec.params.get("block"),
                                                          dc.Block)]
    documents = list(dict.fromkeys(wanted))
    pool = ThreadPoolExecutor(max_workers=max(1, min(len(documents), os.cpu_count() or 1)))
    futures: dict[str, Future[dict[int, list[dc.Result]]]] = {
        document: pool.submit(dc.run_blocks, [b for b in CASES if b.document == document])
        for document in documents}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("block", CASES, ids=[block.id for block in CASES])
def test_documented_commands_print_what_the_docs_show(block: dc.Block, sessions: Any) -> None:
    failures = []
    for result in sessions[block.document].result()[block.line]:
        for problem in result.problems():
            failures.append(f"{block.document}:{result.command.line}: $ {result.command.text}\n"
                            f"  {problem}")
    assert not failures, "\n".join(failures) + (
        "\n(refresh with: python tests/docs/doccommands.py --update " + block.document + ")")


def test_the_pages_that_teach_the_command_line_have_commands() -> None:
    for document in ("docs/cli.md", "docs/tutorial.md"):
        assert dc.blocks(document), f"{document} has no console block"


def test_cli_md_shows_the_help_of_every_command() -> None:
    from vmi.cli import main

    shown = {command.text.split("#")[0].strip() for block in dc.blocks("docs/cli.md")
             for command in block.commands}
    wanted = {"python -m vmi --help"} | {f"python -m vmi {name} --help"
                                          for name in main.commands}
    assert wanted <= shown, f"docs/cli.md lacks: {sorted(wanted - shown)}"


def test_every_option_of_every_command_is_in_cli_md() -> None:
    from vmi.cli import main

    text = (dc.ROOT / "docs/cli.md").read_text(encoding="utf-8")
    missing = [f"{name} {option}" for name, command in main.commands.items()
               for param in command.params for option in param.opts
               if option.startswith("--") and option not in text]
    assert not missing, f"docs/cli.md does not mention: {missing}"


# -- the checker itself ---------------------------------------------------------------------
SAMPLE = """\
Text.

```console
$ python -m vmi thing --flag   # exit status 1
header 1,234 cycles in 0.52 s
  row a   0xc0100740  12
...
last line
$ echo hi
hi
```

```sh
$ not run
```
"""

#: The README's race summary, as a sample of what is compared exactly and what not.
RACE = [
    "path sysexit: sysenter_exit_path of a sysenter getpid, 11 boundaries (naive)",
    "  map: .........L.",
    "  11 schedules (depth 1); broken: lost-work 1",
    "    vector 0x21 raised at step 9 (machine step 79790), eip 0xc01006c9 sysenter_exit+0xb",
    "explored 117 boundaries, 117 schedules in 2.18 s (189.8 schedules/s, serial)",
    "report hash 39ccf7421d1aea4c",
    "measured in 3.7 s (native 1.4 s, trap-and-emulate 1.0 s, VMI 1.3 s)",
    "  translations/translations-4252263c8cb137e8.marshal: 329,863 bytes, this version; "
    "1,516 instructions, 207 shapes",
]


def _document(tmp_path: Path, body: str) -> str:
    """A document holding ``body`` (console blocks), as the absolute path the doc
    runner takes."""
    path = tmp_path / "doc.md"
    path.write_text("Some text.\n\n" + body, encoding="utf-8")
    return str(path)


def test_blocks_are_found_with_their_commands_outputs_and_statuses() -> None:
    (block,) = dc.blocks("sample.md", SAMPLE)
    assert block.line == 3
    first, second = block.commands
    assert first.line == 4 and first.status == 1 and first.elided
    assert first.shown[0] == "header 1,234 cycles in 0.52 s"
    assert second.text == "echo hi" and second.shown == ["hi"] and second.status == 0


def test_timings_may_change_but_no_deterministic_figure_may() -> None:
    assert dc.same_output(RACE, RACE)
    timings = {"2.18 s": "31.07 s", "189.8 schedules/s": "7.3 schedules/s",
               "3.7 s (native 1.4 s": "12.25 s (native 10.0 s", "VMI 1.3 s": "VMI 0 s",
               "4252263c8cb137e8": "0123456789abcdef", "329,863 bytes": "1,002,117 bytes"}
    other = []
    for line in RACE:
        for old, new in timings.items():
            line = line.replace(old, new)
        other.append(line)
    assert other != RACE and dc.same_output(RACE, other)
    figures = {"report hash 39ccf7421d1aea4c": "report hash 39ccf7421d1aea4d",
               "step 9 (": "step 10 (", "machine step 79790": "machine step 79791",
               "0xc01006c9": "0xc01006ca", "117 boundaries": "118 boundaries",
               "117 schedules in": "116 schedules in", "11 schedules": "12 schedules",
               ".........L.": "........L..", "lost-work 1": "lost-work 2",
               "1,516 instructions": "1,517 instructions", "207 shapes": "208 shapes"}
    for old, new in figures.items():
        changed = [line.replace(old, new) for line in RACE]
        assert changed != RACE, old
        assert not dc.same_output(RACE, changed), f"{old!r} -> {new!r} went unnoticed"
    # blanks inside a line count too; trailing blanks and empty lines do not
    assert not dc.same_output(["a  b"], ["a b"])
    assert dc.same_output(["a b", ""], ["a b   ", "", ""])


def test_elision_matches_any_lines_and_nothing_else_differs() -> None:
    shown = ["header 1,234 cycles in 0.52 s", "  row a   0xc0100740  12", "...", "last line"]
    assert dc.same_output(shown, ["header 1,234 cycles in 0.97 s", "  row a   0xc0100740  12",
                                  "x", "y", "last line", ""])
    assert dc.same_output(shown, ["header 1,234 cycles in 0.5 s", "  row a   0xc0100740  12",
                                  "last line"])
    assert not dc.same_output(shown, ["header 1,235 cycles in 0.52 s",
                                      "  row a   0xc0100740  12", "last line"])
    assert not dc.same_output(shown, ["header 1,234 cycles in 0.52 s", "  row b   0xc0100740  12",
                                      "last line"])
    assert not dc.same_output(shown, ["header 1,234 cycles in 0.52 s", "  row a   0xc0100740  12"])
    assert not dc.same_output(["a", "b"], ["a", "b", "c"])
    assert not dc.same_output(["a", "b"], ["a"])
    assert dc.same_output(["a", "..."], ["a"])
    difference = dc.first_difference(["header", "report hash 39ccf7421d1aea4c"],
                                      ["header", "report hash 39ccf7421d1aea4d"])
    assert "output line 2, column 28" in difference and "39ccf7421d1aea4d" in difference


def test_a_changed_report_hash_in_a_document_fails_and_a_changed_timing_does_not(
        tmp_path: Path) -> None:
    document = _document(tmp_path, """\
```console
$ echo 'explored 30 boundaries, 30 schedules in 9.16 s (3.3 schedules/s, serial)'
explored 30 boundaries, 30 schedules in 1.16 s (275.8 schedules/s, serial)
$ echo 'report hash 97598f4be4a4ec5b'
report hash 97598f4be4a4ec5a
```
""")
    (results,) = dc.run_document(document).values()
    timing, digest = results
    assert timing.problems() == []
    (problem,) = digest.problems()
    assert "report hash 97598f4be4a4ec5b" in problem


def test_the_commands_run_with_the_interpreter_running_the_tests(tmp_path: Path) -> None:
    """``python`` in a doc is sys.executable itself: in a virtual environment (where
    vmi is installed) a link to it elsewhere would start the base interpreter,
    without the environment's packages (``No module named vmi``)."""
    document = _document(tmp_path, """\
```console
$ python -c 'import sys; print(sys.prefix); print(sys.executable)'
$ echo 'import sys; print(sys.prefix)' | python - | cat
$ python -c 'import vmi, os; print(os.path.dirname(os.path.dirname(vmi.__file__)))'
$ command -v vmi >/dev/null || echo no vmi script; echo "$PATH" | cut -d: -f1
```
""")
    (results,) = dc.run_document(document).values()
    for result in results:
        assert result.status == 0 and not result.stderr, (result.command.text, result.stderr)
    assert results[0].stdout == [sys.prefix, sys.executable]
    assert results[1].stdout == [sys.prefix]
    assert results[2].stdout == [str(dc.ROOT)]
    assert results[3].stdout[-1] == os.path.dirname(sys.executable)


def test_update_rewrites_a_changed_output_and_keeps_the_rest(tmp_path: Path) -> None:
    document = _document(tmp_path, """\
```console
$ echo 'steps 192,523'; echo 'took 1.5 s'
steps 192,522
took 0.1 s
$ echo 'took 2.5 s'
took 0.2 s
$ printf 'a\\nb\\nc\\n'
a
...
```

The end.
""")
    done = dc.update(document)
    assert done.rewritten == 1 and done.by_hand == []
    text = Path(document).read_text(encoding="utf-8")
    # the changed command's output replaced (the timing with it), the unchanged
    # command's shown timing kept, the elided one left alone
    assert "steps 192,523\ntook 0.1 s\n$ echo 'took 2.5 s'\ntook 0.2 s\n" in text
    assert "a\n...\n```\n\nThe end.\n" in text
    assert all(not r.problems() for b in dc.run_document(document).values() for r in b)


FAILING = {
    "a module that is not there": ("python -c 'import vmi_no_such_module'", ["hello"],
                                   "No module named"),
    "a non-zero exit the doc does not show": ("echo fine; exit 3", ["fine"],
                                              "exited with status 3, the doc says 0"),
    "a traceback with the status the doc shows": (
        "python -c 'raise SystemExit(1 / 0)'   # exit status 1", ["oops"], "Traceback"),
    "a warning on stderr": ("echo 42; echo 'warning: old cache' >&2", ["41"],
                            "wrote to stderr, which the doc does not show: 'warning: old cache'"),
    "a command not found": ("vmi-no-such-command --flag", [], "exited with status 127"),
}


@pytest.mark.parametrize("case", list(FAILING))
def test_update_refuses_to_write_a_failing_commands_output(tmp_path: Path, case: str) -> None:
    command, shown, reason = FAILING[case]
    body = "```console\n$ echo before\nbefore?\n$ " + command + "\n" + "".join(
        line + "\n" for line in shown) + "```\n"
    document = _document(tmp_path, body)
    before = Path(document).read_text(encoding="utf-8")
    with pytest.raises(dc.Refused) as refused:
        dc.update(document)
    assert Path(document).read_text(encoding="utf-8") == before  # not even 'before' fixed
    (why,) = refused.value.reasons
    assert reason in why and f"{document}:6: $ {command}" in why
    assert dc.main(["--update", document]) == 1
    assert Path(document).read_text(encoding="utf-8") == before


def test_update_keeps_an_error_message_the_doc_announces(tmp_path: Path) -> None:
    """A usage error is output like any other when the doc says the command fails."""
    document = _document(tmp_path, """\
```console
$ echo 'Error: no such option: --frob' >&2; exit 2   # exit status 2
Error: no such option: --fob
```
""")
    assert dc.update(document).rewritten == 1
    assert "exit 2   # exit status 2\nError: no such option: --frob\n```" in Path(
        document).read_text(encoding="utf-8")


def test_an_update_keeps_the_shown_timings_of_lines_it_does_not_change() -> None:
    shown = ["explored 49 boundaries, 49 schedules in 1.25 s (318.6 schedules/s, serial)",
             "report hash 4ccea425effdb334", "invariants broken: nesting"]
    actual = ["explored 49 boundaries, 49 schedules in 2.99 s (247.9 schedules/s, serial)",
              "report hash c7d8a4623c97eeef", "a new line", "invariants broken: nesting"]
    assert dc.merged(shown, actual) == [shown[0], actual[1], "a new line", shown[2]]
