"""``vmi cache``: where the persistent translation cache lives, what it holds (each
file checked as a run checks it: digest, owner and permissions), the assembled
images kept beside it, and ``--clear`` to empty it (``vmi.cpu.codecache``,
``vmi.asm.imagecache``; docs/cli.md, "vmi cache")."""

from __future__ import annotations

import json
import os

import click

from vmi.commands import UserError


@click.command("cache")
@click.option("--clear", "clear_files", is_flag=True,
              help="Delete the translation files, the assembled images and the key, "
                   "damaged or not (they are rebuilt as code runs).")
@click.option("--json", "as_json", is_flag=True, help="Print what is there as one JSON object.")
def command(clear_files: bool, as_json: bool) -> None:
    """Show (or clear) the translation cache that keeps compiled instructions,
    and the assembled guest images, across processes, checking every file's
    digest, owner and permissions. Its directory is $VMI_CACHE_DIR, else
    $XDG_CACHE_HOME/vmi, else ~/.cache/vmi; VMI_CACHE_DIR=off turns it off."""
    from vmi.asm import imagecache
    from vmi.cpu import codecache

    directory = codecache.cache_directory()
    if directory is None:
        report = {"directory": None, "enabled": False, "refused": None, "files": [],
                  "removed": 0, "images": [], "images_removed": 0}
    else:
        if directory.exists() and not directory.is_dir():
            raise UserError(f"vmi cache: {directory} (the cache directory) is not a directory")
        try:
            images_removed = imagecache.clear(directory) if clear_files else 0
            removed = codecache.clear(directory) if clear_files else 0
            found = (codecache.inspect(directory) if directory.is_dir()
                     else {"refused": None, "files": []})
            images = imagecache.inspect(directory) if directory.is_dir() else []
        except OSError as error:
            raise UserError(f"vmi cache: {directory}: {error.strerror or error}") from None
        images.sort(key=_image_order)
        report = {"directory": str(directory), "enabled": True, **found, "removed": removed,
                  "images": images, "images_removed": images_removed}
    if as_json:
        click.echo(json.dumps(report))
        return
    for line in format_report(report, cleared=clear_files):
        click.echo(line)


def format_report(report: dict, *, cleared: bool) -> list[str]:
    """The lines ``vmi cache`` prints for ``report``."""
    if not report["enabled"]:
        why = "VMI_CACHE_DIR=off" if os.environ.get("VMI_CACHE_DIR") else "no home directory"
        return [f"translation cache: off ({why})"]
    lines = [f"translation cache: {report['directory']}"]
    if report["refused"]:
        lines.append(f"refused: {report['refused']}; runs do not use the cache")
    if cleared:
        lines.append(f"removed {report['removed']} file(s)")
    if not report["files"]:
        lines.append("no translation files yet (the first run of some code writes one)")
    for info in report["files"]:
        which = "this version" if info["current"] else "an older version (unused)"
        if "damaged" in info:
            detail = f"DAMAGED: {info['damaged']}; a run drops it and rebuilds it"
        elif "refused" in info:
            detail = f"REFUSED: {info['refused']}; runs do not use the cache"
        elif "unchecked" in info:
            detail = "not checked (the directory is refused)"
        else:
            detail = f"{info['recipes']:,} instructions, {info['shapes']:,} shapes"
        lines.append(f"  {info['path']}: {info['bytes']:,} bytes, {which}; {detail}")
    lines += _image_lines(report, cleared=cleared)
    bad = sum("damaged" in info or "refused" in info
              for info in report["files"] + report["images"])
    if bad:
        lines.append(f"{bad} file(s) failed their check (python -m vmi cache --clear "
                     "deletes them)")
    return lines


def _image_order(info: dict) -> tuple:
    """Images listed by source, macro set and address; damaged ones after, by path."""
    if "source" not in info:
        return (1, info["path"])
    return (0, os.path.basename(info["source"]), info["macros"] or "", info["base"],
            info["path"])


def _image_lines(report: dict, *, cleared: bool) -> list[str]:
    """The lines about the assembled images (``vmi.asm.imagecache``). Good files are
    named by what they hold, which is the same on every machine; the file names
    (a hash that covers the sources' paths) are in ``--json``."""
    images = report["images"]
    lines = []
    if cleared:
        lines.append(f"removed {report['images_removed']} assembled image(s)")
    if not images:
        lines.append("no assembled images yet (the first run of the guest writes them)")
        return lines
    lines.append(f"assembled images: {len(images)} file(s)")
    for info in images:
        if "source" in info:
            macros = f" ({info['macros']} macros)" if info["macros"] else ""
            which = "" if info["current"] else "; an older assembler (unused)"
            lines.append(f"  {os.path.basename(info['source'])}{macros} at {info['base']:#x}: "
                         f"{info['image_bytes']:,} bytes, {info['symbols']:,} symbols{which}")
            continue
        if "damaged" in info:
            detail = f"DAMAGED: {info['damaged']}; a run drops it and assembles again"
        elif "refused" in info:
            detail = f"REFUSED: {info['refused']}; runs do not use the cache"
        else:
            detail = "not checked (the directory is refused)"
        lines.append(f"  {info['path']}: {info['bytes']:,} bytes; {detail}")
    return lines
