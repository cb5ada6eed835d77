"""Megatron checkpoints on disk: the folder layout, a lazy reader and a streaming writer.

The writer lays a stage's rank files out from the model's sizes (`stage_entries`) and
streams tensors into all TP files of the stage side by side (`torch_stream`), so each
input layer is read once and memory holds one layer, not one rank file; the reader opens
rank files with mmap for one layer at a time.

Layout (Megatron-LM, MindSpeed-LLM): `latest_checkpointed_iteration.txt` holding an
iteration number or `release`; `iter_0000001/` (or `release/`); one folder per rank,
`mp_rank_{tp:02d}` when PP is 1, else `mp_rank_{tp:02d}_{pp:03d}`; in each,
`model_optim_rng.pt` = {'args', 'checkpoint_version': 3.0, 'iteration', 'model'}.

What Atelier writes: legacy format nests 'model' the way Megatron-LM's legacy GPTModel
saves it (`names.nest_legacy`); mcore writes the flat state dict (no TE `_extra_state`).
With tied embeddings and PP > 1 the last stage also holds the output-embedding copy
(`word_embeddings_for_head` legacy, `output_layer.weight` mcore), as both frameworks
keep one there; with PP = 1 tied models have no output weight.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.assets import ASSETS_DIRNAME
from atelier.llm.convert.memory import release_freed_memory
from atelier.llm.convert.meta import ModelMeta, megatron_args, meta_from_megatron_args
from atelier.llm.convert.names import (
    canonical_legacy_name,
    detect_format,
    flatten,
    names_for,
    nest_legacy,
)
from atelier.llm.convert.overlap import BackgroundWriter
from atelier.llm.convert.sharding import (
    check_tensor_parallel,
    fuse_qkv,
    layer_partition,
    padded_shard,
    padded_vocab_size,
    rank_slice,
    unfuse_gate_up,
    unfuse_qkv,
    vocab_shard_range,
)
from atelier.llm.convert.source import CheckpointSource, vocab_rows
from atelier.llm.convert.torch_stream import StreamingTorchFile, TensorSlot

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


@dataclass
class MegatronTarget:
    """How to shard and name the output."""

    tp: int = 1
    pp: int = 1
    layer_list: list[int] | None = None
    fmt: str = "mcore"
    norms: str = "local"
    divisible_by: int = 128
    dtype: torch.dtype | None = None


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype) if t.dtype != dtype else t


def _vocab_shard(
    source: CheckpointSource, which: str, padded: int, tp_size: int, tp: int
) -> torch.Tensor:
    """Rank `tp`'s rows of the padded embedding or output layer, reading only those rows."""
    true_vocab = source.meta.vocab_size
    start, stop = vocab_shard_range(padded, tp_size, tp)
    hidden = source.meta.hidden_size
    rows = (
        vocab_rows(source, which, start, stop)
        if start < true_vocab
        else torch.empty(0, hidden, dtype=source.meta.dtype)
    )
    if stop <= true_vocab:
        return rows
    last_row = vocab_rows(source, which, true_vocab - 1, true_vocab)
    return padded_shard(rows, last_row.to(rows.dtype), start, stop, true_vocab)


def _rank_layers(
    source: CheckpointSource, meta: ModelMeta, i: int, tp_size: int
) -> list[dict[str, torch.Tensor]]:
    """Layer i, read once, as each TP rank stores it (qkv fused per group, fc1 = [gate; up])."""
    full = {k: _cast(v, meta.dtype) for k, v in source.layer(i).items()}
    groups = meta.num_groups // tp_size
    out = []
    for tp in range(tp_size):
        part = rank_slice(full, tp_size, tp)
        rank = {
            "input_norm": part["input_norm"],
            "qkv": fuse_qkv(part["q"], part["k"], part["v"], groups),
            "proj": part["o"],
            "post_norm": part["post_norm"],
            "fc1": torch.cat([part["gate"], part["up"]], dim=0),
            "fc2": part["down"],
        }
        if meta.qkv_bias:
            rank["qkv_bias"] = fuse_qkv(part["q_bias"], part["k_bias"], part["v_bias"], groups)
        out.append(rank)
    return out


Entry = tuple[str, tuple[int, ...], Callable[[int], torch.Tensor]]


def stage_entries(
    source: CheckpointSource,
    meta: ModelMeta,
    names: dict[str, str],
    stage_layers: range,
    tp_size: int,
    first: bool,
    last: bool,
    pp_size: int,
    padded: int,
) -> list[Entry]:
    """(name, shape per rank, producer(tp)) of every tensor in a stage's rank files.

    All TP ranks of a stage hold the same names and shapes, so the files are laid out
    before any tensor is read and written side by side; a layer is read once and held
    until every rank has taken its part.
    """
    h, d, f = meta.hidden_size, meta.head_dim, meta.ffn_hidden_size
    qkv_rows = (meta.num_heads + 2 * meta.num_groups) * d // tp_size
    shapes = {
        "input_norm": (h,),
        "qkv": (qkv_rows, h),
        "qkv_bias": (qkv_rows,),
        "proj": (h, meta.num_heads * d // tp_size),
        "post_norm": (h,),
        "fc1": (2 * f // tp_size, h),
        "fc2": (h, f // tp_size),
    }
    roles = [
        "input_norm",
        "qkv",
        *(["qkv_bias"] if meta.qkv_bias else []),
        "proj",
        "post_norm",
        "fc1",
        "fc2",
    ]
    vocab_shape = (padded // tp_size, h)
    held: dict[int, list[dict[str, torch.Tensor]]] = {}

    def layer_part(i: int, role: str, tp: int) -> torch.Tensor:
        if i not in held:
            held.clear()  # one layer at a time
            release_freed_memory()
            held[i] = _rank_layers(source, meta, i, tp_size)
        return held[i][tp].pop(role)

    def vocab(which: str, tp: int) -> torch.Tensor:
        return _cast(_vocab_shard(source, which, padded, tp_size, tp), meta.dtype)

    entries: list[Entry] = []
    if first:
        entries.append((names["embed"], vocab_shape, functools.partial(vocab, "embed")))
    for j, i in enumerate(stage_layers):
        entries += [
            (names[r].format(i=j), shapes[r], functools.partial(layer_part, i, r)) for r in roles
        ]
    if last:
        entries.append(
            (names["final_norm"], (h,), lambda tp: _cast(source.final_norm(), meta.dtype).clone())
        )
        if not meta.tied:
            entries.append((names["output"], vocab_shape, functools.partial(vocab, "lm_head")))
        elif pp_size > 1:
            entries.append((names["head_copy"], vocab_shape, functools.partial(vocab, "embed")))
    return entries


def write_megatron(source: CheckpointSource, out: Path, target: MegatronTarget) -> MegatronLayout:
    """Write every rank file of `target` into `out`; one stage's TP files side by side."""
    meta = source.meta if target.dtype is None else replace(source.meta, dtype=target.dtype)
    check_tensor_parallel(target.tp, meta.num_heads, meta.num_groups, meta.ffn_hidden_size)
    layers = layer_partition(meta.num_layers, target.pp, target.layer_list)
    padded = padded_vocab_size(meta.vocab_size, target.divisible_by, target.tp)
    args = megatron_args(
        meta,
        tp=target.tp,
        pp=target.pp,
        layer_list=layers,
        padded_vocab=padded,
        divisible_by=target.divisible_by,
        fmt=target.fmt,
        norms=target.norms,
    )
    names = names_for(target.fmt, target.norms)
    it_dir = out / "iter_0000001"
    (out / TRACKER).write_text("1\n", "utf-8")
    tp_size, pp_size = target.tp, target.pp
    start = 0
    for pp in range(pp_size):
        stage = range(start, start + layers[pp])
        entries = stage_entries(
            source, meta, names, stage, tp_size, pp == 0, pp == pp_size - 1, pp_size, padded
        )
        slots = [TensorSlot(str(k), shape, meta.dtype) for k, (_, shape, _) in enumerate(entries)]
        flat = {name: slot for (name, _, _), slot in zip(entries, slots, strict=True)}
        model = nest_legacy(flat) if target.fmt == "legacy" else flat
        files = []
        for tp in range(tp_size):
            rank_dir = it_dir / rank_dir_name(tp, pp, pp_size)
            rank_dir.mkdir(parents=True, exist_ok=True)
            files.append(
                StreamingTorchFile(
                    rank_dir / RANK_FILES[0],
                    {"args": args, "checkpoint_version": 3.0, "iteration": 1, "model": model},
                    slots,
                )
            )
        with BackgroundWriter() as writer:
            for _, _, produce in entries:
                for tp, f in enumerate(files):
                    writer.submit(f.write, produce(tp))
            for f in files:
                writer.submit(f.close)
        log.info("wrote pipeline stage %d (%d rank files)", pp, tp_size)
        start += layers[pp]
    return MegatronLayout(
        tp=tp_size,
        pp=pp_size,
        layer_list=layers,
        fmt=target.fmt,
        norms=target.norms,
        padded_vocab=padded,
        iteration=1,
    )
