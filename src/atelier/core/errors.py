"""One error type for user mistakes, and the mapping of OS errors onto it.

The CLI prints an `AtelierError` as a single line and exits with code 2; anything
else is a bug and keeps its traceback. Messages name the file, line or field and
say how to fix it. A full disk, a read-only or foreign folder, or a path through
a regular file are the user's environment, not bugs: `from_os_error` words them
the same way wherever they surface.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
GB = 1 << 30


class AtelierError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag)."""

    exit_code = 2


class DiskFullError(AtelierError):
    """Not enough free space where an output is written."""


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free space on the filesystem holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return -1


def _gb(n: int) -> str:
    for unit, size in (("GB", GB), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def disk_full(path: str | os.PathLike[str] | None, needed: int | None = None) -> DiskFullError:
    where = str(path) if path else "the output folder"
    free = free_bytes(path) if path else -1
    free_s = f"{_gb(free)} free" if free >= 0 else "free space unknown"
    need_s = f"{_gb(needed)} needed" if needed else "more space needed"
    return DiskFullError(
        f"disk full at {where}: {need_s}, {free_s}; free space or choose another folder"
    )


def require_free(path: str | os.PathLike[str], needed: int, slack: float = 0.02) -> None:
    """Refuse early when `needed` bytes (plus a little slack) will not fit at `path`."""
    free = free_bytes(path)
    if free >= 0 and needed > 0 and free < needed * (1 + slack):
        raise disk_full(path, needed)


_HINTS = {
    errno.EACCES: "permission denied; fix its permissions or use a path this user may access",
    errno.EPERM: "operation not permitted; choose another path",
    errno.EROFS: "read-only filesystem; choose a writable folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EISDIR: "is a folder; give a file path",
    errno.ENAMETOOLONG: "name too long; choose a shorter path",
    errno.ELOOP: "too many symbolic links; fix the path",
    errno.EINVAL: "invalid path or operation here (a special filesystem such as /proc?)",
    errno.EXDEV: "crosses filesystems; choose an output on one filesystem",
    errno.EMFILE: "too many open files; raise `ulimit -n`",
    errno.EIO: "I/O error from the storage; check the disk or mount",
}


def from_os_error(e: OSError) -> AtelierError | None:
    """The one-line `AtelierError` for an OS error caused by the environment, or None."""
    if e.errno in DISK_FULL:
        return disk_full(e.filename)
    hint = _HINTS.get(e.errno or -1)
    if hint is None or (e.filename is None and e.errno not in (errno.EMFILE, errno.EIO)):
        return None
    where = f"{e.filename}: " if e.filename else ""
    return AtelierError(f"{where}{hint} ({e.strerror})")


@contextlib.contextmanager
def disk_full_at(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[None]:
    """Name `path` when a write inside the block hits a full disk (`write()` errors
    carry no file name, so the CLI could otherwise only say "the output folder")."""
    try:
        yield
    except OSError as e:
        if e.errno in DISK_FULL:
            raise disk_full(path, needed) from None
        raise
