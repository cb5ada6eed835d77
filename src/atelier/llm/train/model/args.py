"""The decoder's shape and architecture facts, read from the family table via `ModelMeta`.

Everything the model builder needs is a field here, never a branch on a family name: QKV
bias, qk-norm, tied embeddings, rope kind and scaling are facts the converter's family table
(through `ModelMeta`) already knows, so a new family is a table entry, not model code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atelier.core.errors import AtelierError
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.sharding import padded_vocab_size


@dataclass(frozen=True)
class ModelArgs:
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_heads: int
    num_groups: int
    head_dim: int
    vocab_size: int  # true vocabulary; logits beyond it are never seen by the loss
    padded_vocab_size: int
    max_positions: int
    norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    qkv_bias: bool
    qk_norm: bool
    tied: bool


def args_from_meta(meta: ModelMeta, *, tp: int, divisible_by: int) -> ModelArgs:
    """Model args for a run with tensor-parallel size `tp` (the vocab is padded as Megatron)."""
    arch = meta.fam.arch
    implemented = {"norm": "RMSNorm", "activation": "silu", "rope": "rotate_half"}
    for name, value in implemented.items():
        if getattr(arch, name) != value:
            raise AtelierError(
                f"family {meta.family}: {name} {getattr(arch, name)!r} is not implemented by "
                f"the trainer's decoder (it has {value})"
            )
    return ModelArgs(
        num_layers=meta.num_layers,
        hidden_size=meta.hidden_size,
        ffn_hidden_size=meta.ffn_hidden_size,
        num_heads=meta.num_heads,
        num_groups=meta.num_groups,
        head_dim=meta.head_dim,
        vocab_size=meta.vocab_size,
        padded_vocab_size=padded_vocab_size(meta.vocab_size, divisible_by, tp),
        max_positions=meta.max_positions,
        norm_eps=meta.norm_eps,
        rope_theta=meta.rope_theta,
        rope_scaling=meta.rope_scaling,
        qkv_bias=meta.qkv_bias,
        qk_norm=meta.qk_norm,
        tied=meta.tied,
    )
