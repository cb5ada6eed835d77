"""Micro-batch assembly: numpy samples -> padded torch tensors.

Samples of one micro-batch can differ in length only for unpadded instruction data
(`pad_to_seq_length=False`); they are right-padded to the longest (optionally rounded up to
a multiple, MindSpeed's `--pad-to-multiple-of`, or to a fixed `pad_to`). Padding is never
trained (loss_mask 0, label 0) and, being on the right of a causal model, never seen by a
real token; its positions continue the sample's last ones and its segment is a new one, so
an attention mask built from segment_ids has no empty row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def _pad_one(sample: dict[str, np.ndarray], length: int, pad_id: int) -> dict[str, np.ndarray]:
    n = len(sample["tokens"])
    extra = length - n
    if extra == 0:
        return sample
    out = {}
    for key, arr in sample.items():
        if key == "tokens":
            tail = np.full(extra, pad_id, dtype=arr.dtype)
        elif key == "position_ids":
            last = int(arr[-1]) if n else -1
            tail = np.arange(last + 1, last + 1 + extra, dtype=arr.dtype)
        elif key == "segment_ids":
            tail = np.full(extra, (int(arr[-1]) + 1) if n else 0, dtype=arr.dtype)
        else:  # labels, loss_mask
            tail = np.zeros(extra, dtype=arr.dtype)
        out[key] = np.concatenate([arr, tail])
    return out


def collate(
    samples: Sequence[dict[str, np.ndarray]],
    pad_id: int,
    pad_to: int | None = None,
    multiple_of: int = 1,
) -> dict[str, torch.Tensor]:
    """Stack samples into [micro_batch, length] tensors, padding on the right."""
    import torch

    if not samples:
        raise ValueError("collate needs at least one sample")
    longest = max(len(s["tokens"]) for s in samples)
    if pad_to is not None:
        if pad_to < longest:
            raise ValueError(f"pad_to {pad_to} is shorter than a sample ({longest} tokens)")
        length = pad_to
    else:
        length = -(-longest // multiple_of) * multiple_of
    padded = [_pad_one(s, length, pad_id) for s in samples]
    return {key: torch.from_numpy(np.stack([p[key] for p in padded])) for key in padded[0]}


class _BatchSampler:
    """`micro_batches` as a re-iterable batch sampler for torch's DataLoader."""

    def __init__(self, dataset: Any, consumed: int, mbs: int, rank: int, size: int) -> None:
        self.args = (dataset, consumed, mbs, rank, size)
        dataset.micro_batches(consumed, mbs, rank, size)  # validate now, not in a worker

    def __iter__(self) -> Iterator[list[int]]:
        dataset, consumed, mbs, rank, size = self.args
        return dataset.micro_batches(consumed, mbs, rank, size)

    def __len__(self) -> int:
        dataset, consumed, mbs, _, size = self.args
        return (len(dataset) - consumed) // (mbs * size)


def data_loader(
    dataset: Any,
    pad_id: int,
    consumed_samples: int,
    micro_batch_size: int,
    dp_rank: int = 0,
    dp_size: int = 1,
    multiple_of: int = 1,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """This rank's micro-batches from `consumed_samples` on, collated, optionally prefetched
    by `num_workers` processes (Megatron's `build_pretraining_data_loader`)."""
    import torch

    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_BatchSampler(dataset, consumed_samples, micro_batch_size, dp_rank, dp_size),
        collate_fn=partial(collate, pad_id=pad_id, multiple_of=multiple_of),
        num_workers=num_workers,
    )
