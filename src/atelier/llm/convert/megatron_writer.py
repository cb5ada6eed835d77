"""Writing Megatron checkpoints, streaming.

The writer lays a stage's rank files out from the family table and the model's sizes
(`stage_entries`) and streams tensors into all TP files of the stage side by side
(`torch_stream`), so each input layer is read once and memory holds one layer, not one
rank file. `rank_state_dicts` builds the same state dicts in memory.

What Atelier writes: legacy format nests 'model' the way Megatron-LM's legacy GPTModel
saves it (`names.nest_legacy`); mcore writes the flat state dict (no TE `_extra_state`).
With tied embeddings and PP > 1 the last stage also holds the output-embedding copy
(`word_embeddings_for_head` legacy, `output_layer.weight` mcore), as both frameworks
keep one there; with PP = 1 tied models have no output weight.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.megatron_checkpoint import (
    RANK_FILES,
    TRACKER,
    MegatronLayout,
    rank_dir_name,
)
from atelier.llm.convert.memory import release_freed_memory
from atelier.llm.convert.meta import ModelMeta, megatron_args
from atelier.llm.convert.names import nest_legacy
from atelier.llm.convert.overlap import BackgroundWriter
from atelier.llm.convert.parts import Part
from atelier.llm.convert.sharding import (
    check_tensor_parallel,
    layer_partition,
    padded_shard,
    padded_vocab_size,
    shard_part,
    vocab_shard_range,
)
from atelier.llm.convert.source import CheckpointSource, vocab_rows
from atelier.llm.convert.torch_stream import StreamingTorchFile, TensorSlot
from atelier.llm.convert.virtual_pipeline import chunk_key, virtual_chunks

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
    layers_per_virtual_stage: int | None = None  # VPP (virtual_pipeline.py); None: off


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


Entry = tuple[str, tuple[int, ...], Callable[[int], torch.Tensor]]


def stage_entries(
    source: CheckpointSource,
    meta: ModelMeta,
    target: MegatronTarget,
    stage_layers: range,
    first: bool,
    last: bool,
    padded: int,
) -> list[Entry]:
    """(name, shape per rank, producer(tp)) of every tensor in a stage's rank files.

    Walks the family table: all TP ranks of a stage hold the same names and shapes, so
    the files are laid out before any tensor is read and written side by side; a layer
    is read once and held until every rank has taken its shard.
    """
    fam, tp_size = meta.fam, target.tp
    parts = fam.parts_for(meta)
    held: dict[int, dict[str, torch.Tensor]] = {}

    def name(part: Part, local_layer: int = 0) -> str:
        n = part.name(target.fmt, target.norms)
        assert n is not None  # check_target refused such targets
        return n.format(i=local_layer)

    def layer_part(i: int, part: Part, tp: int) -> torch.Tensor:
        if i not in held:
            held.clear()  # one layer at a time
            release_freed_memory()
            held[i] = {k: _cast(v, meta.dtype) for k, v in source.layer(i).items()}
        full = held[i]
        return shard_part(part, [full[k] for k in part.pieces], meta, tp_size, tp)

    def vocab(which: str, tp: int) -> torch.Tensor:
        return _cast(_vocab_shard(source, which, padded, tp_size, tp), meta.dtype)

    def final_norm(tp: int) -> torch.Tensor:
        return _cast(source.final_norm(), meta.dtype).clone()

    def shape(part: Part) -> tuple[int, ...]:
        return part.rank_shape(meta, tp_size, padded)

    entries: list[Entry] = []
    if first:
        entries.append((name(fam.embed), shape(fam.embed), functools.partial(vocab, "embed")))
    for j, i in enumerate(stage_layers):
        entries += [(name(p, j), shape(p), functools.partial(layer_part, i, p)) for p in parts]
    if last:
        entries.append((name(fam.final_norm), shape(fam.final_norm), final_norm))
        if not meta.tied:
            entries.append(
                (name(fam.output), shape(fam.output), functools.partial(vocab, "lm_head"))
            )
        elif target.pp > 1:
            entries.append(
                (name(fam.head_copy), shape(fam.head_copy), functools.partial(vocab, "embed"))
            )
    return entries


def check_target(meta: ModelMeta, target: MegatronTarget) -> tuple[list[int], int]:
    """Validate `target` for `meta`; returns (layers per stage, padded vocabulary)."""
    check_tensor_parallel(target.tp, meta.num_heads, meta.num_groups, meta.ffn_hidden_size)
    fam = meta.fam
    for part in (*fam.parts_for(meta), *fam.model_parts_for(meta)):
        if part.name(target.fmt, target.norms) is None:
            raise AtelierError(
                f"fmt {target.fmt}: Megatron's {target.fmt} GPTModel has no parameter for "
                f"{fam.name}'s {part.role} ({part.hf[0]}); use fmt mcore"
            )
    layers = layer_partition(meta.num_layers, target.pp, target.layer_list)
    return layers, padded_vocab_size(meta.vocab_size, target.divisible_by, target.tp)


def stage_plans(
    source: CheckpointSource, meta: ModelMeta, target: MegatronTarget
) -> Iterator[tuple[int, list[Entry]]]:
    """(stage, entries) for every pipeline stage of `target`, in order."""
    layers, padded = check_target(meta, target)
    start = 0
    for pp in range(target.pp):
        stage = range(start, start + layers[pp])
        yield pp, stage_entries(source, meta, target, stage, pp == 0, pp == target.pp - 1, padded)
        start += layers[pp]


def rank_state_dicts(
    source: CheckpointSource,
    target: MegatronTarget,
    ranks: Sequence[int] | None = None,
    stages: Sequence[int] | None = None,
) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """The flat state dicts `write_megatron` would save, in memory: {(tp, pp): state}.

    Only the TP `ranks` and pipeline `stages` asked for are built (default all). Names
    follow `target.fmt` flat (legacy names are not nested here; `names.nest_legacy`
    nests them). Tensors are fresh copies, never views of the source.
    """
    if target.layers_per_virtual_stage:
        raise AtelierError("layers_per_virtual_stage: in-memory rank states have no VPP chunks")
    meta = source.meta if target.dtype is None else replace(source.meta, dtype=target.dtype)
    tps = list(range(target.tp)) if ranks is None else list(ranks)
    out: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for pp, entries in stage_plans(source, meta, target):
        if stages is not None and pp not in stages:
            continue
        states = {tp: {} for tp in tps}
        for name, shape, produce in entries:
            for tp in tps:
                t = produce(tp).clone(memory_format=torch.contiguous_format)
                assert tuple(t.shape) == shape, (name, t.shape, shape)
                states[tp][name] = t
        out.update({(tp, pp): states[tp] for tp in tps})
    return out


def write_megatron(source: CheckpointSource, out: Path, target: MegatronTarget) -> MegatronLayout:
    """Write every rank file of `target` into `out`; one stage's TP files side by side.

    With virtual pipeline chunks a stage's file holds `model0` ... `model{V-1}`, written
    one chunk after the other."""
    meta = source.meta if target.dtype is None else replace(source.meta, dtype=target.dtype)
    layers, padded = check_target(meta, target)
    chunks = virtual_chunks(meta.num_layers, target.pp, target.layers_per_virtual_stage, layers)
    vp = len(chunks[0])
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
    if vp > 1:
        args.virtual_pipeline_model_parallel_size = vp
        args.num_layers_per_virtual_pipeline_stage = target.layers_per_virtual_stage
    it_dir = out / "iter_0000001"
    (out / TRACKER).write_text("1\n", "utf-8")
    tp_size, pp_size = target.tp, target.pp
    for pp in range(pp_size):
        per_chunk = [
            stage_entries(
                source,
                meta,
                target,
                layer_range,
                pp == 0 and v == 0,
                pp == pp_size - 1 and v == vp - 1,
                padded,
            )
            for v, layer_range in enumerate(chunks[pp])
        ]
        entries = [e for chunk in per_chunk for e in chunk]
        slots = [TensorSlot(str(k), shape, meta.dtype) for k, (_, shape, _) in enumerate(entries)]
        payload: dict[str, object] = {}
        k = 0
        for v, chunk in enumerate(per_chunk):
            flat = {name: slot for (name, _, _), slot in zip(chunk, slots[k:], strict=False)}
            k += len(chunk)
            payload[chunk_key(v, vp)] = nest_legacy(flat) if target.fmt == "legacy" else flat
        files = []
        for tp in range(tp_size):
            rank_dir = it_dir / rank_dir_name(tp, pp, pp_size)
            rank_dir.mkdir(parents=True, exist_ok=True)
            files.append(
                StreamingTorchFile(
                    rank_dir / RANK_FILES[0],
                    {"args": args, "checkpoint_version": 3.0, "iteration": 1, **payload},
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
    return MegatronLayout(
        tp=tp_size,
        pp=pp_size,
        layer_list=layers,
        fmt=target.fmt,
        norms=target.norms,
        padded_vocab=padded,
        iteration=1,
        vp=vp,
    )
