"""LoRA adapters of a Megatron checkpoint as a PEFT adapter (one A/B per HF projection).

PEFT's LoRA layout wraps each Hugging Face projection (q_proj, k_proj, ... down_proj)
on its own; MindSpeed's fused `linear_qkv` / `linear_fc1` carry one pair. Splitting is
exact: the shared A goes to each piece, and B (gathered over TP) is split into piece
rows by the family table's own rule (`sharding.gather_part`, which also undoes the
per-query-group interleave of QKV); row-parallel linears gather A over TP instead.
Replicated matrices must be equal on every TP rank to be exported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.lora import (
    Adapters,
    LoraSpec,
    check_adapters,
    count_local_layers,
    module_of,
    targets_for,
)
from atelier.llm.convert.parts import Split
from atelier.llm.convert.sharding import gather_part

PEFT_PREFIX = "base_model.model."


def _same_on_every_rank(shards: Sequence[torch.Tensor], name: str, where: str) -> torch.Tensor:
    for t, s in enumerate(shards[1:], start=1):
        if s.shape != shards[0].shape or not torch.equal(s, shards[0]):
            raise AtelierError(
                f"{where}: {name} differs between TP ranks 0 and {t}; it must be replicated "
                "(the same on every rank) to be exported. Merge instead (drop save_lora_to_hf)"
            )
    return shards[0]


def hf_adapters(
    stages: Sequence[Sequence[Adapters]],
    spec: LoraSpec,
    meta,
    fmt: str = "mcore",
    norms: str = "local",
    where: str = "lora",
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """(HF weight name -> (A, B), PEFT target_modules) from adapters per stage, per TP rank.

    HF names use global layer numbers (`model.layers.{i}.self_attn.q_proj.weight`); a
    fused linear's shared A goes to each of its pieces and its B is gathered and split
    like the base weight (`sharding.gather_part`); row-parallel linears gather A.
    """
    targets = targets_for(meta.fam, fmt, norms, spec, stages[0][0], where)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    start = 0
    for p, ranks in enumerate(stages):
        swhere = f"{where} stage {p}"
        layers = count_local_layers({m for r in ranks for m in r.modules()})
        pairs = [
            check_adapters(r, None, spec, targets, layers, f"{swhere} TP rank {t}")
            for t, r in enumerate(ranks)
        ]
        for j in range(layers):
            i = start + j
            for target in targets.values():
                module = target.module.format(i=j)
                a_shards = [pr[module + ".weight"][0] for pr in pairs]
                b_shards = [pr[module + ".weight"][1] for pr in pairs]
                part = target.part
                if part.split is Split.ROW:
                    a_pieces = gather_part(part, a_shards, meta)
                    b_pieces = (_same_on_every_rank(b_shards, module + ".lora_B", swhere),)
                else:
                    a_full = _same_on_every_rank(a_shards, module + ".lora_A", swhere)
                    b_pieces = gather_part(part, b_shards, meta)
                    a_pieces = (a_full,) * len(b_pieces)
                for template, a, b in zip(part.hf, a_pieces, b_pieces, strict=True):
                    out[template.format(i=i)] = (a.contiguous().clone(), b.contiguous().clone())
        start += layers
    if start != meta.num_layers:
        raise AtelierError(
            f"{where}: adapters cover {start} layers but the model has {meta.num_layers}"
        )
    hf_targets = sorted({m for t in targets.values() for m in t.hf_modules})
    return out, hf_targets


def peft_state_dict(
    pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """`hf_adapters` under PEFT's names, `base_model.model.<module>.lora_A.weight` / `lora_B`."""
    out: dict[str, torch.Tensor] = {}
    for name, (a, b) in pairs.items():
        stem = PEFT_PREFIX + module_of(name)
        out[stem + ".lora_A.weight"], out[stem + ".lora_B.weight"] = a, b
    return out


def peft_adapter_config(
    spec: LoraSpec, target_modules: Sequence[str], base_model: str | None
) -> dict:
    """`adapter_config.json` as `peft.LoraConfig.save_pretrained` writes it (no dropout)."""
    alpha: float | int = int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": False,
        "use_dora": False,
        "revision": None,
    }
