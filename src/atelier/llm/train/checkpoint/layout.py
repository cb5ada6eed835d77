"""Where a training run's checkpoints live, which of them Atelier wrote, and which to keep.

Megatron's layout: `SAVE/latest_checkpointed_iteration.txt` names the newest complete
iteration, `SAVE/iter_{:07d}/mp_rank_{tp:02d}[_{pp:03d}]/model_optim_rng.pt` hold the
weights. Atelier adds two things inside each iteration folder: `train_state/` (a
torch.distributed.checkpoint folder with optimizer, scheduler, RNG and data position) and
`atelier_train.json`, the marker saying this trainer wrote the folder, so retention never
deletes a folder someone else (hf2mg, Megatron-LM, the user) put there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from atelier.core.atomic import write_text_atomic
from atelier.core.errors import AtelierError
from atelier.llm.convert.megatron_checkpoint import TRACKER

MARKER = "atelier_train.json"
TRAIN_STATE = "train_state"
_ITER = re.compile(r"^iter_(\d{7,})$")


def iter_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


@dataclass
class SaveRecord:
    """What `atelier_train.json` holds: enough to know how the folder was written."""

    iteration: int
    consumed_train_samples: int
    tp: int
    pp: int
    dp: int
    world_size: int
    params_dtype: str
    written_by: str = "atelier llm train"

    def write(self, folder: Path) -> None:
        (folder / MARKER).write_text(json.dumps(asdict(self), indent=2) + "\n", "utf-8")

    @classmethod
    def read(cls, folder: Path) -> SaveRecord | None:
        path = folder / MARKER
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text("utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise AtelierError(f"{path}: not a readable Atelier checkpoint marker ({e})") from None


def saved_iterations(save: Path) -> dict[int, Path]:
    """iteration -> folder for every complete `iter_*` folder under `save`."""
    if not save.is_dir():
        return {}
    out = {}
    for p in save.iterdir():
        m = _ITER.match(p.name)
        if m and p.is_dir():
            out[int(m.group(1))] = p
    return out


def read_tracker(folder: Path) -> int | str | None:
    """The iteration `latest_checkpointed_iteration.txt` names (or 'release'); None if absent."""
    path = folder / TRACKER
    if not path.is_file():
        return None
    text = path.read_text("utf-8").strip()
    if text == "release":
        return text
    if not text.isdigit():
        raise AtelierError(
            f"{path}: expected an iteration number or 'release', found {text[:40]!r}"
        )
    return int(text)


def write_tracker(save: Path, iteration: int) -> None:
    """Point `latest` at a folder that is already complete (one atomic rename)."""
    write_text_atomic(save / TRACKER, f"{iteration}\n")


def resumable_checkpoint(save: Path) -> Path | None:
    """The latest iteration folder in `save` that this trainer wrote, if the tracker names one."""
    latest = read_tracker(save)
    if not isinstance(latest, int):
        return None
    folder = save / iter_dir_name(latest)
    if folder.is_dir() and SaveRecord.read(folder) is not None:
        return folder
    return None


def check_save_dir(save: Path, flag: str = "--save") -> None:
    """Fail at start, not after hours of training, when `save` cannot be written.

    Nothing is created: the probe file goes into `save` or, when it does not exist yet,
    into the nearest folder above it that does.
    """
    probe = save
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise AtelierError(f"{flag} {save}: {probe} is a file; choose a folder path")
    try:
        fd, name = tempfile.mkstemp(prefix=".atelier-write-test.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise AtelierError(
            f"{flag} {save}: not writable ({e.strerror or e}); choose a folder you can write"
        ) from None


def check_no_foreign_iterations(save: Path, first: int, last: int, flag: str = "--save") -> None:
    """Refuse to start when a save of this run would replace a folder Atelier did not write."""
    for it, folder in sorted(saved_iterations(save).items()):
        if first < it <= last and SaveRecord.read(folder) is None:
            raise AtelierError(
                f"{flag} {save}: {folder.name}/ was not written by atelier llm train and this "
                f"run would save iteration {it} over it; choose another {flag} folder"
            )


def prune(save: Path, keep: int, protect: int | None = None) -> list[Path]:
    """Delete all but the newest `keep` iteration folders that carry Atelier's marker.

    Folders without the marker (hf2mg output, Megatron-LM checkpoints, the user's) are
    never touched, and neither is `protect` (the one the tracker names).
    """
    ours = sorted(
        (it, p) for it, p in saved_iterations(save).items() if SaveRecord.read(p) is not None
    )
    doomed = [p for it, p in ours[: max(0, len(ours) - keep)] if it != protect]
    for p in doomed:
        shutil.rmtree(p)
    return doomed
