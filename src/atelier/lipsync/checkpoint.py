"""Checkpoints in the official format: {state_dict, optimizer, global_step, global_epoch}.

Files are named `checkpoint_step{:09d}.pth` (the discriminator's `disc_checkpoint_...`)
and written atomically, so a crash never leaves a truncated file under a name that
resume would pick. Loading strips the `module.` prefix DataParallel adds, like the
official loaders, and always maps to the CPU first so any device can resume.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from atelier.core.atomic import atomic_file
from atelier.core.errors import AtelierError

NAME = "checkpoint_step{:09d}.pth"
PATTERN = re.compile(r"^checkpoint_step(\d{9})\.pth$")


def _torch_load(path: str | Path) -> Any:
    import torch

    path = Path(path)
    if path.is_dir():
        raise AtelierError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise AtelierError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise AtelierError(f"{path}: empty file, not a torch checkpoint")
    try:
        # weights_only=False: official checkpoints pickle optimizer state and plain ints only,
        # but older torch saved them in ways the weights-only unpickler may refuse.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # corrupt zip, truncated pickle, not a torch file
        raise AtelierError(f"{path}: not a readable torch checkpoint ({e})") from e


def strip_module(state: dict[str, Any]) -> dict[str, Any]:
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """The model weights of an official/atelier checkpoint or a bare state dict."""
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise AtelierError(f"{path}: holds no state dict")
    return strip_module(obj)


def load_into(model: Any, path: str | Path, what: str = "model") -> None:
    """Strict load with a readable message when the file is for another network."""
    state = load_state_dict(path)
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        raise AtelierError(
            f"{path}: not a {what} checkpoint ({len(missing)} of its {len(want)} weights "
            f"missing, e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})"
        )
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError, ValueError) as e:
        # RuntimeError: other shapes; the rest: values that are not tensors
        first = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
        raise AtelierError(f"{path}: not a {what} checkpoint ({first.strip()})") from e


@dataclasses.dataclass
class TrainState:
    global_step: int = 0
    global_epoch: int = 0


def save_checkpoint(
    directory: str | Path,
    model: Any,
    optimizer: Any | None,
    state: TrainState,
    prefix: str = "",
    save_optimizer_state: bool = True,
) -> Path:
    import torch

    path = Path(directory) / (prefix + NAME.format(state.global_step))
    payload = {
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if (optimizer and save_optimizer_state) else None,
        "global_step": state.global_step,
        "global_epoch": state.global_epoch,
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def resume(path: str | Path, model: Any, optimizer: Any | None, what: str = "model") -> TrainState:
    """Load weights (+ optimizer state when present) and the step/epoch counters."""
    load_into(model, path, what)
    ckpt = _torch_load(path)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise AtelierError(f"{path}: optimizer state does not fit this model ({e})") from e
    return TrainState(int(ckpt.get("global_step", 0)), int(ckpt.get("global_epoch", 0)))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = sorted(p for p in Path(directory).glob("checkpoint_step*.pth") if PATTERN.match(p.name))
    return found[-1] if found else None
