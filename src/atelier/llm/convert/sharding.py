"""Pure tensor functions: how Megatron fuses and splits weights across TP ranks.

Layout facts (Megatron-LM and MindSpeed-LLM agree):
- QKV is fused per query group: for each group, its `heads/groups` query heads,
  then its one key head, then its one value head. TP rank r holds groups
  [r*G/T, (r+1)*G/T), so the fused tensor is split on dim 0.
- gate/up are fused per rank: rank r holds [gate_r; up_r].
- Column-parallel weights (QKV, fc1, embedding, output layer) split on dim 0,
  row-parallel ones (attention output, fc2) on dim 1; norms are replicated.
- No q/k permutation: HF Llama and Megatron both rotate the two halves of a head.

Which rule applies to which tensor is the family table's `Part.split`
(`parts.Split`); `shard_part` / `gather_part` are the only code that fuses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.parts import Part, Split

if TYPE_CHECKING:
    from atelier.llm.convert.meta import ModelMeta


def padded_vocab_size(true_vocab: int, divisible_by: int, tp: int) -> int:
    """Megatron's padding: round up to a multiple of divisible_by * TP."""
    multiple = divisible_by * tp
    return math.ceil(true_vocab / multiple) * multiple


def pad_vocab(weight: torch.Tensor, padded: int) -> torch.Tensor:
    """Pad rows by repeating the last one, as Megatron's checkpoint savers do."""
    extra = padded - weight.shape[0]
    if extra < 0:
        raise ValueError(f"cannot pad {weight.shape[0]} rows down to {padded}")
    if extra == 0:
        return weight
    return torch.cat([weight, weight[-1:].expand(extra, -1)], dim=0)


def valid_tensor_parallel_sizes(num_heads: int, num_groups: int, ffn: int) -> list[int]:
    g = math.gcd(math.gcd(num_heads, num_groups), ffn)
    return [t for t in range(1, g + 1) if g % t == 0]


def check_tensor_parallel(tp: int, num_heads: int, num_groups: int, ffn: int) -> None:
    if tp < 1 or num_heads % tp or num_groups % tp or ffn % tp:
        valid = valid_tensor_parallel_sizes(num_heads, num_groups, ffn)
        raise AtelierError(
            f"tp {tp} must divide the attention heads ({num_heads}), "
            f"query groups ({num_groups}) and FFN size ({ffn}); valid sizes: "
            f"{', '.join(map(str, valid))}"
        )


def layer_partition(num_layers: int, pp: int, layer_list: list[int] | None) -> list[int]:
    """Layers per pipeline stage: `layer_list` when given, else an even split."""
    if pp < 1:
        raise AtelierError(f"pp {pp} must be at least 1")
    if layer_list:
        if len(layer_list) != pp or sum(layer_list) != num_layers or min(layer_list) < 1:
            raise AtelierError(
                f"num_layer_list {','.join(map(str, layer_list))} must have "
                f"{pp} positive entries (one per pipeline stage) summing to {num_layers} layers"
            )
        return list(layer_list)
    if num_layers % pp:
        raise AtelierError(
            f"pp {pp} does not divide {num_layers} layers; "
            f"pass num_layer_list with {pp} entries summing to {num_layers}"
        )
    return [num_layers // pp] * pp


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """[q; k; v] (HF order) -> Megatron's per-group fused QKV (weight or bias)."""
    tail = q.shape[1:]
    parts = [t.reshape(groups, -1, *tail) for t in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(-1, *tail)


def unfuse_qkv(
    qkv: torch.Tensor, num_heads: int, groups: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Megatron's per-group fused QKV -> (q, k, v) in HF order."""
    tail = qkv.shape[1:]
    per = num_heads // groups * head_dim
    grouped = qkv.reshape(groups, per + 2 * head_dim, *tail)
    q, k, v = torch.split(grouped, [per, head_dim, head_dim], dim=1)
    return (q.reshape(-1, *tail), k.reshape(-1, *tail), v.reshape(-1, *tail))


def split_rows(t: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    """Column-parallel shard (dim 0), cloned so the full tensor can be freed."""
    return t.chunk(tp, dim=0)[rank].clone()


def split_cols(t: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    """Row-parallel shard (dim 1), contiguous so it saves compactly."""
    return t.chunk(tp, dim=1)[rank].contiguous()


def fuse_gate_up(gate: torch.Tensor, up: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    return torch.cat([gate.chunk(tp, dim=0)[rank], up.chunk(tp, dim=0)[rank]], dim=0)


def unfuse_gate_up(shards: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    halves = [s.chunk(2, dim=0) for s in shards]
    return torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])


def shard_part(
    part: Part,
    pieces: Sequence[torch.Tensor],
    meta: ModelMeta,
    tp: int,
    rank: int,
    padded_vocab: int | None = None,
) -> torch.Tensor:
    """TP rank `rank`'s shard of `part`, from its full HF-layout pieces (in `part.pieces` order).

    Slicing q/k/v by rank and fusing them with groups/T gives exactly rank r's chunk of
    the fused QKV, because each rank's query groups are contiguous. Replicated and
    dim-0 pieces may be views of the inputs; everything else is a fresh tensor.
    """
    split = part.split
    if split is Split.REPLICATED:
        return pieces[0]
    if split is Split.COLUMN:
        return pieces[0].chunk(tp, dim=0)[rank]
    if split is Split.ROW:
        return split_cols(pieces[0], tp, rank)
    if split is Split.QKV:
        q, k, v = (t.chunk(tp, dim=0)[rank] for t in pieces)
        return fuse_qkv(q, k, v, meta.num_groups // tp)
    if split is Split.GATE_UP:
        return fuse_gate_up(pieces[0], pieces[1], tp, rank)
    full, vocab = pieces[0], meta.vocab_size
    padded = padded_vocab if padded_vocab is not None else vocab
    start, stop = vocab_shard_range(padded, tp, rank)
    rows = full[start : min(stop, vocab)] if start < vocab else full[:0]
    return padded_shard(rows, full[vocab - 1], start, stop, vocab)


def gather_part(part: Part, shards: Sequence[torch.Tensor], meta: ModelMeta) -> tuple:
    """The inverse of `shard_part`: full HF-layout pieces from every TP rank's shard."""
    split = part.split
    if split is Split.REPLICATED:
        return (shards[0],)
    if split is Split.COLUMN:
        return (torch.cat(list(shards), dim=0),)
    if split is Split.ROW:
        return (torch.cat(list(shards), dim=1),)
    if split is Split.QKV:
        return unfuse_qkv(torch.cat(list(shards)), meta.num_heads, meta.num_groups, meta.head_dim)
    if split is Split.GATE_UP:
        return unfuse_gate_up(list(shards))
    return (torch.cat(list(shards))[: meta.vocab_size],)


def vocab_shard_range(padded: int, tp: int, rank: int) -> tuple[int, int]:
    per = padded // tp
    return rank * per, (rank + 1) * per


def padded_shard(
    rows: torch.Tensor, last_row: torch.Tensor, start: int, stop: int, true_vocab: int
) -> torch.Tensor:
    """Rank rows [start, stop) of the padded matrix from the real rows it overlaps.

    `rows` are real rows [start, min(stop, true_vocab)); padding repeats `last_row`.
    """
    extra = stop - max(start, true_vocab)
    if extra <= 0:
        return rows
    return torch.cat([rows, last_row.reshape(1, -1).expand(extra, -1)], dim=0)
