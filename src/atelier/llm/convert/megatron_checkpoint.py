"""Megatron checkpoints on disk: the folder layout and a lazy reader.

The reader (`MegatronSource`) opens rank files with mmap for one layer at a time; what it
does with a rank's state dict is shared with in-memory state dicts (`megatron_state.py`).
The streaming writer is in `megatron_writer.py`.

Layout (Megatron-LM, MindSpeed-LLM): `latest_checkpointed_iteration.txt` holding an
iteration number or `release`; `iter_0000001/` (or `release/`); one folder per rank,
`mp_rank_{tp:02d}` when PP is 1, else `mp_rank_{tp:02d}_{pp:03d}`; in each,
`model_optim_rng.pt` = {'args', 'checkpoint_version': 3.0, 'iteration', 'model'}.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.assets import ASSETS_DIRNAME
from atelier.llm.convert.megatron_state import (
    MegatronLayout,
    RankStateReader,
    canonical_flat,
    count_layers,
)
from atelier.llm.convert.meta import ModelMeta, meta_from_megatron_args
from atelier.llm.convert.names import detect_format
from atelier.llm.convert.virtual_pipeline import chunk_key

log = get_logger(__name__)
TRACKER = "latest_checkpointed_iteration.txt"
RANK_FILES = ("model_optim_rng.pt", "model_rng.pt")
_RANK_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")


def rank_dir_name(tp: int, pp: int, pp_size: int) -> str:
    return f"mp_rank_{tp:02d}" if pp_size == 1 else f"mp_rank_{tp:02d}_{pp:03d}"


def iteration_dir(load_dir: Path) -> Path:
    """The folder holding `mp_rank_*`, following the tracker file like Megatron does."""
    if not load_dir.is_dir():
        raise AtelierError(f"load_dir {load_dir}: not a folder")
    tracker = load_dir / TRACKER
    if tracker.is_file():
        text = tracker.read_text("utf-8").strip()
        if text == "release":
            path = load_dir / "release"
        elif text.isdigit():
            path = load_dir / f"iter_{int(text):07d}"
        else:
            raise AtelierError(
                f"{tracker}: expected an iteration number or 'release', found {text[:40]!r}"
            )
        if not path.is_dir():
            raise AtelierError(f"{tracker} names {path.name}/ but {path} does not exist")
        return path
    if any(_RANK_DIR.match(p.name) for p in load_dir.iterdir()):
        return load_dir
    candidates = sorted(
        p
        for p in load_dir.iterdir()
        if p.is_dir() and (p.name == "release" or p.name.startswith("iter_"))
    )
    if candidates:
        return candidates[-1]
    raise AtelierError(
        f"load_dir {load_dir}: not a Megatron checkpoint (no {TRACKER}, iter_*/ or "
        "mp_rank_*/ inside)"
    )


def rank_files(it_dir: Path) -> dict[tuple[int, int], Path]:
    """(tp, pp) -> model file, checking that the grid of ranks is complete."""
    found: dict[tuple[int, int], Path] = {}
    for p in it_dir.iterdir():
        m = _RANK_DIR.match(p.name)
        if not m or not p.is_dir():
            continue
        f = next((p / n for n in RANK_FILES if (p / n).is_file()), None)
        if f is None:
            raise AtelierError(f"{p}: no {RANK_FILES[0]} inside")
        found[(int(m.group(1)), int(m.group(2) or 0))] = f
    if not found:
        if any(p.suffix == ".distcp" or p.name == ".metadata" for p in it_dir.iterdir()):
            raise AtelierError(
                f"{it_dir}: a distributed checkpoint (--ckpt-format torch_dist) without its "
                ".metadata: incomplete (did the save finish?); point --load-dir at a complete one"
            )
        raise AtelierError(f"{it_dir}: no mp_rank_* folders")
    tp = max(k[0] for k in found) + 1
    pp = max(k[1] for k in found) + 1
    missing = [rank_dir_name(t, p, pp) for t in range(tp) for p in range(pp) if (t, p) not in found]
    if missing:
        raise AtelierError(f"{it_dir}: incomplete checkpoint, missing {', '.join(missing)}")
    return found


def load_rank_file(path: Path) -> dict[str, Any]:
    """torch.load with mmap (tensors stay on disk until touched), errors naming the file."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        if "weights_only" not in str(e) and "Unsupported global" not in str(e):
            raise AtelierError(f"{path}: corrupt or truncated checkpoint file ({e})") from None
    try:  # Megatron-LM / MindSpeed args may hold arbitrary objects, as Megatron itself loads
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as e:
        raise AtelierError(f"{path}: corrupt or truncated checkpoint file ({e})") from None


def _flat_model(ckpt: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    model = ckpt.get("model")
    if not isinstance(model, dict):
        raise AtelierError(f"{path}: no 'model' state dict inside")
    return canonical_flat(model)


def _chunk(ckpt: dict[str, Any], v: int, vp: int) -> dict[str, Any]:
    """The rank file as it would look with chunk v as its only `model` (VPP)."""
    return ckpt if vp == 1 else {**ckpt, "model": ckpt.get(chunk_key(v, vp))}


def _chunks(ckpt: dict[str, Any]) -> int:
    """Virtual pipeline chunks in a rank file: `model0`.. (VPP), else 1 (`model`)."""
    n = 0
    while f"model{n}" in ckpt:
        n += 1
    return n if n and "model" not in ckpt else 1


class MegatronSource(RankStateReader):
    """A Megatron checkpoint read lazily: one layer from the T rank files of its stage."""

    def __init__(self, load_dir: str | Path) -> None:
        self.load_dir = Path(load_dir)
        self.it_dir = iteration_dir(self.load_dir)
        self.files = rank_files(self.it_dir)
        tp = max(k[0] for k in self.files) + 1
        pp = max(k[1] for k in self.files) + 1
        first = load_rank_file(self.files[(0, 0)])
        self.args = first.get("args")
        if self.args is None:
            raise AtelierError(
                f"{self.files[(0, 0)]}: no 'args' inside; Atelier needs the "
                "args Megatron saves with every checkpoint"
            )
        # A virtual-pipeline checkpoint is read as P x V stages: its chunks in layer order
        # (chunk v of stage p is reading stage v P + p; virtual_pipeline.py)
        self._pp, vp = pp, _chunks(first)
        flat0 = self._model_state((0, 0), _chunk(first, 0, vp), self.files[(0, 0)])
        fmt, norms = detect_format(flat0)
        meta = meta_from_megatron_args(self.args, str(self.files[(0, 0)]), torch.float32)
        embed_name = meta.fam.embed.name(fmt, norms)
        embed0 = flat0.get(embed_name)
        if embed0 is None:
            raise AtelierError(f"{self.files[(0, 0)]}: no {embed_name} on the first pipeline stage")
        meta.dtype = embed0.dtype
        self.meta: ModelMeta = meta
        stage_names = [(str(self.files[(0, 0)]), set(flat0))]
        layer_list = [count_layers(flat0, str(self.files[(0, 0)]))]
        for s in range(1, pp * vp):
            path = self.files[(0, s % pp)]
            ckpt = _chunk(load_rank_file(path), s // pp, vp)
            flat = self._model_state((0, s % pp), ckpt, path)
            stage_names.append((f"{path} {chunk_key(s // pp, vp)}", set(flat)))
            layer_list.append(count_layers(flat, str(path)))
            del flat
        if sum(layer_list) != self.meta.num_layers:
            raise AtelierError(
                f"{self.it_dir}: stages hold {layer_list} layers but args say "
                f"num_layers={self.meta.num_layers}"
            )
        self.layout = MegatronLayout(
            tp=tp,
            pp=pp * vp,
            layer_list=layer_list,
            fmt=fmt,
            norms=norms,
            padded_vocab=embed0.shape[0] * tp,
            iteration=first.get("iteration", 0),
            vp=vp,
        )
        if self.meta.vocab_size > self.layout.padded_vocab:
            raise AtelierError(
                f"{self.files[(0, 0)]}: args give a vocabulary of "
                f"{self.meta.vocab_size} but the embedding has only "
                f"{self.layout.padded_vocab} rows"
            )
        assets = self.load_dir / ASSETS_DIRNAME
        self.assets_dir: Path | None = assets if assets.is_dir() else None
        self._check_layout(stage_names)

    def _model_state(
        self, key: tuple[int, int], ckpt: dict[str, Any], path: Path
    ) -> Mapping[str, torch.Tensor]:
        """Rank `key`'s flat model state; a subclass may rewrite it (LoRA merging)."""
        return _flat_model(ckpt, path)

    def _rank_state(self, tp: int, pp: int) -> tuple[str, Mapping[str, torch.Tensor]]:
        """Reading stage `pp` (a VPP chunk: file stage pp % P, chunk pp // P)."""
        path, vp = self.files[(tp, pp % self._pp)], self.layout.vp
        ckpt = _chunk(load_rank_file(path), pp // self._pp, vp)
        return str(path), self._model_state((tp, pp % self._pp), ckpt, path)
