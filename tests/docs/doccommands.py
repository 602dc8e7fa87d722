"""The commands the documentation shows, extracted, run and compared exactly.

The convention (docs/testing.md, and docs/cli.md, "How this page is checked"):
inside a fenced block whose info string is ``console``, a line starting with ``$ ``
is a shell command and the lines after it, up to the next ``$ `` line or the end of
the block, are what it prints: its standard output, then its standard error. A
command may end in a shell comment ``# exit status N`` when it exits with N
(default 0). A line ``...`` in the shown output stands for any number of lines left
out. The console blocks of one document run as one session in a fresh temporary
directory, every command in order (so a block may make a file that a later command
or block uses), each command with bash, ``python`` the very interpreter running the
tests (``sys.executable``: in a virtual environment, the environment's), that
interpreter's directory first on ``PATH``, COLUMNS=80 and no standard input.

Output is compared **exactly**, line by line (trailing blanks and trailing empty
lines aside), except for the few figures that depend on the machine rather than on
the model (``VARIABLE``: timings in seconds, rates per second, and the translation
cache's file name and size, which follow the Python version). Step, instruction
and cycle counts, report hashes, addresses, schedule counts and race maps are the
model's, the same on every machine, so a changed one fails the comparison.

Run as a script to see or refresh what the commands print now::

    python tests/docs/doccommands.py docs/cli.md            # show differences
    python tests/docs/doccommands.py --update docs/cli.md   # rewrite the outputs
    python tests/docs/doccommands.py --update               # every checked document

``--update`` rewrites the output of every command whose shown output differs and
has no ``...`` line (those are edited by hand), and leaves the rest alone; within a
rewritten output, a line that differs from the shown one only in its timings is
kept as shown. It never
writes an error into a document: when any command of the document fails (an exit
status the document does not show, a Python traceback, ``No module named``, a
command not found, or standard error output the document neither shows nor
announces with a non-zero ``# exit status``) it writes nothing and says why.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The files whose console blocks are run: the README and the pages that teach the
#: command line.
DOCUMENTS = ("README.md", "docs/cli.md", "docs/tutorial.md", "docs/race.md")
PROMPT = "$ "
ELLIPSIS = "..."
EXIT_STATUS = re.compile(r"#\s*exit status (\d+)\s*$")
#: The figures that legitimately differ from machine to machine, each masked (as
#: ``MASK``) before two lines are compared; everything else must be the same.
VARIABLE: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "in 2.18 s", "measured in 3.7 s (native 1.4 s, ...)", "12 ms"
    ("a duration", re.compile(r"\b\d+(?:\.\d+)?(?= m?s\b)")),
    # "189.8 schedules/s", "1,234 instructions/s"
    ("a rate", re.compile(r"\b\d[\d,]*(?:\.\d+)?(?= [a-z]+/s\b)")),
    # the translation cache's file: named after a hash of the processor's sources
    # and the Python version, marshalled in that version's format
    ("a translation file's hash", re.compile(r"(?<=translations-)[0-9a-f]+(?=\.marshal\b)")),
    ("a translation file's size", re.compile(r"(?<=\.marshal: )\d[\d,]*(?= bytes\b)")),
)
MASK = "<~>"
#: Text that only an error prints: output holding it is never written into a doc.
ERROR_MARKS = ("Traceback (most recent call last)", "No module named", "command not found")
TIMEOUT = 300


def masked(line: str) -> str:
    """``line`` with its machine-dependent figures (``VARIABLE``) masked and its
    trailing blanks dropped: what is compared."""
    for _, pattern in VARIABLE:
        line = pattern.sub(MASK, line)
    return line.rstrip()


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
    """The console blocks of ``document`` (a path relative to the repository, or an
    absolute one) that hold at least one ``$`` command."""
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


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def same_output(shown: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` is the output ``shown``: the same lines in the same order
    once the machine-dependent figures are masked, ``...`` matching any lines."""
    pattern = [None if line.strip() == ELLIPSIS else masked(line) for line in _trim(shown)]
    lines = [masked(line) for line in _trim(actual)]
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
    pattern = _trim(shown)
    lines = _trim(actual)
    j = 0
    for line in pattern:
        if line.strip() == ELLIPSIS:
            return ("the output differs after a '...' line; the lines shown:\n  "
                    + "\n  ".join(pattern) + "\nthe lines printed:\n  " + "\n  ".join(lines))
        if j >= len(lines):
            return f"the doc shows {line!r}, the command printed nothing more"
        want, got = masked(line), masked(lines[j])
        if want != got:
            column = next((k for k, (a, b) in enumerate(zip(want, got, strict=False))
                           if a != b), min(len(want), len(got)))
            return (f"output line {j + 1}, column {column + 1}: the doc shows\n  {line!r}\n"
                    f"the command printed\n  {lines[j]!r}")
        j += 1
    return f"the command printed {len(lines) - j} more line(s), from {lines[j]!r}"


def environment() -> dict[str, str]:
    """The environment a block runs in: the directory of the interpreter running
    this first on PATH (so ``vmi`` and the other scripts of a virtual environment
    are its own), 80 columns, UTF-8."""
    env = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "80"
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONSTARTUP", None)
    return env


def script(command: str) -> str:
    """The bash script that runs ``command``: ``python`` is a function calling this
    very interpreter by its path (a link to it elsewhere would lose a virtual
    environment, whose ``pyvenv.cfg`` is found beside the executable's path)."""
    return (f'python() {{ {shlex.quote(sys.executable)} "$@"; }}\n'
            f"export -f python\n{command}\n")


@dataclass
class Result:
    command: Command
    status: int
    stdout: list[str]
    stderr: list[str]

    @property
    def output(self) -> list[str]:
        """What a document shows for the command: its stdout, then its stderr."""
        return _trim(self.stdout) + _trim(self.stderr)

    def problems(self) -> list[str]:
        """How the command's run departs from what the document shows."""
        out = []
        if self.status != self.command.status:
            out.append(f"exit status {self.status}, the doc says {self.command.status}")
        if not same_output(self.command.shown, self.output):
            out.append(first_difference(self.command.shown, self.output))
        return out

    def failure(self) -> str | None:
        """Why this output must not be written into the document (the command
        failed), or None. The document's word counts: a non-zero ``# exit status``
        announces an error message on stderr; otherwise stderr must be shown."""
        reasons = []
        if self.status != self.command.status:
            reasons.append(f"it exited with status {self.status}, "
                           f"the doc says {self.command.status}")
        marked = [line for line in self.output if any(mark in line for mark in ERROR_MARKS)]
        if marked:
            reasons.append(f"it printed {marked[-1].strip()!r}")
        if self.command.status == 0:
            shown = {masked(line) for line in self.command.shown}
            unshown = [line for line in _trim(self.stderr) if masked(line) not in shown]
            if unshown and not marked:
                reasons.append(f"it wrote to stderr, which the doc does not show: "
                               f"{unshown[0]!r}")
        return "; ".join(reasons) or None


def _lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace").expandtabs()
    return [line.rstrip() for line in text.splitlines()]


def _run(command: Command, cwd: Path, env: dict[str, str]) -> Result:
    done = subprocess.run(["bash", "-c", script(command.text)], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=TIMEOUT, check=False)
    return Result(command, done.returncode, _lines(done.stdout), _lines(done.stderr))


def run_blocks(chosen: list[Block]) -> dict[int, list[Result]]:
    """Run ``chosen`` (blocks of one document, in order) as one session in a fresh
    directory; the results of each block, by the line of its opening fence."""
    with tempfile.TemporaryDirectory(prefix="vmi-doc-") as scratch:
        cwd = Path(scratch)
        env = environment()
        return {block.line: [_run(command, cwd, env) for command in block.commands]
                for block in chosen}


def run_document(document: str) -> dict[int, list[Result]]:
    """Every console block of ``document``, as one session."""
    return run_blocks(blocks(document))


def merged(shown: list[str], actual: list[str]) -> list[str]:
    """``actual``, but with each line that equals a shown one once masked kept as
    shown: an update changes only the lines whose deterministic figures or words
    changed, not the timings of every line around them."""
    shown, actual = _trim(shown), _trim(actual)
    matcher = difflib.SequenceMatcher(None, [masked(line) for line in shown],
                                      [masked(line) for line in actual], autojunk=False)
    out: list[str] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        out.extend(shown[i1:i2] if tag == "equal" else actual[j1:j2])
    return out


class Refused(Exception):
    """``update`` wrote nothing: some command failed (the reasons, one a line)."""

    def __init__(self, document: str, reasons: list[str]) -> None:
        super().__init__(f"{document}: not updated, a command failed:\n  "
                         + "\n  ".join(reasons))
        self.reasons = reasons


@dataclass
class Updated:
    rewritten: int  # commands whose shown output was replaced
    by_hand: list[str]  # elided outputs that differ: what to edit by hand, and why


def update(document: str) -> Updated:
    """Rewrite the shown output of every un-elided command of ``document`` whose
    output differs. Raises ``Refused``, writing nothing, when any command of the
    document failed (``Result.failure``)."""
    path = ROOT / document
    lines = path.read_text(encoding="utf-8").splitlines()
    results = [result for block in run_document(document).values() for result in block]
    reasons = [f"{document}:{r.command.line}: $ {r.command.text}: {why}"
               for r in results if (why := r.failure()) is not None]
    if reasons:
        raise Refused(document, reasons)
    replacements: list[tuple[int, int, list[str]]] = []
    by_hand: list[str] = []
    for result in results:
        command = result.command
        if same_output(command.shown, result.output):
            continue
        if command.elided:
            by_hand.append(f"{document}:{command.line}: $ {command.text}: the output "
                           f"around '...' differs, edit it by hand: "
                           f"{first_difference(command.shown, result.output)}")
            continue
        start = command.line  # index of the first output line (0-based = line)
        kept = command.shown[len(_trim(command.shown)):]  # blank lines before the next
        replacements.append((start, start + len(command.shown),
                             merged(command.shown, result.output) + kept))
    for start, end, new in reversed(replacements):
        lines[start:end] = new
    if replacements:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Updated(len(replacements), by_hand)


def main(argv: list[str]) -> int:
    rewrite = "--update" in argv
    documents = [a for a in argv if a != "--update"] or list(DOCUMENTS)
    status = 0
    for document in documents:
        if rewrite:
            try:
                done = update(document)
            except Refused as refused:
                print(refused)
                status = 1
                continue
            print(f"{document}: {done.rewritten} command output(s) rewritten")
            for line in done.by_hand:
                status = 1
                print("  " + line.replace("\n", "\n    "))
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
