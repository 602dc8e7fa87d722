"""``vmi xv6``: MIT xv6 (x86) as a guest vmi did not write; ``vmi xv6 build`` builds it
from its source tree (``vmi.pc.xv6``; docs/pc.md, "Building xv6", and docs/cli.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vmi.commands import UserError


@click.group("xv6")
def command() -> None:
    """Build MIT xv6 (x86), the teaching operating system vmi boots as a real guest."""


@command.command("build")
@click.argument("source", metavar="SRC", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, metavar="DIR", type=click.Path(path_type=Path),
              help="The directory to build into (made if missing): xv6.img, fs.img, "
                   "kernel, bootblock, the build tree build/ and make's build.log.")
@click.option("-j", "--jobs", metavar="N", type=click.IntRange(min=1), default=None,
              help="make's parallel jobs (default: one per CPU).")
@click.option("--force", is_flag=True,
              help="Build into a non-empty DIR that holds no earlier build (only the "
                   "names above are replaced).")
@click.option("--macros", type=click.Choice(["stock", "native", "vmi", "naive"]),
              default="stock", metavar="SET",
              help="stock (default): xv6 as it is. native, vmi, naive: with vmi's "
                   "patch, the hooks of cli, sti, readeflags and trapret's iret being "
                   "the plain instructions, VMI hook sites, or inline stores to the "
                   "virtual IF (naive runs only under a hypervisor).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON object.")
def build(source: Path, output: Path, jobs: int | None, force: bool, macros: str,
          as_json: bool) -> None:
    """Build xv6 from its source tree SRC into DIR (SRC is never written).

    xv6's own Makefile runs in a copy of SRC in DIR/build (make's output goes
    to DIR/build.log), with only GCC 12's warnings array-bounds and
    infinite-recursion kept from being errors; the images, the kernel ELF and
    the boot sector are copied into DIR. An earlier build in DIR is replaced.
    With --macros other than stock, vmi's patch is applied to the copy (checked
    against SRC first: a tree it does not fit is refused, nothing written)."""
    from vmi.pc.xv6 import Xv6BuildError, Xv6MakeError, build_xv6

    try:
        result = build_xv6(source, output, jobs=jobs, force=force, macros=macros)
    except Xv6MakeError as error:
        for line in error.tail:
            click.echo(f"  {line}", err=True)
        raise UserError(f"vmi xv6 build: {error}") from None
    except Xv6BuildError as error:
        raise UserError(f"vmi xv6 build: {error}") from None
    report = result.as_dict()
    if as_json:
        click.echo(json.dumps(report))
        return
    for line in format_report(report):
        click.echo(line)


def format_report(report: dict) -> list[str]:
    """The lines ``vmi xv6 build`` prints: one per product with its size, where the
    build tree and log are, and how to boot the result."""
    files = report["files"]
    width = max(len(name) for name in files)
    size_width = max(len(f"{info['bytes']:,}") for info in files.values())
    lines = [f"{name:<{width}}  {info['bytes']:>{size_width},} bytes  {info['path']}"
             for name, info in files.items()]
    lines.append(f"build tree: {report['build']} (make's output: {report['log']})")
    macros = report.get("macros", "stock")
    if macros != "stock":
        sites = report.get("sites") or {}
        counted = ", ".join(f"{name} {count}" for name, count in sites.items())
        lines.append(f"macros: {macros} (vmi's patch; hook sites: "
                     f"{counted or 'none, the hooks are inline'})")
    lines.append(f"boot it: {report['boot']}")
    return lines
