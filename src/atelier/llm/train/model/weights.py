"""A TP rank's local shards in megatron-core names, from any `CheckpointSource`.

The converter's sources (a Megatron checkpoint at any TP, or a Hugging Face folder) give each
layer in the HF layout; slicing it for TP rank r and fusing exactly as `hf2mg` does yields the
tensors of `mp_rank_{r:02d}/model_optim_rng.pt`, so resharding to another TP happens in
memory. A fresh model (pretraining from scratch) comes from `RandomSource`: Megatron's init
(normal(0, std), output projections scaled by 1/sqrt(2 x layers), norms one), generated
whole and seeded so every TP/DP layout starts from the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch

from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.sharding import (
    fuse_qkv,
    padded_shard,
    rank_slice,
    vocab_shard_range,
)
from atelier.llm.convert.source import CheckpointSource, vocab_rows
from atelier.llm.train.model.args import ModelArgs

LAYER = "decoder.layers.{i}."


def _vocab_shard(
    source: CheckpointSource, which: str, a: ModelArgs, tp: int, rank: int
) -> torch.Tensor:
    start, stop = vocab_shard_range(a.padded_vocab_size, tp, rank)
    real = vocab_rows(source, which, min(start, a.vocab_size), min(stop, a.vocab_size))
    last = vocab_rows(source, which, a.vocab_size - 1, a.vocab_size)
    return padded_shard(real, last, start, stop, a.vocab_size)


def layer_shards(
    parts: dict[str, torch.Tensor], a: ModelArgs, tp: int, rank: int
) -> dict[str, torch.Tensor]:
    """One layer's rank-local tensors, named relative to `decoder.layers.N.`."""
    p = rank_slice(parts, tp, rank)
    groups = a.num_groups // tp
    out = {
        "input_layernorm.weight": p["input_norm"],
        "self_attention.linear_qkv.weight": fuse_qkv(p["q"], p["k"], p["v"], groups),
        "self_attention.linear_proj.weight": p["o"],
        "pre_mlp_layernorm.weight": p["post_norm"],
        "mlp.linear_fc1.weight": torch.cat([p["gate"], p["up"]], dim=0),
        "mlp.linear_fc2.weight": p["down"],
    }
    if a.qkv_bias:
        out["self_attention.linear_qkv.bias"] = fuse_qkv(
            p["q_bias"], p["k_bias"], p["v_bias"], groups
        )
    if a.qk_norm:
        out["self_attention.q_layernorm.weight"] = p["q_norm"]
        out["self_attention.k_layernorm.weight"] = p["k_norm"]
    return out


def rank_tensors(
    source: CheckpointSource, a: ModelArgs, tp: int, rank: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """(megatron name, local tensor) for TP rank `rank`, one layer at a time."""
    yield "embedding.word_embeddings.weight", _vocab_shard(source, "embed", a, tp, rank)
    for i in range(a.num_layers):
        for name, t in layer_shards(source.layer(i), a, tp, rank).items():
            yield LAYER.format(i=i) + name, t
    yield "decoder.final_layernorm.weight", source.final_norm()
    if not a.tied:
        yield "output_layer.weight", _vocab_shard(source, "lm_head", a, tp, rank)


class RandomSource:
    """Megatron-style random init in the HF layout, generated per tensor from one seed."""

    def __init__(self, meta: ModelMeta, seed: int, std: float = 0.02) -> None:
        self.meta = meta
        self.assets_dir: Path | None = None
        self.seed, self.std = seed, std
        self.out_std = std / math.sqrt(2.0 * meta.num_layers)
        self.qk_norm = bool(getattr(meta, "qk_norm", getattr(meta.fam, "qk_norm", False)))

    def _normal(self, key: int, rows: int, cols: int, std: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + key)
        return torch.randn(rows, cols, generator=g) * std

    def embed(self) -> torch.Tensor:
        return self._normal(0, self.meta.vocab_size, self.meta.hidden_size, self.std)

    def lm_head(self) -> torch.Tensor | None:
        if self.meta.tied:
            return None
        return self._normal(1, self.meta.vocab_size, self.meta.hidden_size, self.std)

    def final_norm(self) -> torch.Tensor:
        return torch.ones(self.meta.hidden_size)

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        m, h, d = self.meta, self.meta.hidden_size, self.meta.head_dim
        key = 16 * (i + 1)
        out = {
            "input_norm": torch.ones(h),
            "post_norm": torch.ones(h),
            "q": self._normal(key, m.num_heads * d, h, self.std),
            "k": self._normal(key + 1, m.num_groups * d, h, self.std),
            "v": self._normal(key + 2, m.num_groups * d, h, self.std),
            "o": self._normal(key + 3, h, m.num_heads * d, self.out_std),
            "gate": self._normal(key + 4, m.ffn_hidden_size, h, self.std),
            "up": self._normal(key + 5, m.ffn_hidden_size, h, self.std),
            "down": self._normal(key + 6, h, m.ffn_hidden_size, self.out_std),
        }
        if m.qkv_bias:
            out["q_bias"] = torch.zeros(m.num_heads * d)
            out["k_bias"] = torch.zeros(m.num_groups * d)
            out["v_bias"] = torch.zeros(m.num_groups * d)
        if self.qk_norm:
            out["q_norm"], out["k_norm"] = torch.ones(d), torch.ones(d)
        return out

    def close(self) -> None:
        pass
