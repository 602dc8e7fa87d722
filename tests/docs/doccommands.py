"""The commands the documentation shows, extracted, run and compared by shape.

The convention (docs/cli.md, "How this page is checked"): inside a fenced block
whose info string is ``console``, a line starting with ``$ `` is a shell command
and the lines after it, up to the next ``$ `` line or the end of the block, are
what it prints (stdout and stderr together). A command may end in a shell comment
``# exit status N`` when it exits with N (default 0). A line ``...`` in the shown
output stands for any number of lines left out. The console blocks of one document
run as one session in a fresh temporary directory, every command in order (so a
block may make a file that a later command or block uses), each command with bash,
``python`` the interpreter running the tests, COLUMNS=80 and no standard input.

Output is compared by **shape**: every line is normalised (numbers, hex numbers
and decimals, hashes and bare hex addresses masked as ``#``, runs of blanks as one
space), and the normalised
lines must be the same, in the same order, the ``...`` lines matching any run of
lines. So cycle counts, timings and addresses may change; a line, a label, a
column heading or a word that disappears or changes fails the comparison.

Run as a script to see or refresh what the commands print now::

    python tests/docs/doccommands.py docs/cli.md            # show differences
    python tests/docs/doccommands.py --update docs/cli.md   # rewrite the outputs

``--update`` rewrites the output of every command whose shown output has no
``...`` line (those are edited by hand) and leaves the rest alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The files whose console blocks are run: the README (once its command blocks
#: use the convention) and the pages that teach the command line.
DOCUMENTS = ("README.md", "docs/cli.md", "docs/tutorial.md", "docs/race.md")
PROMPT = "$ "
ELLIPSIS = "..."
EXIT_STATUS = re.compile(r"#\s*exit status (\d+)\s*$")
#: What is masked: hex numbers (0x.., and bare hex words of 6 or more digits with at
#: least one decimal digit among them: addresses, hashes), then decimal numbers
#: (with thousands separators and decimals).
NUMBER = re.compile(r"0x[0-9a-fA-F]+|\b(?=[0-9a-f]*\d)[0-9a-f]{6,}\b|\d+(?:[.,]\d+)*")
BLANKS = re.compile(r"\s+")
TIMEOUT = 300


@dataclass
class Command:
    line: int  # 1-based line of the ``$`` line in the document
    text: str  # the command, without the prompt
    shown: list[str] = field(default_factory=list)  # the output the document shows

    @property
    def status(self) -> int:
        match = EXIT_STATUS.search(self.text)
        return int(match.group(1)) if match else 0

    @property
    def elided(self) -> bool:
        return any(line.strip() == ELLIPSIS for line in self.shown)


@dataclass
class Block:
    document: str
    line: int  # 1-based line of the opening fence
    commands: list[Command]

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def blocks(document: str, text: str | None = None) -> list[Block]:
    """The console blocks of ``document`` (a path relative to the repository) that
    hold at least one ``$`` command."""
    if text is None:
        text = (ROOT / document).read_text(encoding="utf-8")
    out: list[Block] = []
    fence: str | None = None
    current: Block | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence = stripped[:len(stripped) - len(stripped.lstrip("`"))]
                info = stripped[len(fence):].strip()
                current = Block(document, number, []) if info == "console" else None
            continue
        if stripped == fence:
            if current is not None and current.commands:
                out.append(current)
            fence, current = None, None
            continue
        if current is None:
            continue
        if line.startswith(PROMPT):
            current.commands.append(Command(number, line[len(PROMPT):]))
        elif current.commands:
            current.commands[-1].shown.append(line)
    return out


def normalise(line: str) -> str:
    """A line's shape: numbers masked, blanks collapsed."""
    return BLANKS.sub(" ", NUMBER.sub("#", line)).strip()


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def same_shape(shown: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` has the shape of ``shown`` (``...`` matching any lines)."""
    pattern = [None if line.strip() == ELLIPSIS else normalise(line) for line in _trim(shown)]
    lines = [normalise(line) for line in _trim(actual)]
    # match[i][j]: pattern[i:] matches lines[j:]
    n, m = len(pattern), len(lines)
    match = [[False] * (m + 1) for _ in range(n + 1)]
    match[n][m] = True
    for i in range(n - 1, -1, -1):
        for j in range(m, -1, -1):
            if pattern[i] is None:
                match[i][j] = match[i + 1][j] or (j < m and match[i][j + 1])
            else:
                match[i][j] = j < m and pattern[i] == lines[j] and match[i + 1][j + 1]
    return match[0][0]


def first_difference(shown: list[str], actual: list[str]) -> str:
    """A readable account of where ``actual`` departs from ``shown``."""
    pattern = [line for line in _trim(shown)]
    lines = _trim(actual)
    j = 0
    for line in pattern:
        if line.strip() == ELLIPSIS:
            return ("the output differs after a '...' line; the lines shown:\n  "
                    + "\n  ".join(pattern) + "\nthe lines printed:\n  " + "\n  ".join(lines))
        if j >= len(lines):
            return f"the doc shows {line!r}, the command printed nothing more"
        if normalise(line) != normalise(lines[j]):
            return (f"output line {j + 1}: the doc shows\n  {line!r}\nthe command printed\n"
                    f"  {lines[j]!r}\n(shapes {normalise(line)!r} and {normalise(lines[j])!r})")
        j += 1
    return f"the command printed {len(lines) - j} more line(s), from {lines[j]!r}"


def environment(bin_dir: Path) -> dict[str, str]:
    """The environment a block runs in: ``python`` is this interpreter, 80 columns."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "80"
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONSTARTUP", None)
    return env


def python_shim(directory: Path) -> Path:
    """A directory holding ``python``, a link to the interpreter running this."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "python"
    if not link.exists():
        link.symlink_to(sys.executable)
    return bin_dir


@dataclass
class Result:
    command: Command
    status: int
    output: list[str]

    def problems(self) -> list[str]:
        out = []
        if self.status != self.command.status:
            out.append(f"exit status {self.status}, the doc says {self.command.status}")
        if not same_shape(self.command.shown, self.output):
            out.append(first_difference(self.command.shown, self.output))
        return out


def _run(command: Command, cwd: Path, env: dict[str, str]) -> Result:
    done = subprocess.run(["bash", "-c", command.text], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=TIMEOUT, check=False)
    text = done.stdout.decode("utf-8", "replace").expandtabs()
    return Result(command, done.returncode, [line.rstrip() for line in text.splitlines()])


def run_blocks(chosen: list[Block]) -> dict[int, list[Result]]:
    """Run ``chosen`` (blocks of one document, in order) as one session in a fresh
    directory; the results of each block, by the line of its opening fence."""
    with tempfile.TemporaryDirectory(prefix="vmi-doc-") as scratch:
        base = Path(scratch)
        cwd = base / "work"
        cwd.mkdir()
        env = environment(python_shim(base))
        return {block.line: [_run(command, cwd, env) for command in block.commands]
                for block in chosen}


def run_document(document: str) -> dict[int, list[Result]]:
    """Every console block of ``document``, as one session."""
    return run_blocks(blocks(document))


def update(document: str) -> int:
    """Rewrite the shown output of every un-elided command of ``document``; returns
    the number of commands whose shape differed."""
    path = ROOT / document
    lines = path.read_text(encoding="utf-8").splitlines()
    changed = 0
    replacements: list[tuple[int, int, list[str]]] = []
    for results in run_document(document).values():
        for result in results:
            command = result.command
            if command.elided:
                if result.problems():
                    print(f"{document}:{command.line}: {command.text}: elided output differs "
                          f"(edit by hand): {'; '.join(result.problems())}")
                continue
            if result.problems():
                changed += 1
            start = command.line  # index of the first output line (0-based = line)
            kept = command.shown[len(_trim(command.shown)):]  # blank lines before the next
            replacements.append((start, start + len(command.shown),
                                 _trim(result.output) + kept))
            if result.status != command.status:
                print(f"{document}:{command.line}: {command.text}: exit status "
                      f"{result.status}, the doc says {command.status}")
    for start, end, new in reversed(replacements):
        lines[start:end] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    rewrite = "--update" in argv
    documents = [a for a in argv if a != "--update"] or list(DOCUMENTS)
    status = 0
    for document in documents:
        if rewrite:
            n = update(document)
            print(f"{document}: {n} command(s) rewritten with a new shape")
            continue
        for results in run_document(document).values():
            for result in results:
                problems = result.problems()
                mark = "ok" if not problems else "DIFFERS"
                print(f"{document}:{result.command.line}: {mark}: {result.command.text}")
                for problem in problems:
                    status = 1
                    print("    " + problem.replace("\n", "\n    "))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
