"""A TP rank's local shards in megatron-core names, from any `CheckpointSource`.

The converter's sources (a Megatron checkpoint at any TP, or a Hugging Face folder) give each
layer in the HF layout; the family table's slicing for TP rank r yields the tensors of
`mp_rank_{r:02d}/model_optim_rng.pt`, so resharding to another TP happens in memory. A fresh
model (pretraining from scratch) comes from `RandomSource`: Megatron's init (normal(0, std),
output projections scaled by 1/sqrt(2 x layers), norms one), generated whole and seeded so
every TP/DP layout starts from the same weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.source import CheckpointSource
from atelier.llm.train.model.args import ModelArgs


def rank_tensors(
    source: CheckpointSource, a: ModelArgs, tp: int, rank: int, divisible_by: int
) -> dict[str, torch.Tensor]:
    """Megatron name -> TP rank `rank`'s tensor, exactly what hf2mg writes for that rank.

    Built by the family table's own slicing (`source_to_megatron_rank`), so the trainer and
    the converter can never disagree on a layout.
    """
    from atelier.llm.convert.state_dicts import source_to_megatron_rank

    state = source_to_megatron_rank(source, tp, rank, divisible_by=divisible_by)
    rows = state["embedding.word_embeddings.weight"].shape[0] * tp
    assert rows == a.padded_vocab_size, (rows, a.padded_vocab_size)
    return state


class RandomSource:
    """Megatron-style random init in the HF layout, generated per tensor from one seed."""

    def __init__(self, meta: ModelMeta, seed: int, std: float = 0.02) -> None:
        self.meta = meta
        self.assets_dir: Path | None = None
        self.seed, self.std = seed, std
        self.out_std = std / math.sqrt(2.0 * meta.num_layers)
        self.qk_norm = meta.qk_norm

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
