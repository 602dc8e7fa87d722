"""Files written whole or not at all, and output paths checked before a long run.

``write_atomically(path, write)`` hands ``write`` a binary file that is a temporary
file in ``path``'s own directory; only when ``write`` returns (and the data is on
disk) is it renamed over ``path``. Renaming within one directory is atomic on
POSIX and Windows (``os.replace``), so a reader sees the old file or the new one,
never half of one, and a failure part way (a full disk, an exception, Ctrl-C)
leaves the old file as it was and no temporary file behind.

``unwritable(path)`` says why ``path`` could not be written (its directory is
missing or not writable, it is a directory, ...) or returns None; commands call
it on their output options before they start work, so a typo costs nothing.
Missing directories are never created: a wrong path is an error, not a surprise
directory tree.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)``: to a temporary file beside it, flushed
    and synced, then renamed over it. On any exception the temporary file is removed,
    ``path`` is untouched, and the exception propagates."""
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        _keep_mode(target, temporary)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _keep_mode(target: Path, temporary: str) -> None:
    """Give the new file the permissions an ordinary ``open(path, "w")`` would: the
    old file's, else the default for new files (mkstemp makes them 0600)."""
    try:
        mode = target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(temporary, mode)


def unwritable(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be written as a new or replaced file, or None if it can.

    Checks what an atomic write needs: the directory exists, is a directory and
    can be written (a temporary file is created there and renamed), and ``path``
    itself is not a directory."""
    target = Path(path)
    if not target.name or target.name in (".", ".."):
        return "not a file name"
    directory = target.parent
    if not directory.exists():
        return f"no such directory: {directory}"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if target.is_dir():
        return "is a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"cannot write in {directory} (permission denied)"
    if target.exists() and not os.access(target, os.W_OK):
        return "the file is read-only (permission denied)"
    return None
