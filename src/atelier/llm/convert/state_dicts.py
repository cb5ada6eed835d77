"""In-memory conversions between Hugging Face and Megatron state dicts.

The same table-driven code as the file converters (`megatron_writer.rank_state_dicts`,
`megatron_state.RankStateReader`, `hf_checkpoint.hf_tensors`), so a rank built here is
tensor-for-tensor what `hf2mg` writes, and a model gathered here is what `mg2hf` writes.
For the trainer: load an HF folder or a checkpoint of another TP straight into a rank.

- `hf_to_megatron_rank(hf_state, meta, tp, rank)`: one TP rank's flat Megatron state
  dict (mcore local names by default) from a full HF state dict.
- `source_to_megatron_rank(source, tp, rank)`: the same from any `CheckpointSource`
  (`HFSource` reads an HF folder lazily, `MegatronSource` a checkpoint on disk).
- `megatron_ranks_to_hf(rank_states, meta)`: the full HF state dict from TP rank states.
- `megatron_ranks_to_hf(..., lora=LoraSpec(r, alpha, targets))`: a LoRA run's ranks merged;
  `megatron_ranks_to_peft(rank_states, meta, spec)`: its adapters as a PEFT adapter.
- `reshard(rank_states, meta, tp_from, tp_to)`: rank states for another TP.
- `HFStateSource` / `StateDictSource`: in-memory `CheckpointSource`s for the writers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.hf_checkpoint import hf_tensors
from atelier.llm.convert.lora import (
    LoraSpec,
    exportable_adapters,
    merged_rank,
)
from atelier.llm.convert.lora_peft import hf_adapters, peft_adapter_config, peft_state_dict
from atelier.llm.convert.megatron_state import StateDictSource, canonical_flat
from atelier.llm.convert.megatron_writer import MegatronTarget, rank_state_dicts
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.names import detect_format
from atelier.llm.convert.source import CheckpointSource

__all__ = [
    "HFStateSource",
    "StateDictSource",
    "hf_to_megatron_rank",
    "megatron_ranks_to_hf",
    "megatron_ranks_to_peft",
    "reshard",
    "source_to_megatron_rank",
]


class HFStateSource:
    """A full Hugging Face state dict in memory, read like an HF folder."""

    def __init__(
        self,
        hf_state: Mapping[str, torch.Tensor],
        meta: ModelMeta,
        *,
        assets_dir: Path | None = None,
    ) -> None:
        self.meta = meta
        self.assets_dir = assets_dir
        self._state = hf_state
        fam = meta.fam
        self._names = fam.hf_names()
        wanted = [fam.embed.hf[0], fam.final_norm.hf[0]]
        if not meta.tied:
            wanted += fam.output.hf
        for part in fam.parts_for(meta):
            wanted += [t.format(i=i) for i in range(meta.num_layers) for t in part.hf]
        missing = [n for n in wanted if n not in hf_state]
        if missing:
            raise AtelierError(
                f"hf_state: tensor {missing[0]!r} is missing"
                + (f" ({len(missing)} missing)" if len(missing) > 1 else "")
            )

    def embed(self) -> torch.Tensor:
        return self._state[self._names["embed"]][: self.meta.vocab_size]

    def final_norm(self) -> torch.Tensor:
        return self._state[self._names["final_norm"]]

    def lm_head(self) -> torch.Tensor | None:
        if self.meta.tied:
            return None
        return self._state[self._names["lm_head"]][: self.meta.vocab_size]

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        out = {}
        for part in self.meta.fam.parts_for(self.meta):
            for piece, template in zip(part.pieces, part.hf, strict=True):
                out[piece] = self._state[template.format(i=i)]
        return out

    def close(self) -> None:
        pass


def source_to_megatron_rank(
    source: CheckpointSource,
    tp: int,
    rank: int,
    *,
    pp: int = 1,
    pp_rank: int = 0,
    num_layer_list: list[int] | None = None,
    divisible_by: int = 128,
    fmt: str = "mcore",
    norms: str = "local",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Flat state dict of TP rank `rank` (pipeline stage `pp_rank`) as hf2mg would write it.

    Layer numbers are local to the stage; the vocabulary is padded to a multiple of
    `divisible_by * tp` (Megatron's rule). Only that rank's shards are built.
    """
    if not 0 <= rank < tp:
        raise AtelierError(f"rank {rank}: must be between 0 and tp - 1 = {tp - 1}")
    if not 0 <= pp_rank < pp:
        raise AtelierError(f"pp_rank {pp_rank}: must be between 0 and pp - 1 = {pp - 1}")
    target = MegatronTarget(
        tp=tp,
        pp=pp,
        layer_list=num_layer_list,
        fmt=fmt,
        norms=norms,
        divisible_by=divisible_by,
        dtype=dtype,
    )
    return rank_state_dicts(source, target, ranks=[rank], stages=[pp_rank])[(rank, pp_rank)]


def hf_to_megatron_rank(
    hf_state: Mapping[str, torch.Tensor],
    meta: ModelMeta,
    tp: int,
    rank: int,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """TP rank `rank` of a full HF state dict; keywords as `source_to_megatron_rank`."""
    return source_to_megatron_rank(HFStateSource(hf_state, meta), tp, rank, **kwargs)


def megatron_ranks_to_hf(
    rank_states: Sequence[Mapping[str, torch.Tensor]]
    | Sequence[Sequence[Mapping[str, torch.Tensor]]],
    meta: ModelMeta,
    *,
    lora: LoraSpec | None = None,
) -> dict[str, torch.Tensor]:
    """The full HF state dict (unpadded vocabulary) from TP rank states (or stages of them).

    With `lora`, the states are a LoRA run's (`X.base_layer.weight`, `X.lora_A.default.weight`,
    `X.lora_B.default.weight`) and each rank is merged, W + (alpha / r) B A, first.
    """
    if lora is not None:
        rank_states = [
            [
                dict(merged_rank(s, lora, meta.fam, f"rank_states[{p}][{t}]"))
                for t, s in enumerate(stage)
            ]
            for p, stage in enumerate(_stages(rank_states))
        ]
    source = StateDictSource(rank_states, meta)
    return {name: t.clone() for name, t in hf_tensors(source)}


def _stages(rank_states) -> list:
    return [rank_states] if isinstance(rank_states[0], Mapping) else list(rank_states)


def megatron_ranks_to_peft(
    rank_states: Sequence[Mapping[str, torch.Tensor]]
    | Sequence[Sequence[Mapping[str, torch.Tensor]]],
    meta: ModelMeta,
    lora: LoraSpec,
    base_model: str | None = None,
    modules_to_save: Sequence[str] = (),
) -> tuple[dict[str, torch.Tensor], dict]:
    """(adapter_model.safetensors tensors, adapter_config.json) of a LoRA run's rank states.

    The fused adapters are split exactly (see `lora_peft.hf_adapters`); base tensors, if
    present, are ignored; a run with `modules_to_save` is refused (they would be lost).
    """
    if not rank_states:
        raise AtelierError("rank_states: empty; pass one state dict per TP rank")
    stages = [
        [
            exportable_adapters(canonical_flat(s), f"rank_states[{p}][{t}]", modules_to_save)
            for t, s in enumerate(stage)
        ]
        for p, stage in enumerate(_stages(rank_states))
    ]
    fmt, norms = detect_format({m + ".weight": a for m, a in stages[0][0].a.items()})
    pairs, targets = hf_adapters(stages, lora, meta, fmt, norms, "rank_states")
    state = peft_state_dict(pairs)
    return state, peft_adapter_config(lora, targets, base_model)


def reshard(
    rank_states: Sequence[Mapping[str, torch.Tensor]],
    meta: ModelMeta,
    tp_from: int,
    tp_to: int,
    *,
    divisible_by: int = 128,
    fmt: str | None = None,
    norms: str | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Rank states of P = 1 for tensor parallel size `tp_to`; names keep the source's format."""
    if len(rank_states) != tp_from:
        raise AtelierError(f"rank_states: {len(rank_states)} state dicts but tp_from is {tp_from}")
    source = StateDictSource(rank_states, meta)
    if source.layout.pp != 1:
        raise AtelierError("rank_states: reshard takes one pipeline stage (P = 1)")
    target = MegatronTarget(
        tp=tp_to,
        fmt=fmt or source.layout.fmt,
        norms=norms or source.layout.norms,
        divisible_by=divisible_by,
    )
    states = rank_state_dicts(source, target)
    return [states[(t, 0)] for t in range(tp_to)]
