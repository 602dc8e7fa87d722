"""``vmi asm``: assemble an AT&T (GNU as) source file into a flat binary image."""

from __future__ import annotations

import os
from pathlib import Path

import click

from vmi.commands import UsageLine, UserError, parse_int

#: The largest source file ``vmi asm`` reads (``.include`` d files have their own
#: limit, ``vmi.asm.assembler.MAX_INCLUDE_SIZE``).
MAX_SOURCE_SIZE = 256 << 20


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # b does not exist yet (or cannot be looked at): not the source


@click.command("asm")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--macros", type=click.Choice(["native", "vmi", "naive", "vmi-split", "none"]),
              default="native", show_default=True,
              help="Macro set for the hook points CLI, STI, IRET, STI_SYSEXIT, GET_CR0, ...")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Image file to write (default: SOURCE with the suffix .bin); "
                   "a name ending in .elf gets an ELF32 executable with the symbols.")
@click.option("--listing", is_flag=True, help="Print the listing: address, bytes, source.")
@click.option("--base", default="0", show_default=True, help="Address of the first byte.")
@click.option("-D", "--define", "defines", multiple=True, metavar="NAME=VALUE",
              help="Define an absolute symbol before the source (repeatable).")
def command(source: Path, macros: str, output: Path | None, listing: bool, base: str,
            defines: tuple[str, ...]) -> None:
    """Assemble SOURCE (GNU as AT&T syntax) into a flat image placed at --base.

    Errors are printed as file:line:col with the source line, all of them (up
    to 20) in one run; the exit status is then 1 and nothing is written. The
    output file is replaced only when complete, and may not be SOURCE itself.
    """
    from vmi.asm import AsmError, assemble
    from vmi.asm.elf import program_sections, write_elf
    from vmi.asm.source import RefusedFile, read_regular_file
    from vmi.files import write_atomically

    address = parse_int(base, "--base")
    if not 0 <= address <= 0xFFFFFFFF:
        raise UsageLine(f"--base: {base} is not a 32-bit address")
    symbols = {}
    for item in defines:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UsageLine(f"--define: {item!r} is not NAME=VALUE")
        symbols[name.strip()] = parse_int(value.strip(), f"--define {name.strip()}")
    target = output if output is not None else source.with_suffix(".bin")
    if _same_file(source, target):
        raise UserError(f"-o {target}: that is the source file; refusing to overwrite it")
    try:
        data = read_regular_file(source, limit=MAX_SOURCE_SIZE, what="source size")
    except RefusedFile as problem:
        raise UserError(f"{source}: {problem}") from None
    except OSError as error:
        raise UserError(f"{source}: {error.strerror or error}") from None
    text = data.decode("utf-8", errors="replace")
    try:
        program = assemble(text, macros=None if macros == "none" else macros, base=address,
                           filename=str(source), defines=symbols or None)
    except AsmError as failure:
        for diagnostic in failure.diagnostics:
            click.echo(diagnostic.format(), err=True)
        errors = len(failure.errors)
        click.echo(f"{source}: {errors} error{'s' if errors != 1 else ''}", err=True)
        raise click.exceptions.Exit(1) from None
    for warning in program.warnings:
        click.echo(warning.format(), err=True)
    elf = target.suffix.lower() == ".elf"
    entry = program.symbols.get("_start", program.base)
    try:
        if elf:
            write_elf(target, program_sections(program), program.symbols, entry)
        else:
            write_atomically(target, lambda out: out.write(program.image))
    except OSError as error:
        raise UserError(f"{target}: {error.strerror or error}") from None
    if listing:
        click.echo(program.format_listing())
    parts = []
    for section in program.sections:
        where = f"{section.name} {section.address:#x}+{section.size:#x}"
        if section.nobits:
            where += " (zero-filled, not in the image)"
        elif not section.loaded:
            where += " (not loaded)"
        parts.append(where)
    notes = f"; {len(program.annotations)} VMI annotations" if program.annotations else ""
    what = f"ELF32 executable, {len(program.symbols)} symbols, entry {entry:#x}" \
        if elf else f"{len(program.image)} bytes at {program.base:#x}"
    click.echo(f"{target}: {what}: {', '.join(parts)}{notes}")
