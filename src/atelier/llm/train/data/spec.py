"""What the trainer asks of its data, and the parsing of Megatron's string forms.

`data_path` and `split` keep Megatron's spellings (`w1 p1 w2 p2 ...`, `949,50,1`) so a
user's `3_training.sh` line means the same here. Parsing is strict where Megatron is
lenient or crashes (a mixed weight/prefix list, a split summing to zero): those become one
line naming the parameter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from atelier.core.errors import AtelierError

IGNORE = -100  # the label of a token that is not trained (MindSpeed / HF convention)
NO_PAD = -1  # megatron-core's pad id when the tokenizer has no distinct one


@dataclass(frozen=True)
class DataSpec:
    """The data side of a training run.

    data_path: one prefix, or Megatron's weighted blend `w1 p1 w2 p2 ...` (a string split on
        whitespace, or the list argparse gives for `--data-path` with nargs).
    split: `train,valid,test` weights, e.g. "949,50,1".
    seq_length: tokens per sample (the model sees `seq_length` inputs and as many labels).
    seed: the seed of every shuffle (Megatron's `--seed`).
    is_instruction: the `{prefix}_packed_{input_ids,attention_mask,labels}_document` datasets.
    pad_to_seq_length: instruction samples padded to `seq_length` in the dataset; False
        (`--no-pad-to-seq-lengths` / `--variable-seq-lengths`) leaves them at their length
        and `collate` pads to the longest in the micro-batch.
    reset_position_ids, reset_attention_mask, eod_mask_loss: Megatron's flags of those names.
    eod_id: the end-of-document id (the tokenizer's eod; eos for HF tokenizers); in
        instruction data the EOS that ends each sample of a packed row.
    pad_id: the tokenizer's pad id. Pretraining: megatron-core masks the loss of labels equal
        to it (None, or equal to eod_id, disables that, as megatron-core does on a collision).
        Instruction: the id padding is filled with (eod_id when None).
    data_cache_path: where index caches go; None puts them next to the data.
    """

    data_path: str | Sequence[str]
    split: str = "969,30,1"
    seq_length: int = 1024
    seed: int = 1234
    is_instruction: bool = False
    pad_to_seq_length: bool = True
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    eod_id: int = 0
    pad_id: int | None = None
    data_cache_path: str | None = None

    def __post_init__(self) -> None:
        if self.seq_length < 1:
            raise AtelierError(f"seq_length {self.seq_length}: must be positive")
        if self.eod_id < 0:
            raise AtelierError(f"eod_id {self.eod_id}: must be a token id (>= 0)")
        if self.pad_id is not None and self.pad_id < 0:
            raise AtelierError(f"pad_id {self.pad_id}: must be a token id (>= 0) or None")

    @property
    def blend(self) -> tuple[list[str], list[float] | None]:
        return parse_blend(self.data_path)

    @property
    def megatron_pad(self) -> int:
        """The pad id megatron-core's GPTDataset masks (-1 when absent or ambiguous)."""
        if self.pad_id is None or self.pad_id == self.eod_id:
            return NO_PAD
        return self.pad_id

    @property
    def fill_id(self) -> int:
        """The token id instruction padding is filled with."""
        return self.eod_id if self.pad_id is None else self.pad_id


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def parse_blend(data_path: str | Sequence[str]) -> tuple[list[str], list[float] | None]:
    """Megatron's `get_blend_from_list`: (prefixes, weights or None).

    An odd number of items is a list of prefixes; an even number is weight/prefix pairs when
    every weight position holds a number, and a list of prefixes when none does.
    """
    items = data_path.split() if isinstance(data_path, str) else [str(s) for s in data_path]
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise AtelierError("data_path: empty; give a dataset prefix or `w1 prefix1 w2 prefix2`")
    if len(items) % 2 == 1:
        if any(_is_number(s) for s in items):
            raise AtelierError(
                f"data_path: weights malformed: {len(items)} items with numbers among them; "
                "write `w1 prefix1 w2 prefix2 ...` (a weight before every prefix) or prefixes only"
            )
        return items, None
    heads = items[0::2]
    numeric = [_is_number(h) for h in heads]
    if not any(numeric):
        return items, None
    if not all(numeric):
        bad = next(h for h, n in zip(heads, numeric, strict=True) if not n)
        raise AtelierError(
            f"data_path: weights malformed: {bad!r} stands where a weight is expected; "
            "write `w1 prefix1 w2 prefix2 ...` or prefixes only"
        )
    weights = [float(h) for h in heads]
    prefixes = items[1::2]
    for w, p in zip(weights, prefixes, strict=True):
        if not math.isfinite(w) or w <= 0:
            raise AtelierError(f"data_path: weight {w} of {p}: weights must be positive numbers")
    for p in prefixes:
        if _is_number(p):
            raise AtelierError(
                f"data_path: {p!r} stands where a prefix is expected; "
                "write `w1 prefix1 w2 prefix2 ...`"
            )
    return prefixes, weights


_SPLIT = re.compile(r"^\s*[0-9.]+(\s*[,/]\s*[0-9.]+){0,2}\s*$")  # no exponents, as megatron-core


def split_weights(split: str) -> list[float]:
    """Three non-negative ratios summing to 1 (megatron-core's `parse_and_normalize_split`)."""
    if not _SPLIT.match(split or ""):
        raise AtelierError(
            f"split {split!r}: malformed; give up to three comma-separated weights, e.g. 949,50,1"
        )
    try:
        values = [float(v) for v in re.split(r"[,/]", split)]
    except ValueError:
        raise AtelierError(
            f"split {split!r}: malformed; give up to three comma-separated weights, e.g. 949,50,1"
        ) from None
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise AtelierError(f"split {split!r}: weights must be non-negative with a positive sum")
    values += [0.0] * (3 - len(values))
    w = np.array(values, dtype=np.float64)
    return (w / w.sum()).tolist()


def split_matrix(split: str) -> list[tuple[float, float] | None]:
    """Book-ends of each split in [0, 1] (megatron-core's split matrix), None when empty."""
    weights = split_weights(split)
    ends = [0.0]
    for w in weights:
        ends.append(ends[-1] + w)
    return [(a, b) if b > a else None for a, b in pairwise(ends)]


def split_ranges(split: str, size: int) -> list[tuple[int, int] | None]:
    """Per split, the [begin, end) of the `size` items it holds (megatron-core's rounding)."""
    out: list[tuple[int, int] | None] = []
    for bookend in split_matrix(split):
        if bookend is None:
            out.append(None)
        else:
            out.append((round(bookend[0] * float(size)), round(bookend[1] * float(size))))
    return out


def legacy_split_ranges(split: str, size: int) -> list[tuple[int, int]]:
    """Megatron's legacy `get_train_valid_test_split_`, which MindSpeed's instruction data uses.

    The rounding differs from megatron-core's: cumulative rounded counts, then the excess
    taken off every boundary so that the last one is `size`.
    """
    weights = split_weights(split)
    index = [0]
    for w in weights:
        index.append(index[-1] + round(w * float(size)))
    diff = index[-1] - size
    index = [index[0]] + [i - diff for i in index[1:]]
    return [(index[i], index[i + 1]) for i in range(3)]
