"""The wrapped linear: y = W x (+ b) + (alpha / r) B dropout(A x), in PEFT's names.

`LoraLinear` holds the original `nn.Linear` as `base_layer` and one A/B pair per linear,
fused ones included (`linear_qkv`: one pair for Q, K and V; `linear_fc1`: one pair for
[gate; up]), which is what MindSpeed-LLM gets by wrapping megatron-core's linears with
PEFT: parameter names `X.base_layer.weight`, `X.lora_A.default.weight` [r, in] and
`X.lora_B.default.weight` [out, r].

Tensor parallelism (`tp_plan`) follows PEFT's `LoraParallelLinear`: a column-parallel base
keeps A whole on every rank and splits B by rows (output), a row-parallel base splits A by
columns (input) and keeps B whole. With DTensor that is: B column-parallel behind a
replicated A (its input gradient is all-reduced over TP on the way back, so A's gradient is
complete on every rank), or A row-parallel (its partial output all-reduced) before a
replicated B. TP therefore changes no loss.
"""

from __future__ import annotations

import torch
from torch import nn

from atelier.llm.train.lora.spec import ADAPTER, COLUMN_PARALLEL, LoraSpec


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.ModuleDict({ADAPTER: nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({ADAPTER: nn.Linear(r, base.out_features, bias=False)})
        drop: nn.Module = nn.Dropout(dropout) if dropout else nn.Identity()
        self.lora_dropout = nn.ModuleDict({ADAPTER: drop})
        self.scaling = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        a = self.lora_A[ADAPTER](self.lora_dropout[ADAPTER](x))
        # scaled on the r-wide side: (alpha/r) B (A x) with r columns multiplied, not `out`
        return y + self.lora_B[ADAPTER](a * self.scaling)


def apply_lora(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Wrap every targeted linear of `model` in place (works on the meta device).

    Returns the wrapped module paths; every target must exist (a linear the model lacks
    is a configuration error, not a silent no-op).
    """
    wrapped: list[str] = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and spec.is_target(name):
            owner, _, leaf = name.rpartition(".")
            wrapper = LoraLinear(module, spec.r, spec.alpha, spec.dropout)
            setattr(model.get_submodule(owner), leaf, wrapper)
            wrapped.append(name)
    return wrapped


def tp_plan(plan: dict, layer: nn.Module) -> dict:
    """A decoder layer's TP plan with each wrapped linear's parts placed (see module doc)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    out = {}
    for key, style in plan.items():
        if not isinstance(layer.get_submodule(key), LoraLinear):
            out[key] = style
            continue
        out[f"{key}.base_layer"] = style
        if key.rpartition(".")[2] in COLUMN_PARALLEL:
            out[f"{key}.lora_B.{ADAPTER}"] = ColwiseParallel()
        else:
            out[f"{key}.lora_A.{ADAPTER}"] = RowwiseParallel()
    return out


def freeze_base(model: nn.Module, spec: LoraSpec) -> None:
    """Only adapters and modules_to_save are trained; nothing else gets a gradient, an
    optimizer state or weight decay."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter(name) or spec.trains_fully(name))


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name
