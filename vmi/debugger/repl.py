"""The ``vmi debug`` shell: a thin ``cmd.Cmd`` over the command engine.

Everything a command does is the engine's (``Engine.execute``); the shell only
reads lines and prints what comes back. At a terminal it shows a ``(vmi)``
prompt, keeps history and completes command names and symbols through
``readline`` (which ``cmd`` loads only when it reads with ``input()``), and
Enter repeats the last command as in gdb. Through a pipe the prompt is blank,
readline is not touched and an empty line does nothing, so a script of
commands on stdin gives clean output (reference/debugger.md §3).

^C while a command runs asks the engine to stop at the next step; ^C at the
prompt prints "Quit" and gives the prompt back; end of input ends the
session.
"""

from __future__ import annotations

import cmd
import signal
import sys
import threading
from typing import Any, TextIO

from vmi.debugger.engine import INFO_TOPICS, REGISTER_NAMES, Engine, command_names


class DebuggerShell(cmd.Cmd):
    """Read commands, hand them to ``engine``, print the answers."""

    def __init__(self, engine: Engine, *, stdin: TextIO | None = None,
                 stdout: TextIO | None = None, interactive: bool | None = None) -> None:
        source = stdin if stdin is not None else sys.stdin
        if interactive is None:
            interactive = bool(getattr(source, "isatty", lambda: False)())
        super().__init__(stdin=source, stdout=stdout if stdout is not None else sys.stdout)
        self.engine = engine
        self.interactive = interactive
        self.use_rawinput = interactive  # readline (history, completion) only at a terminal
        self.prompt = "(vmi) " if interactive else ""
        self.identchars += "-"

    def run(self, banner: str = "") -> None:
        """Print the banner and the current place, then read commands to the end."""
        if banner:
            self.stdout.write(banner + "\n")
        self.stdout.write(self.engine.where() + "\n")
        while True:
            try:
                self.cmdloop()
                break
            except KeyboardInterrupt:
                self.stdout.write("\nQuit\n")
        self.engine.close()

    # -- cmd.Cmd hooks ------------------------------------------------------------------
    def onecmd(self, line: str) -> bool:
        if line == "EOF":
            if self.interactive:
                self.stdout.write("\n")
            return True
        if not line.strip():
            return self.emptyline()
        self.lastcmd = line
        output = self._execute(line)
        if output:
            self.stdout.write(output + "\n")
        self.stdout.flush()
        return self.engine.finished

    def emptyline(self) -> bool:
        """Enter repeats the last command at a terminal (gdb's habit); a blank line
        in a script does nothing."""
        if self.interactive and self.lastcmd:
            return self.onecmd(self.lastcmd)
        return False

    def do_EOF(self, args: str) -> bool:  # noqa: N802 (cmd's naming)
        """End of input ends the session."""
        return True

    def _execute(self, line: str) -> str:
        """Run one command with ^C turned into a request to stop the machine."""
        if threading.current_thread() is not threading.main_thread():
            return self.engine.execute(line)

        def stop(signum: int, frame: Any) -> None:
            self.engine.request_stop()

        previous = signal.signal(signal.SIGINT, stop)
        try:
            return self.engine.execute(line)
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- completion (readline, at a terminal) ---------------------------------------------
    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return sorted({name for name in command_names() if name.startswith(text)})

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line.split()
        if words and words[0] in ("info", "i", "inf") and len(words) <= 2:
            topics = {name for names in INFO_TOPICS.values() for name in names}
            return sorted(t for t in topics if t.startswith(text))
        if text.startswith("$"):
            return sorted("$" + r for r in (*REGISTER_NAMES, "pc", "sp", "fp")
                          if ("$" + r).startswith(text))
        bare = text.lstrip("*")
        star = text[: len(text) - len(bare)]
        return sorted(star + s for s in self.engine.symbols if s.startswith(bare))
