"""megatron-core's GPT sample indices, re-derived in numpy.

A GPTDataset sees its sequences as one stream: the document index (every sequence of the
split, once per epoch, shuffled by one `RandomState(seed)`) concatenated; sample k is the
`seq_length + 1` tokens starting at stream position `k * seq_length`. The sample index
holds, for every k, (position in the document index, offset in that sequence) of that
start; the shuffle index permutes the samples with the same RandomState. Each function
here gives the arrays megatron-core's `_build_document_index`, `helpers.build_sample_idx`
and `_build_shuffle_index` give, so the samples are the same ones in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEPARATE_FINAL_EPOCH_THRESHOLD = 0.80  # megatron-core's threshold, see `plan_epochs`


@dataclass(frozen=True)
class EpochPlan:
    num_epochs: int
    tokens_per_epoch: int
    separate_final_epoch: bool
    samples_sans_final_epoch: int  # meaningful only with separate_final_epoch


def num_epochs(tokens_per_epoch: int, num_samples: int | None, seq_length: int) -> int:
    """The epochs needed for `num_samples` samples of `seq_length + 1` tokens."""
    if num_samples is None:
        return 1
    needed = num_samples * seq_length + 1
    return max(1, -(-needed // tokens_per_epoch))


def plan_epochs(tokens_per_epoch: int, num_samples: int | None, seq_length: int) -> EpochPlan:
    """Epoch count, and whether the last epoch is shuffled apart from the others.

    megatron-core keeps a short final epoch out of the global shuffle (fewer than 80 % of an
    epoch's samples come from it), so that the requested samples do not over-weight the
    documents that happen to be shuffled into the last epoch's front.
    """
    epochs = num_epochs(tokens_per_epoch, num_samples, seq_length)
    if epochs == 1 or num_samples is None:
        return EpochPlan(epochs, tokens_per_epoch, False, 0)
    sans_final = ((epochs - 1) * tokens_per_epoch - 1) // seq_length
    from_final = num_samples - sans_final
    per_epoch = (tokens_per_epoch - 1) // seq_length
    separate = from_final < int(SEPARATE_FINAL_EPOCH_THRESHOLD * per_epoch)
    return EpochPlan(epochs, tokens_per_epoch, separate, sans_final)


def document_index(
    documents: np.ndarray, epochs: int, rng: np.random.RandomState, separate_final: bool
) -> np.ndarray:
    """The split's sequence ids once per epoch, shuffled (int32, as megatron-core's)."""
    if not separate_final or epochs == 1:
        index = np.tile(np.asarray(documents, dtype=np.int32), epochs)
        rng.shuffle(index)
        return index
    first = document_index(documents, epochs - 1, rng, False)
    last = document_index(documents, 1, rng, False)
    return np.concatenate((first, last))


def sample_index(
    lengths: np.ndarray, doc_index: np.ndarray, seq_length: int, epochs: int, tokens_per_epoch: int
) -> np.ndarray:
    """[(document index position, offset)] of every sample start, plus one end row.

    Vectorised: sample k starts at stream position k * seq_length, which lies in the first
    document (in document-index order) whose cumulative end exceeds it; empty sequences are
    skipped that way, as the C++ loop skips them. Row 0 is (0, 0) as in megatron-core.
    """
    n = (epochs * tokens_per_epoch - 1) // seq_length
    sizes = np.asarray(lengths, dtype=np.int64)[doc_index]
    ends = np.cumsum(sizes)
    starts = np.arange(n + 1, dtype=np.int64) * seq_length
    where = np.searchsorted(ends, starts, side="right")
    offset = starts - (ends[where] - sizes[where])
    where[0], offset[0] = 0, 0
    dtype = np.int32 if max(len(doc_index), int(sizes.max(initial=0))) <= 2**31 - 1 else np.int64
    return np.stack([where, offset], axis=1).astype(dtype)


def shuffle_index(num_samples: int, total: int, rng: np.random.RandomState) -> np.ndarray:
    """A permutation of [0, num_samples) then, shuffled apart, of [num_samples, total)."""
    dtype = np.uint32 if total < np.iinfo(np.uint32).max - 1 else np.int64
    first = np.arange(num_samples, dtype=dtype)
    rng.shuffle(first)
    if num_samples == total:
        return first
    last = np.arange(num_samples, total, dtype=dtype)
    rng.shuffle(last)
    return np.concatenate((first, last))


def gpt_indices(
    lengths: np.ndarray,
    documents: np.ndarray,
    num_samples: int | None,
    seq_length: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document index, sample index, shuffle index) of one GPTDataset split."""
    tokens = int(np.asarray(lengths, dtype=np.int64)[documents].sum())
    plan = plan_epochs(tokens, num_samples, seq_length)
    rng = np.random.RandomState(seed)
    docs = document_index(documents, plan.num_epochs, rng, plan.separate_final_epoch)
    samples = sample_index(lengths, docs, seq_length, plan.num_epochs, tokens)
    total = samples.shape[0] - 1
    first = plan.samples_sans_final_epoch if plan.separate_final_epoch else total
    return docs, samples, shuffle_index(first, total, rng)


def blending_indices(weights: list[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """megatron-core's `build_blending_indices`: which dataset, and which of its samples.

    Greedy: sample s goes to the dataset furthest behind its share (`w * max(s, 1) - taken`),
    the first on ties. The same double arithmetic as the C++ helper, so the same choices.
    """
    which = np.zeros(size, dtype=np.int16)
    nth = np.zeros(size, dtype=np.int64)
    taken = [0] * len(weights)
    w = [float(x) for x in weights]
    k = len(w)
    for s in range(size):
        sd = float(s) if s > 1 else 1.0
        best, best_err = 0, w[0] * sd - taken[0]
        for i in range(1, k):
            err = w[i] * sd - taken[i]
            if err > best_err:
                best, best_err = i, err
        which[s] = best
        nth[s] = taken[best]
        taken[best] += 1
    return which, nth
