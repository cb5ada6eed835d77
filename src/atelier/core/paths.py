"""Check an output location once, up front, and word the problem with its flag.

Found in trials: `--output-prefix /proc/x`, a prefix under a regular file, a
read-only mount -- each surfaced as a traceback from deep inside a writer.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from atelier.core.errors import AtelierError, from_os_error


def output_folder(folder: str | os.PathLike[str], flag: str) -> Path:
    """Create `folder` if needed and prove a file can be created in it."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise AtelierError(f"{flag}: {p} is a file, not a folder; choose another path")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".atelier-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if e.errno == errno.EEXIST:  # a leftover probe of a recycled pid: harmless
            return folder
        mapped = from_os_error(e) or AtelierError(f"{e.filename or folder}: {e.strerror}")
        raise AtelierError(f"{flag}: {mapped}") from None
    return folder
