"""Where results go: refuse to clobber, write to a temporary folder, rename at the end."""

from __future__ import annotations

from pathlib import Path

from atelier.core.errors import AtelierError


def check_save_dir(save_dir: Path, load_dir: Path, overwrite: bool) -> bool:
    """Validate --save-dir; returns the `overwrite` to give `atomic_dir`.

    An existing empty folder is replaced silently; a non-empty one only with --overwrite,
    and never the folder being read.
    """
    if save_dir.resolve() == load_dir.resolve():
        raise AtelierError(f"--save-dir {save_dir} is the --load-dir; choose another folder")
    if save_dir.exists():
        if not save_dir.is_dir():
            raise AtelierError(f"--save-dir {save_dir} is a file; choose a folder path")
        if any(save_dir.iterdir()) and not overwrite:
            raise AtelierError(
                f"--save-dir {save_dir} is not empty; pass --overwrite to "
                "replace it, or choose a new folder"
            )
        return True
    return False
