"""Micro-batches in Megatron's sampler order from samples already in memory.

`SampleBatches` serves any indexable dataset of per-sample dicts (tokens, labels, loss_mask
...); the order is Megatron's `MegatronPretrainingSampler`: the global batch after
`consumed` samples is cut into steps of mbs x dp samples, rank r taking [r*mbs, (r+1)*mbs)
of each. The bench, the tests and the train.data adapter all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

Batch = dict[str, torch.Tensor]


def stack_samples(samples: Sequence[Mapping[str, torch.Tensor]]) -> Batch:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class SampleBatches:
    """`splits` maps "train"/"valid" to a sized, indexable dataset of sample dicts."""

    def __init__(
        self,
        splits: Mapping[str, Sequence[Mapping[str, torch.Tensor]]],
        collate: Callable[[list], Batch] = stack_samples,
    ) -> None:
        self.splits = splits
        self.collate = collate

    def has_split(self, split: str) -> bool:
        return len(self.splits.get(split, ())) > 0

    def micro_batches(
        self, split: str, consumed: int, mbs: int, gbs: int, dp_rank: int, dp_size: int
    ) -> list[Batch]:
        data = self.splits[split]
        n = len(data)
        out = []
        for j in range(gbs // (mbs * dp_size)):
            first = consumed + j * mbs * dp_size + dp_rank * mbs
            out.append(self.collate([data[(first + i) % n] for i in range(mbs)]))
        return out


def pretraining_samples(tokens: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """[N, seq+1] token rows -> GPT samples: inputs, next-token labels, all tokens trained."""
    return [
        {
            "tokens": row[:-1].contiguous(),
            "labels": row[1:].contiguous(),
            "loss_mask": torch.ones(row.shape[0] - 1, dtype=torch.float32),
        }
        for row in tokens
    ]
