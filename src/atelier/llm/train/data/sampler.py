"""Which sample indices each data-parallel rank trains on, step by step.

Megatron's `MegatronPretrainingSampler` (`--dataloader-type single`, the default, which
MindSpeed uses too): samples are consumed in dataset order, `micro_batch_size x dp_size` per
micro-step; rank r takes the r-th contiguous slice of `micro_batch_size`. Since the position
is a pure function of `consumed_samples`, resuming from a checkpoint's consumed count
continues with exactly the samples an uninterrupted run would have seen next.
"""

from __future__ import annotations

from collections.abc import Iterator

from atelier.core.errors import AtelierError


def micro_batches(
    total_samples: int,
    consumed_samples: int,
    micro_batch_size: int,
    dp_rank: int,
    dp_size: int,
    drop_last: bool = True,
) -> Iterator[list[int]]:
    """Index lists of this rank's micro-batches, from `consumed_samples` on.

    A last incomplete micro-step is dropped (Megatron's default); with `drop_last=False` it
    yields this rank's part of it, which may be short or empty.
    """
    if total_samples <= 0:
        raise AtelierError("the dataset holds no samples to train on")
    if not 0 <= consumed_samples < total_samples:
        raise AtelierError(
            f"consumed_samples {consumed_samples}: the dataset holds {total_samples} samples, "
            "none left to consume (ask for more samples, or start from an earlier checkpoint)"
        )
    if micro_batch_size < 1:
        raise AtelierError(f"micro_batch_size {micro_batch_size}: must be at least 1")
    if dp_size < 1 or not 0 <= dp_rank < dp_size:
        raise AtelierError(f"dp_rank {dp_rank} dp_size {dp_size}: need 0 <= dp_rank < dp_size")
    return _iterate(total_samples, consumed_samples, micro_batch_size, dp_rank, dp_size, drop_last)


def _iterate(
    total: int, consumed: int, mbs: int, rank: int, size: int, drop_last: bool
) -> Iterator[list[int]]:
    step = mbs * size
    start = consumed
    while start + step <= total:
        first = start + rank * mbs
        yield list(range(first, first + mbs))
        start += step
    if start < total and not drop_last:
        first = start + rank * mbs
        yield list(range(first, min(first + mbs, total)))


class Sampled:
    """Mixin for the datasets: `micro_batches` over the dataset's own length."""

    def micro_batches(
        self,
        consumed_samples: int,
        micro_batch_size: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        drop_last: bool = True,
    ) -> Iterator[list[int]]:
        total = len(self)  # type: ignore[arg-type]
        return micro_batches(total, consumed_samples, micro_batch_size, dp_rank, dp_size, drop_last)
