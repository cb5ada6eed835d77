"""Is an output folder creatable? Checked up front without creating anything.

`core.paths.output_folder` proves a location by creating it; the lip-sync verbs check
their flags first and create the folder only when they write, so that a run refused for a
later flag (`--pads` is only judged after face detection) leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from atelier.core.errors import AtelierError


def check_creatable(folder: str | os.PathLike[str], flag: str) -> None:
    """`folder` exists as a folder, or can be made: no file in the way, a writable ancestor."""
    folder = Path(folder)
    for p in (folder, *folder.absolute().parents):
        if p.exists():
            if not p.is_dir():
                raise AtelierError(f"{flag}: {p} is a file, not a folder; choose another path")
            if not os.access(p, os.W_OK | os.X_OK):
                raise AtelierError(f"{flag}: {p} is not writable; choose another path")
            return
