"""Megatron checkpoints on disk: the folder layout and a lazy reader.

The reader opens rank files with mmap for one layer at a time. The streaming writer is in
`megatron_writer.py`.

Layout (Megatron-LM, MindSpeed-LLM): `latest_checkpointed_iteration.txt` holding an
iteration number or `release`; `iter_0000001/` (or `release/`); one folder per rank,
`mp_rank_{tp:02d}` when PP is 1, else `mp_rank_{tp:02d}_{pp:03d}`; in each,
`model_optim_rng.pt` = {'args', 'checkpoint_version': 3.0, 'iteration', 'model'}.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.assets import ASSETS_DIRNAME
from atelier.llm.convert.meta import ModelMeta, meta_from_megatron_args
from atelier.llm.convert.names import (
    canonical_legacy_name,
    detect_format,
    flatten,
    names_for,
)
from atelier.llm.convert.sharding import (
    unfuse_gate_up,
    unfuse_qkv,
)

log = get_logger(__name__)
TRACKER = "latest_checkpointed_iteration.txt"
RANK_FILES = ("model_optim_rng.pt", "model_rng.pt")
_RANK_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def rank_dir_name(tp: int, pp: int, pp_size: int) -> str:
    return f"mp_rank_{tp:02d}" if pp_size == 1 else f"mp_rank_{tp:02d}_{pp:03d}"


def iteration_dir(load_dir: Path) -> Path:
    """The folder holding `mp_rank_*`, following the tracker file like Megatron does."""
    if not load_dir.is_dir():
        raise AtelierError(f"--load-dir {load_dir}: not a folder")
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
        f"--load-dir {load_dir}: not a Megatron checkpoint (no {TRACKER}, iter_*/ or "
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
                f"{it_dir}: a distributed checkpoint (--ckpt-format torch_dist), which Atelier "
                "does not read; save it with Megatron's --ckpt-format torch (or "
                "--ckpt-convert-format torch) first"
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
    flat = flatten(model)
    return {canonical_legacy_name(k): v for k, v in flat.items()}


@dataclass
class MegatronLayout:
    tp: int
    pp: int
    layer_list: list[int]
    fmt: str
    norms: str
    padded_vocab: int
    iteration: int | str


class MegatronSource:
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
        flat0 = _flat_model(first, self.files[(0, 0)])
        fmt, norms = detect_format(flat0)
        self.names = names_for(fmt, norms)
        embed0 = flat0.get(self.names["embed"])
        if embed0 is None:
            raise AtelierError(
                f"{self.files[(0, 0)]}: no {self.names['embed']} on the first pipeline stage"
            )
        self.meta: ModelMeta = meta_from_megatron_args(
            self.args, str(self.files[(0, 0)]), embed0.dtype
        )
        layer_list = [self._count_layers(p, flat0 if p == 0 else None) for p in range(pp)]
        if sum(layer_list) != self.meta.num_layers:
            raise AtelierError(
                f"{self.it_dir}: stages hold {layer_list} layers but args say "
                f"num_layers={self.meta.num_layers}"
            )
        self.layout = MegatronLayout(
            tp=tp,
            pp=pp,
            layer_list=layer_list,
            fmt=fmt,
            norms=norms,
            padded_vocab=embed0.shape[0] * tp,
            iteration=first.get("iteration", 0),
        )
        if self.meta.vocab_size > self.layout.padded_vocab:
            raise AtelierError(
                f"{self.files[(0, 0)]}: args give a vocabulary of "
                f"{self.meta.vocab_size} but the embedding has only "
                f"{self.layout.padded_vocab} rows"
            )
        assets = self.load_dir / ASSETS_DIRNAME
        self.assets_dir: Path | None = assets if assets.is_dir() else None
        self._starts = [sum(layer_list[:p]) for p in range(pp)]

    def _count_layers(self, pp: int, flat: dict[str, torch.Tensor] | None) -> int:
        if flat is None:
            flat = _flat_model(load_rank_file(self.files[(0, pp)]), self.files[(0, pp)])
        idx = {int(m.group(1)) for k in flat if (m := _LAYER.search(k))}
        if not idx:
            raise AtelierError(f"{self.files[(0, pp)]}: no transformer layers in this stage")
        if idx != set(range(len(idx))):
            raise AtelierError(
                f"{self.files[(0, pp)]}: layer numbers {sorted(idx)} are not "
                "0..n-1 (Megatron numbers layers locally in each stage)"
            )
        return len(idx)

    def _gather(self, pp: int, roles: list[tuple[str, int]]) -> dict[str, list[torch.Tensor]]:
        """Tensors of `roles` (role, local layer) from every TP rank of stage `pp`.

        Rank files are opened with mmap; the returned tensors are views of the mapping,
        which callers hold for one layer only, so touched pages (which count as RSS)
        are unmapped once that layer is written.
        """
        names = {role: self.names[role].format(i=i) for role, i in roles}
        out: dict[str, list[torch.Tensor]] = {role: [] for role, _ in roles}
        for t in range(self.layout.tp):
            path = self.files[(t, pp)]
            flat = _flat_model(load_rank_file(path), path)
            for role, name in names.items():
                if name not in flat:
                    raise AtelierError(f"{path}: tensor {name!r} is missing")
                out[role].append(flat[name])
            del flat
        return out

    def _one(self, pp: int, role: str) -> list[torch.Tensor]:
        return self._gather(pp, [(role, 0)])[role]

    def embed(self) -> torch.Tensor:
        return torch.cat(self._one(0, "embed"))[: self.meta.vocab_size]

    def final_norm(self) -> torch.Tensor:
        return self._one(self.layout.pp - 1, "final_norm")[0]

    def lm_head(self) -> torch.Tensor | None:
        if self.meta.tied:
            return None
        return torch.cat(self._one(self.layout.pp - 1, "output"))[: self.meta.vocab_size]

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        pp = max(p for p in range(self.layout.pp) if self._starts[p] <= i)
        j = i - self._starts[pp]
        m = self.meta
        roles = ["input_norm", "qkv", "proj", "post_norm", "fc1", "fc2"]
        if m.qkv_bias:
            roles.append("qkv_bias")
        g = self._gather(pp, [(r, j) for r in roles])
        out: dict[str, torch.Tensor] = {"input_norm": g["input_norm"][0]}
        out["q"], out["k"], out["v"] = unfuse_qkv(
            torch.cat(g["qkv"]), m.num_heads, m.num_groups, m.head_dim
        )
        if m.qkv_bias:
            out["q_bias"], out["k_bias"], out["v_bias"] = unfuse_qkv(
                torch.cat(g["qkv_bias"]), m.num_heads, m.num_groups, m.head_dim
            )
        out["o"] = torch.cat(g["proj"], dim=1)
        out["post_norm"] = g["post_norm"][0]
        out["gate"], out["up"] = unfuse_gate_up(g["fc1"])
        out["down"] = torch.cat(g["fc2"], dim=1)
        return out

    def close(self) -> None:
        pass
