"""Writing output files so that a failure never leaves half a file behind.

``write_atomically`` writes to a new file beside the target and renames it over
the target only once every byte is on disk: a reader (or the next build) sees
either the old file or the whole new one. The new file gets the mode a plain
``open(path, "wb")`` would give it (0666 less the umask).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Raises ``OSError`` (the target untouched, the temporary file removed) when
    the directory is not writable, the disk is full, or ``path`` is a directory.
    """
    target = Path(path)
    directory = target.parent
    for attempt in range(100):
        temporary = directory / f".{target.name}.{os.getpid()}.{attempt}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - a hundred stale temporary files of this process id
        raise FileExistsError(f"cannot create a temporary file beside {target}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
