"""The step debugger and the GDB remote stub.

``Engine`` (``vmi.debugger.engine``) is a pure command engine over a
``vmi.machine.Machine``: ``Engine(machine, symbols).execute("x/4wx $esp")``
returns text and does no terminal I/O. ``vmi.debugger.repl`` is the thin
``cmd.Cmd`` shell of ``vmi debug``; ``vmi.debugger.gdbstub`` serves the
same engine to gdb over the remote serial protocol (``vmi gdbserver``);
``vmi.debugger.loader`` builds the machine both commands start from.
"""

from vmi.debugger.engine import Engine, Stop

__all__ = ["Engine", "Stop"]
