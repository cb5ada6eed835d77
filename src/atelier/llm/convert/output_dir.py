"""Where results go: never touch what Atelier did not write; one rename at the end.

A trial pointed `mg2hf --save-dir` at the original Hugging Face folder (what the
MindSpeed guide tells users to pass) with `--overwrite`, and the user's own
`model.safetensors` was gone. The rules now:

* Every output folder gets a manifest, `.atelier-output.json`, listing what we wrote.
* An absent or empty `--save-dir` becomes the output.
* A `--save-dir` holding only what the manifest lists is ours: `--overwrite` swaps it
  for the new output in one atomic exchange (it never goes missing).
* A `--save-dir` holding anything else is the user's: nothing in it is replaced or
  deleted, whatever the flags. `mg2hf` then writes into `SAVE/mg2hf/` (as MindSpeed
  does); the other verbs refuse, naming a file that is not ours.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from atelier.core.atomic import atomic_dir, plain_dir_mode, plain_file_mode
from atelier.core.errors import AtelierError, disk_full_at, require_free
from atelier.core.log import get_logger
from atelier.core.paths import output_folder

log = get_logger(__name__)
MANIFEST = ".atelier-output.json"


def _entries(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def _manifest(folder: Path) -> set[str] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return {str(f) for f in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def foreign_files(folder: Path) -> list[str]:
    """Files in `folder` that no Atelier manifest there lists (sorted)."""
    ours = _manifest(folder) or set()
    return sorted(_entries(folder) - ours - {MANIFEST})


def write_manifest(folder: Path, verb: str) -> None:
    files = sorted(_entries(folder) - {MANIFEST})
    (folder / MANIFEST).write_text(
        json.dumps({"written_by": f"atelier llm convert {verb}", "files": files}, indent=1) + "\n",
        "utf-8",
    )


@dataclass
class SaveDir:
    """The folder a conversion writes, decided before any work is done."""

    target: Path
    replace: bool
    sub: str | None = None  # set when the output went into a subfolder of --save-dir


def check_save_dir(save_dir: Path, load_dir: Path, overwrite: bool, verb: str = "") -> SaveDir:
    """Validate --save-dir and decide where the output goes (see the module doc).

    A symlinked --save-dir is followed, so the link itself is never swapped away.
    """
    if save_dir.is_symlink():
        save_dir = save_dir.resolve()
    if save_dir.resolve() == load_dir.resolve():
        raise AtelierError(f"--save-dir {save_dir} is the --load-dir; choose another folder")
    if save_dir.exists() and not save_dir.is_dir():
        raise AtelierError(f"--save-dir {save_dir} is a file; choose a folder path")
    output_folder(save_dir.parent, "--save-dir")
    if not save_dir.exists() or not any(save_dir.iterdir()):
        return SaveDir(save_dir, replace=save_dir.exists())
    foreign = foreign_files(save_dir)
    if not foreign:
        if not overwrite:
            raise AtelierError(
                f"--save-dir {save_dir} holds an earlier Atelier output; pass --overwrite to "
                "replace it, or choose a new folder"
            )
        return SaveDir(save_dir, replace=True)
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    if verb == "mg2hf" and save_dir.name != "mg2hf":
        sub = check_save_dir(save_dir / "mg2hf", load_dir, overwrite, verb)
        sub.sub = "mg2hf"
        log.info(
            "%s holds files Atelier did not write (%s); they stay untouched, the output goes to %s",
            save_dir,
            shown,
            sub.target,
        )
        return sub
    raise AtelierError(
        f"--save-dir {save_dir} holds files Atelier did not write ({shown}); they are never "
        "replaced, even with --overwrite: choose an empty or new folder"
    )


@contextlib.contextmanager
def writing(save: SaveDir, verb: str, needed: int) -> Iterator[Path]:
    """The temporary folder to fill; committed with a manifest, or removed on error.

    `needed` (the bytes about to be written) is checked against the free space
    first, and a full disk on the way is reported at the save folder.
    """
    require_free(save.target.parent, needed)
    with disk_full_at(save.target, needed), atomic_dir(save.target, overwrite=save.replace) as tmp:
        yield tmp
        write_manifest(tmp, verb)
        _plain_modes(tmp)


def _plain_modes(folder: Path) -> None:
    """Modes a plain `open()`/`mkdir` gives under the umask, also for copied assets
    (`shutil.copy2` keeps the source's mode, e.g. a private 0600 tokenizer file)."""
    fmode, dmode = plain_file_mode(), plain_dir_mode()
    for p in folder.rglob("*"):
        if not p.is_symlink():
            p.chmod(dmode if p.is_dir() else fmode)
