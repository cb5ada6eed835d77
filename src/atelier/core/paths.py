"""Check an output location once, up front, and word the problem with its flag.

Found in trials: `--output-prefix /proc/x`, a prefix under a regular file, a
read-only mount -- each surfaced as a traceback from deep inside a writer.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from atelier.core.atomic import owner_tag
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
    except OSError as e:
        raise _named(flag, e, Path(e.filename) if e.filename else folder) from None
    probe = folder / f".atelier-probe.{owner_tag()}.p.partial"  # our pattern: cleaned if killed
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except FileExistsError:  # a leftover probe of a recycled pid: harmless
        pass
    except OSError as e:
        raise _named(flag, e, folder) from None
    return folder


def _named(flag: str, e: OSError, where: Path) -> AtelierError:
    e.filename = str(where)
    if e.errno == errno.ENOENT:
        return AtelierError(f"{flag}: {where}: cannot be created here ({e.strerror})")
    mapped = from_os_error(e) or AtelierError(f"{where}: {e.strerror}")
    return AtelierError(f"{flag}: {mapped}")


def user_cache(kind: str) -> Path:
    """Atelier's cache folder for `kind` (`$XDG_CACHE_HOME/atelier/<kind>`): derived data
    only, each entry named by the SHA-256 of what it was derived from, so any may go."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "atelier" / kind
