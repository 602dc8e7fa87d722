"""Build MIT xv6 (x86) from its source tree, for vmi to boot as a guest it did not write.

``build_xv6(source, output)`` copies the tree ``source`` to ``output/build`` (the
source is never written: in CI it is read-only), runs xv6's own Makefile there for
``xv6.img`` and ``fs.img``, and copies the images, the kernel ELF (with its symbols,
for the debugger) and the boot sector into ``output`` (docs/pc.md, "Building xv6").

What the build changes from a stock ``make xv6.img fs.img``, and why:

* GCC 12 turns its new ``-Warray-bounds`` finding in ``mp.c`` (and
  ``-Winfinite-recursion`` in ``sh.c``) into errors under xv6's ``-Werror``, so the
  build adds ``-Wno-error=array-bounds -Wno-error=infinite-recursion`` to xv6's
  CFLAGS. Make cannot append to a Makefile's variable from its command line (a
  command-line ``CFLAGS+=...`` replaces xv6's flags), so the build runs
  ``make -f vmi-xv6.mk``, a two-line makefile written next to the copy that
  includes xv6's ``Makefile`` and then appends to CFLAGS. xv6's files stay as they
  are, and the addition is written down in the build tree for anyone to read.
* ``TOOLPREFIX=`` (empty) is given on the command line, so the host tools checked
  here are the ones used, not an ``i386-jos-elf-`` toolchain found on PATH.
* Nothing else: the code generation is the stock one (Debian's ``gcc -m32``
  targets i686, so the kernel holds ``cmovCC``; no ``-march=i486``). QEMU is not
  needed: the Makefile only looks for it when a ``qemu`` target is made.
* The copy is made writable (CI lays the shared tree out without write bits and a
  copy keeps them) and ``make clean`` runs first, so objects built in the source
  tree with other flags are not reused.
* With ``macros`` other than ``stock``, vmi's own patch (``vmi.pc.xv6patch``: the
  seed's hook sites, the VMI ROM probe and Init call) is applied to the copy, with
  that macro set's hooks; the patch is checked against the source before anything
  is written. ``annotations(kernel)`` reads the hook-site records back from the
  kernel ELF (docs/pc.md, "xv6's hook sites").
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs

from vmi.asm.program import Annotation
from vmi.pc.xv6patch import MACRO_SETS, Xv6PatchError, apply, plan

#: Files whose absence means ``source`` is not an xv6 (x86) tree, in the order they
#: are checked: the Makefile and what its xv6.img and fs.img rules need first.
XV6_FILES = ("Makefile", "bootasm.S", "bootmain.c", "entry.S", "kernel.ld", "mp.c",
             "main.c", "mkfs.c", "param.h", "sign.pl", "vectors.pl")
#: The host tools the build runs, each with the Debian package that provides it.
#: gcc and make drive it, as/ld/objcopy/objdump are binutils, perl runs sign.pl and
#: vectors.pl, dd writes the disk image, sed filters kernel.sym.
TOOLS = (("gcc", "gcc"), ("make", "make"), ("as", "binutils"), ("ld", "binutils"),
         ("objcopy", "binutils"), ("objdump", "binutils"), ("perl", "perl"),
         ("dd", "coreutils"), ("sed", "sed"))
#: What the build adds to xv6's CFLAGS (GCC 12 and later; see the module docstring).
EXTRA_CFLAGS = "-Wno-error=array-bounds -Wno-error=infinite-recursion"
#: The makefile written into the build tree; it wraps xv6's own.
WRAPPER = "vmi-xv6.mk"
#: The file in ``output`` that marks it as a directory this module builds into
#: (so a rebuild may replace what an earlier build left there).
MARKER = ".vmi-xv6-build"
#: The subdirectory of ``output`` holding the build tree, and make's log.
BUILD_DIR = "build"
LOG = "build.log"
#: The products copied out of the build tree into ``output``.
PRODUCTS = ("xv6.img", "fs.img", "kernel", "bootblock")
#: Names in ``output`` that are this module's; anything else is the user's.
OURS = frozenset((MARKER, BUILD_DIR, LOG, *PRODUCTS))
#: make's environment loses these, so a make running vmi (``make -n``, ``make -k``,
#: a jobserver) does not change how xv6 is built.
MAKE_ENVIRONMENT_DROPPED = ("MAKEFLAGS", "MFLAGS", "GNUMAKEFLAGS", "MAKELEVEL", "MAKEFILES",
                            "TOOLPREFIX", "QEMU")
#: How many of make's last standard-error lines a failure keeps.
TAIL_LINES = 12


class Xv6BuildError(Exception):
    """A build that cannot start or did not finish; the message is one line naming
    the place and the cause (the CLI prefixes ``vmi xv6 build: ``)."""


class Xv6MakeError(Xv6BuildError):
    """make failed: ``tail`` holds its last standard-error lines, ``log`` the path of
    the full log (standard output and error as they came)."""

    def __init__(self, message: str, *, status: int, tail: list[str], log: Path) -> None:
        super().__init__(message)
        self.status = status
        self.tail = tail
        self.log = log


@attrs.frozen
class Xv6Build:
    """The result of a build: where each product is.

    ``image`` is xv6.img (disk 0: the boot sector then the kernel), ``fs_image``
    fs.img (disk 1: the root file system), ``kernel`` the kernel ELF with its
    symbols, ``bootblock`` the 512-byte signed boot sector, ``build_dir`` the tree
    make ran in (kept: kernel.asm, kernel.sym and the objects are there) and ``log``
    make's output."""

    source: Path
    output: Path
    image: Path
    fs_image: Path
    kernel: Path
    bootblock: Path
    build_dir: Path
    log: Path
    #: The macro set the kernel was built with (``vmi.pc.xv6patch.MACRO_SETS``;
    #: ``stock``: xv6 unpatched).
    macros: str = "stock"

    def files(self) -> dict[str, Path]:
        """The products by file name, in the order they are reported."""
        return {"xv6.img": self.image, "fs.img": self.fs_image, "kernel": self.kernel,
                "bootblock": self.bootblock}

    def boot_command(self) -> str:
        """The command that boots this build (disk 0 xv6.img, disk 1 fs.img)."""
        return ("python -m vmi boot --disk " + shlex.quote(str(self.image))
                + " --disk " + shlex.quote(str(self.fs_image)))

    def as_dict(self) -> dict[str, object]:
        """A JSON-able description: paths, each product's size, the boot command."""
        return {"source": str(self.source), "output": str(self.output),
                "build": str(self.build_dir), "log": str(self.log),
                "files": {name: {"path": str(path), "bytes": path.stat().st_size}
                          for name, path in self.files().items()},
                "boot": self.boot_command(), "macros": self.macros,
                "sites": site_counts(annotations(self.kernel))}


def check_source(source: Path) -> None:
    """Refuse a ``source`` that is missing or not an xv6 (x86) tree, naming the first
    file of ``XV6_FILES`` it lacks."""
    if not source.exists():
        raise Xv6BuildError(f"{source}: no such directory (the xv6 source tree)")
    if not source.is_dir():
        raise Xv6BuildError(f"{source}: not a directory (the xv6 source tree)")
    for name in XV6_FILES:
        if not (source / name).is_file():
            raise Xv6BuildError(f"{source}: not an xv6 (x86) source tree: it has no {name}")


def check_tools() -> None:
    """Refuse to start when a host tool the build runs is not on PATH, or when gcc
    cannot compile 32-bit code (``gcc -m32 -c`` of an empty file, as xv6 needs)."""
    for tool, package in TOOLS:
        if shutil.which(tool) is None:
            raise Xv6BuildError(f"{tool} not found on PATH (install {package}; xv6's "
                                "build needs make, gcc with -m32, binutils and perl)")
    with tempfile.TemporaryDirectory(prefix="vmi-xv6-probe-") as scratch:
        empty = Path(scratch, "empty.c")
        empty.write_text("", encoding="ascii")
        try:
            probe = subprocess.run(["gcc", "-m32", "-c", str(empty), "-o",
                                    str(Path(scratch, "empty.o"))],
                                   capture_output=True, text=True, errors="replace",
                                   timeout=120, env=_c_locale(os.environ))
        except (OSError, subprocess.TimeoutExpired) as error:
            raise Xv6BuildError(f"gcc -m32 -c could not run: {error}") from None
        if probe.returncode != 0:
            said = next((line.strip() for line in probe.stderr.splitlines() if line.strip()),
                        f"exit status {probe.returncode}")
            raise Xv6BuildError(f"gcc cannot compile 32-bit code (gcc -m32 -c of an empty "
                                f"file: {said}); install gcc-multilib")


def check_output(source: Path, output: Path, *, force: bool) -> None:
    """Refuse an ``output`` that would touch the source tree or the user's files.

    ``output`` may be missing (it is made), empty, or hold an earlier build (its
    ``MARKER``); a directory holding anything else is refused unless ``force``
    (which lets the build replace only ``OURS`` in it)."""
    real_source = source.resolve()
    real_output = output.resolve()
    if real_output == real_source or real_source in real_output.parents:
        raise Xv6BuildError(f"-o {output}: inside the source tree {source}, which a build "
                            "never writes; choose a directory outside it")
    build = real_output / BUILD_DIR
    if real_source == build or build in real_source.parents:
        raise Xv6BuildError(f"-o {output}: the source tree {source} is in {output}/{BUILD_DIR}, "
                            "which a build replaces; choose another directory")
    if not output.exists() and not output.is_symlink():
        return
    if not output.is_dir():
        raise Xv6BuildError(f"-o {output}: exists and is not a directory")
    try:
        entries = sorted(os.listdir(output))
    except OSError as error:
        raise Xv6BuildError(f"-o {output}: {error.strerror or error}") from None
    if not entries or MARKER in entries or force:
        return
    foreign = [name for name in entries if name not in OURS] or entries
    shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    raise Xv6BuildError(f"-o {output}: not empty and holds no earlier xv6 build (it has "
                        f"{shown}); choose a new or empty directory, or pass --force to "
                        f"build into it (replacing {', '.join(PRODUCTS)}, {BUILD_DIR}/ "
                        f"and {LOG} there)")


def build_xv6(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
              jobs: int | None = None, force: bool = False,
              macros: str = "stock") -> Xv6Build:
    """Build xv6 from the tree ``source`` into the directory ``output``.

    Checks everything a person can get wrong before writing anything (the source
    tree, the output directory, the host tools; ``Xv6BuildError``), then copies the
    tree to ``output/build``, runs ``make -j jobs xv6.img fs.img`` there (``jobs``
    None: one per CPU) logging to ``output/build.log``, and copies the products
    into ``output``. On a make failure (``Xv6MakeError``) the products of an
    earlier build in ``output`` are left as they were. ``source`` is never written.
    ``macros`` (``stock``, ``native``, ``vmi``, ``naive``) chooses vmi's patch and
    its hooks (``vmi.pc.xv6patch``); ``stock`` builds xv6 as it is.
    """
    source = Path(source)
    output = Path(output)
    if jobs is not None and jobs < 1:
        raise Xv6BuildError(f"--jobs {jobs}: must be at least 1")
    if macros not in MACRO_SETS:
        raise Xv6BuildError(f"--macros {macros}: not a macro set (choose one of "
                            f"{', '.join(MACRO_SETS)})")
    check_source(source)
    try:
        patched = plan(source, macros)
    except Xv6PatchError as error:
        raise Xv6BuildError(str(error)) from None
    check_output(source, output, force=force)
    check_tools()
    build = output / BUILD_DIR
    log = output / LOG
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / MARKER).write_text(json.dumps({"source": str(source.resolve()),
                                                 "macros": macros}) + "\n", encoding="utf-8")
        _remove(build)
        _remove(log)
        shutil.copytree(source, build, ignore=shutil.ignore_patterns(".git"))
        _make_writable(build)
        apply(patched, build)
        (build / WRAPPER).write_text(
            "# Written by vmi (vmi/pc/xv6.py): xv6's Makefile, with GCC 12's new\n"
            "# warnings kept as warnings (-Werror stays on for everything else).\n"
            "include Makefile\n"
            f"CFLAGS += {EXTRA_CFLAGS}\n", encoding="ascii")
    except OSError as error:
        where = error.filename or output
        raise Xv6BuildError(f"{where}: {error.strerror or error}") from None
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    _make(build, log, ["clean"], jobs=1)
    _make(build, log, ["xv6.img", "fs.img"], jobs=jobs)
    try:
        for name in PRODUCTS:
            _copy_out(build / name, output / name)
    except OSError as error:
        raise Xv6BuildError(f"{error.filename or output}: {error.strerror or error}") from None
    return Xv6Build(source=source, output=output, image=output / "xv6.img",
                    fs_image=output / "fs.img", kernel=output / "kernel",
                    bootblock=output / "bootblock", build_dir=build, log=log, macros=macros)


#: The section holding the hook-site records, and the size of one record
#: (``.long site; .byte call, site_length, native_length, 0``; docs/asm.md).
ANNOTATION_SECTION = ".vmi.annotation"
ANNOTATION_RECORD = 8
#: Short names of the VMI calls xv6's sites make, for reports.
CALL_NAMES = {36: "cli", 35: "sti", 37: "pushf", 39: "iret"}


def elf_section(path: str | os.PathLike[str], name: str) -> bytes | None:
    """The contents of section ``name`` of the ELF32 file ``path`` (None if it has no
    such section); ``Xv6BuildError`` if the file is not a readable ELF32 image."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise Xv6BuildError(f"{path}: {error.strerror or error}") from None
    if data[:4] != b"\x7fELF" or len(data) < 52 or data[4] != 1:
        raise Xv6BuildError(f"{path}: not an ELF32 file")
    shoff = int.from_bytes(data[0x20:0x24], "little")
    shentsize = int.from_bytes(data[0x2E:0x30], "little")
    shnum = int.from_bytes(data[0x30:0x32], "little")
    shstrndx = int.from_bytes(data[0x32:0x34], "little")
    headers = []
    for index in range(shnum):
        at = shoff + index * shentsize
        fields = data[at:at + 40]
        if len(fields) < 40:
            raise Xv6BuildError(f"{path}: section header {index} runs past the end of the file")
        headers.append([int.from_bytes(fields[k:k + 4], "little") for k in range(0, 40, 4)])
    if not headers or shstrndx >= len(headers):
        return None
    strings = headers[shstrndx]
    names = data[strings[4]:strings[4] + strings[5]]
    for header in headers:
        end = names.find(b"\0", header[0])
        if names[header[0]:end].decode("latin-1") == name:
            if header[1] == 8:  # SHT_NOBITS
                return bytes(header[5])
            return data[header[4]:header[4] + header[5]]
    return None


def annotations(kernel: str | os.PathLike[str]) -> list[Annotation]:
    """The VMI hook-site records of the kernel ELF ``kernel`` (its
    ``.vmi.annotation`` section), each a ``vmi.asm.Annotation`` (``site``, ``call``,
    ``site_length``, ``native_length``; ``attrs.astuple`` gives the tuple), in the
    order the linker laid them out. A kernel without the section has none."""
    data = elf_section(kernel, ANNOTATION_SECTION)
    if data is None:
        return []
    if len(data) % ANNOTATION_RECORD:
        raise Xv6BuildError(f"{kernel}: {ANNOTATION_SECTION} holds {len(data)} bytes, not "
                            f"whole {ANNOTATION_RECORD}-byte records")
    return [Annotation(int.from_bytes(data[k:k + 4], "little"), data[k + 4], data[k + 5],
                       data[k + 6]) for k in range(0, len(data), ANNOTATION_RECORD)]


def site_counts(notes: list[Annotation]) -> dict[str, int]:
    """How many sites there are per VMI call, by short name (``cli``, ``sti``,
    ``pushf``, ``iret``, in that order; another call as ``call N``); calls without
    a site are left out."""
    counts = dict.fromkeys(CALL_NAMES.values(), 0)
    for note in notes:
        name = CALL_NAMES.get(note.call, f"call {note.call}")
        counts[name] = counts.get(name, 0) + 1
    return {name: count for name, count in counts.items() if count}


def _c_locale(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` with the C locale, so tool messages are plain ASCII English."""
    return {**environment, "LC_ALL": "C"}


def _remove(path: Path) -> None:
    """Delete ``path`` (a tree, a file or a link) if it is there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _make_writable(tree: Path) -> None:
    """Give the owner write permission on everything in ``tree`` (a copy keeps the
    source's modes, and CI's source has no write bits) and execute permission on
    the Perl scripts the Makefile runs as ``./sign.pl`` and ``./vectors.pl``."""
    for directory, _, names in os.walk(tree):
        os.chmod(directory, os.stat(directory).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        for name in names:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode | stat.S_IWUSR
            if name.endswith(".pl"):
                mode |= stat.S_IXUSR
            os.chmod(path, mode)


_ERROR_LINE = re.compile(r"\berror\b|\*\*\*", re.IGNORECASE)


def _make(build: Path, log: Path, targets: list[str], *, jobs: int) -> None:
    """Run xv6's make (through ``WRAPPER``) for ``targets`` in ``build``, appending
    its standard output and error to ``log`` as they come; ``Xv6MakeError`` naming
    the first error line when make fails."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in MAKE_ENVIRONMENT_DROPPED}
    command = ["make", "-f", WRAPPER, f"-j{jobs}", "TOOLPREFIX=", *targets]
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    first_error: str | None = None
    try:
        with open(log, "ab") as sink:
            sink.write(f"$ {shlex.join(command)}\n".encode())
            sink.flush()
            with subprocess.Popen(command, cwd=build, stdin=subprocess.DEVNULL, stdout=sink,
                                  stderr=subprocess.PIPE, env=_c_locale(environment)) as make:
                assert make.stderr is not None
                for raw in make.stderr:
                    sink.write(raw)
                    sink.flush()
                    line = raw.decode("utf-8", "replace").rstrip()
                    tail.append(line)
                    if first_error is None and _ERROR_LINE.search(line):
                        first_error = line.strip()
                status = make.wait()
    except OSError as error:
        raise Xv6BuildError(f"make could not run in {build}: "
                            f"{error.strerror or error}") from None
    if status != 0:
        said = first_error or next((line.strip() for line in reversed(tail) if line.strip()),
                                   "no message")
        raise Xv6MakeError(f"make {' '.join(targets)} failed in {build} (exit status "
                           f"{status}): {said}; the full log is {log}",
                           status=status, tail=list(tail), log=log)


def _copy_out(built: Path, target: Path) -> None:
    """Copy ``built`` to ``target`` through a temporary name and a rename, so an
    interrupted copy never leaves a half-written image under the final name."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(built, partial)
    os.chmod(partial, stat.S_IMODE(os.stat(built).st_mode))
    os.replace(partial, target)
