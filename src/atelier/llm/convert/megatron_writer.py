"""Writing Megatron checkpoints, streaming.

The writer lays a stage's rank files out from the model's sizes (`stage_entries`) and
streams tensors into all TP files of the stage side by side (`torch_stream`), so each
input layer is read once and memory holds one layer, not one rank file.

What Atelier writes: legacy format nests 'model' the way Megatron-LM's legacy GPTModel
saves it (`names.nest_legacy`); mcore writes the flat state dict (no TE `_extra_state`).
With tied embeddings and PP > 1 the last stage also holds the output-embedding copy
(`word_embeddings_for_head` legacy, `output_layer.weight` mcore), as both frameworks
keep one there; with PP = 1 tied models have no output weight.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from atelier.core.log import get_logger
from atelier.llm.convert.megatron_checkpoint import (
    RANK_FILES,
    TRACKER,
    MegatronLayout,
    rank_dir_name,
)
from atelier.llm.convert.memory import release_freed_memory
from atelier.llm.convert.meta import ModelMeta, megatron_args
from atelier.llm.convert.names import (
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
    vocab_shard_range,
)
from atelier.llm.convert.source import CheckpointSource, vocab_rows
from atelier.llm.convert.torch_stream import StreamingTorchFile, TensorSlot

log = get_logger(__name__)


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
