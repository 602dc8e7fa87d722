"""The ``vmi debug`` shell: a thin ``cmd.Cmd`` over the command engine.

Everything a command does is the engine's (``Engine.execute``); the shell only
reads lines and prints what comes back. At a terminal it shows a ``(vmi)``
prompt, keeps history and completes command names, ``$registers`` and
symbols (``vmi.debugger.complete``) through ``readline`` (which ``cmd``
loads only when it reads with ``input()``), and Enter repeats the last
command as in gdb. Through a pipe the prompt is blank, readline is not
touched and an empty line does nothing, so a script of commands on stdin
gives clean output (reference/debugger.md §3).

^C while a command runs asks the engine to stop at the next step (the
command reports "Interrupted after N steps." and where it stopped, and the
prompt comes back); ^C at the prompt prints "Quit" and gives the prompt back;
end of input ends the session.
"""

from __future__ import annotations

import cmd
import signal
import sys
import threading
from typing import Any, TextIO

from vmi.debugger.complete import completions
from vmi.debugger.engine import Engine


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
        self._matches: list[str] = []
        self._delimiters: str | None = None

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
    def preloop(self) -> None:
        """Words are separated by whitespace only, so ``reverse-fi``, ``$es`` and
        ``*bu`` reach the completer whole."""
        if self.use_rawinput:
            try:
                import readline
            except ImportError:
                return
            self._delimiters = readline.get_completer_delims()
            readline.set_completer_delims(" \t\n")

    def postloop(self) -> None:
        if self._delimiters is not None:
            import readline

            readline.set_completer_delims(self._delimiters)
            self._delimiters = None

    def complete(self, text: str, state: int) -> str | None:
        """readline's completer: the candidates for the word before the cursor."""
        if state == 0:
            import readline

            line = readline.get_line_buffer()[:readline.get_endidx()]
            self._matches = completions(self.engine, line)
        return self._matches[state] if state < len(self._matches) else None
