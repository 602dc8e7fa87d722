"""``vmi gdbserver``: serve a machine to gdb over the remote serial protocol.

    python -m vmi gdbserver --mode vmi --port 1234      (the bundled kernel)
    python -m vmi gdbserver --program prog.S --port 1234
    gdb -ex 'set architecture i386' -ex 'target remote :1234'

The CPUs are gdb threads; ``monitor CMD`` runs a ``vmi debug`` command;
``reverse-stepi`` and ``reverse-continue`` work. Only 127.0.0.1 is served
unless ``--host`` says otherwise. One client is served at a time: another that
connects meanwhile is told so and closed; a client silent for ``--idle-timeout``
seconds is dropped.
"""

from __future__ import annotations

from typing import Any

import click

from vmi.commands import EXIT_INTERRUPTED, UserError
from vmi.commands.debug import machine_options, open_session


@click.command("gdbserver")
@machine_options
@click.option("--port", default=1234, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port; the one chosen is printed).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (the default serves this machine only).")
@click.option("--once", is_flag=True, help="Exit when the first client disconnects.")
@click.option("--idle-timeout", default=300.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0),
              help="Drop a client that sends nothing for SECONDS while the machine is "
                   "stopped, and serve the next one (0: never).")
@click.option("--symbols", "symbols", metavar="FILE.elf",
              help="Write an ELF file with the code and the symbols of every program the "
                   "session runs (kernel, ROMs, user programs) for gdb's 'file FILE.elf', "
                   "so that 'break restore_nocheck' works.")
def command(port: int, host: str, once: bool, idle_timeout: float, symbols: str | None,
            **options: Any) -> None:
    """Serve the bundled kernel (natively or under the VMI monitor: --mode) or a
    program (--program FILE.S) to gdb."""
    from vmi.debugger.gdbstub import GdbServer

    engine, banner = open_session(options)
    if symbols:
        from vmi.debugger.symfile import write_symbols

        try:
            sections, names = write_symbols(engine, symbols)
        except (OSError, ValueError) as error:
            raise UserError(f"--symbols {symbols}: "
                            f"{getattr(error, 'strerror', None) or error}") from None
        click.echo(f"wrote {symbols}: {sections} sections, {names} symbols "
                   f"(gdb: file {symbols})")
    server = GdbServer(engine, idle_timeout=idle_timeout or None,
                       notice=lambda text: click.echo(text, err=True))
    try:
        chosen = server.listen(host, port)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    click.echo(banner.replace("'help' lists the commands.", "'monitor help' lists the "
                              "commands."))
    click.echo(f"listening on {host}:{chosen} (gdb: target remote {host}:{chosen})")
    try:
        server.serve(once=once)
    except KeyboardInterrupt:  # the usual way to stop a server; still exit status 130
        click.echo("stopped")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    finally:
        server.close()
        engine.close()
