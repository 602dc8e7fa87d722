"""Every command the README, docs/cli.md and docs/tutorial.md show is run, and its
output compared with the one shown by shape (tests/docs/doccommands.py says how:
numbers and timings may change, lines, labels and headings may not)."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
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


def test_blocks_are_found_with_their_commands_outputs_and_statuses() -> None:
    (block,) = dc.blocks("sample.md", SAMPLE)
    assert block.line == 3
    first, second = block.commands
    assert first.line == 4 and first.status == 1 and first.elided
    assert first.shown[0] == "header 1,234 cycles in 0.52 s"
    assert second.text == "echo hi" and second.shown == ["hi"] and second.status == 0


def test_shape_ignores_numbers_and_spacing_but_not_words_or_lines() -> None:
    shown = ["header 1,234 cycles in 0.52 s", "  row a   0xc0100740  12", "...", "last line"]
    assert dc.same_shape(shown, ["header 99 cycles in 3 s", "  row a 0xdead    7",
                                 "last line"])
    assert dc.same_shape(shown, ["header 1 cycles in 1 s", "row a 0x1 1", "x", "y",
                                 "last line", ""])
    assert not dc.same_shape(shown, ["header 1 cycles in 1 s", "row b 0x1 1", "last line"])
    assert not dc.same_shape(shown, ["header 1 cycles in 1 s", "row a 0x1 1"])
    assert not dc.same_shape(["a", "b"], ["a", "b", "c"])
    assert not dc.same_shape(["a", "b"], ["a"])
    assert dc.same_shape(["a", "..."], ["a"])
    assert "row a" in dc.first_difference(["header", "row a"], ["header", "row b"])
    # hashes and bare hex addresses are numbers too; words are not
    assert dc.normalise("report hash 97598f4be4a4ec5a") == "report hash #"
    assert dc.normalise("c0100000:  fa  cli") == "#: fa cli"
    assert dc.normalise("a decade of facade") == "a decade of facade"
