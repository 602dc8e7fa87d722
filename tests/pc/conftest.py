"""Fixtures of the PC tests: one xv6 build per test session (``xv6_build``).

The xv6 source tree is ``$VMI_XV6_SRC``, else /work/shared/data/xv6-public (the
read-only copy CI provides). Without it the xv6 tests are skipped, except under
``CI=true``, where a missing tree is a failure (CI must not go green by skipping
them). Without a host toolchain that can build xv6 (gcc -m32, make, binutils,
perl) they are skipped with the reason. ``xv6_patched`` builds xv6 with vmi's
patch (``--macros``), once per macro set per session.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from attrs import define, field

if TYPE_CHECKING:
    from vmi.pc.xv6 import Xv6Build

#: Where CI lays out the xv6 source tree (shared/data/xv6-public/ABOUT.vmi.md).
DEFAULT_XV6_SOURCE = Path("/work/shared/data/xv6-public")


def xv6_source() -> Path:
    """The xv6 tree the tests build: ``$VMI_XV6_SRC`` or ``DEFAULT_XV6_SOURCE``."""
    return Path(os.environ.get("VMI_XV6_SRC") or DEFAULT_XV6_SOURCE)


def in_ci() -> bool:
    """Whether the run is CI's (``CI`` set to true, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_xv6_source() -> Path:
    """The xv6 tree, or skip the test (fail it under CI) when there is none."""
    from vmi.pc.xv6 import Xv6BuildError, check_source

    source = xv6_source()
    try:
        check_source(source)
    except Xv6BuildError as error:
        reason = f"no xv6 source tree ({error}; set VMI_XV6_SRC)"
        if in_ci():
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return source


def require_toolchain() -> None:
    """Skip the test when the host cannot build xv6 (no gcc -m32, make, ...)."""
    from vmi.pc.xv6 import Xv6BuildError, check_tools

    try:
        check_tools()
    except Xv6BuildError as error:
        pytest.skip(f"cannot build xv6 here: {error}")


def tree_digest(root: Path) -> str:
    """A SHA-256 over every file under ``root``: its relative path, mode, size,
    modification time and contents, and every directory's path and mode; so any
    write to the tree (even one that restores the bytes) changes it."""
    digest = hashlib.sha256()
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        info = os.stat(directory)
        digest.update(f"D {os.path.relpath(directory, root)} {info.st_mode:o}\n".encode())
        for name in sorted(names):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest.update(f"F {os.path.relpath(path, root)} {info.st_mode:o} {info.st_size} "
                          f"{info.st_mtime_ns}\n".encode())
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as file:
                    digest.update(file.read())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def xv6_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Xv6Build, str]:
    """The session's one xv6 build and the digest of its source tree taken just
    before it: ``(Xv6Build, digest)``."""
    from vmi.pc.xv6 import build_xv6

    source = require_xv6_source()
    require_toolchain()
    before = tree_digest(source)
    build = build_xv6(source, tmp_path_factory.mktemp("xv6") / "out")
    return build, before


@pytest.fixture(scope="session")
def xv6_build(xv6_built: tuple[Xv6Build, str]) -> Xv6Build:
    """xv6 built once per test session from the source tree (``vmi.pc.xv6.Xv6Build``:
    ``image`` xv6.img, ``fs_image`` fs.img, ``kernel`` the ELF, ``bootblock``), for
    every test that boots or inspects it. Do not write to its files."""
    return xv6_built[0]


@define(eq=False)
class PatchedBuilds:
    """xv6 built with vmi's patch (``vmi xv6 build --macros``), one build per macro
    set per test session, made when first asked for. ``digest_before`` is the
    source tree's digest taken before the first of them."""

    source: Path
    root: Path
    digest_before: str
    _builds: dict[str, Xv6Build] = field(factory=dict)

    def get(self, macros: str) -> Xv6Build:
        """The build with macro set ``macros`` (``native``, ``vmi``, ``naive``, or
        ``stock``: unpatched, the reference the others are compared with).

        Every build's directory name has the same length: the build path is in the
        user programs' debug information, so a longer one makes every program in
        fs.img longer, and ``ls`` would print other sizes for the same code."""
        from vmi.pc.xv6 import build_xv6

        if macros not in self._builds:
            directory = self.root / macros.ljust(8, "_")
            self._builds[macros] = build_xv6(self.source, directory, macros=macros)
        return self._builds[macros]


@pytest.fixture(scope="session")
def xv6_patched(tmp_path_factory: pytest.TempPathFactory) -> PatchedBuilds:
    """The session's patched xv6 builds: ``xv6_patched.get("vmi")`` and so on."""
    source = require_xv6_source()
    require_toolchain()
    return PatchedBuilds(source=source, root=tmp_path_factory.mktemp("xv6-patched"),
                         digest_before=tree_digest(source))
