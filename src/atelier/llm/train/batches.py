"""Micro-batches in Megatron's sampler order from samples already in memory.

`SampleBatches` serves any indexable dataset of per-sample dicts (tokens, labels, loss_mask
...); the order is Megatron's `MegatronPretrainingSampler`: the global batch after
`consumed` samples is cut into steps of mbs x dp samples, rank r taking [r*mbs, (r+1)*mbs)
of each. The bench, the tests and the train.data adapter all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any

import torch

from atelier.core.errors import AtelierError

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


class DatasetBatches:
    """`train.data`'s datasets and sampler behind the loop's `BatchSource` interface."""

    def __init__(self, spec: Any, splits: Mapping[str, Any]) -> None:
        self.spec = spec
        self.splits = {k: v for k, v in splits.items() if v is not None and len(v) > 0}

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def micro_batches(
        self, split: str, consumed: int, mbs: int, gbs: int, dp_rank: int, dp_size: int
    ) -> list[Batch]:
        from atelier.llm.train.data import collate

        ds = self.splits[split]
        steps = gbs // (mbs * dp_size)
        idx = list(islice(ds.micro_batches(consumed, mbs, dp_rank, dp_size), steps))
        if len(idx) < steps:
            raise AtelierError(
                f"the {split} split ran out of samples after {consumed}; ask for fewer "
                "iterations or give more data"
            )
        return [collate([ds[i] for i in one], pad_id=self.spec.fill_id) for one in idx]


def datasets_for_run(
    spec: Any,
    *,
    vocab_size: int,
    global_batch_size: int,
    total_iters: int,
    eval_interval: int,
    eval_iters: int,
) -> DatasetBatches:
    """Megatron's train/valid/test sample counts for this run, built and vocab-checked."""
    from atelier.llm.train.data import build_datasets, check_vocab

    check_vocab(spec, vocab_size)
    evals = (total_iters // eval_interval + 1) * eval_iters if eval_iters > 0 else 0
    sizes = [
        total_iters * global_batch_size,
        evals * global_batch_size,
        eval_iters * global_batch_size,
    ]
    train, valid, _ = build_datasets(spec, sizes)
    return DatasetBatches(spec, {"train": train, "valid": valid})
