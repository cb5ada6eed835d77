"""Greedy packing of instruction samples into rows of `capacity` tokens.

MindSpeed-LLM's `greedy_knapsack` (mindspeed_llm/tasks/preprocess/utils.py): fill one
row at a time with the longest remaining sample that still fits. MindSpeed packs into
`seq_length - 1` (one token is kept for padding) and, among samples of equal length,
takes the one read last first (`length2indexes[length].pop()`); `pack_plan` gives that
order with `latest_first=True`. Lengths are bounded by the capacity, so a Fenwick tree
over lengths finds "longest that fits" in O(log capacity) and the plan needs only the
lengths in memory, never the samples (MindSpeed's list `pop` is quadratic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atelier.llm.data.indexed import IndexedReader, IndexedWriter


class _Fenwick:
    def __init__(self, size: int) -> None:
        self.n = size
        self.tree = [0] * (size + 1)

    def add(self, i: int, delta: int) -> None:  # i is 1-based
        while i <= self.n:
            self.tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        s = 0
        while i > 0:
            s += self.tree[i]
            i -= i & -i
        return s

    def find(self, k: int) -> int:
        """Smallest i with prefix(i) >= k (k >= 1)."""
        pos, step = 0, 1 << self.n.bit_length()
        while step:
            nxt = pos + step
            if nxt <= self.n and self.tree[nxt] < k:
                pos = nxt
                k -= self.tree[nxt]
            step >>= 1
        return pos + 1


def pack_plan(lengths: np.ndarray, seq_length: int, latest_first: bool = False) -> list[list[int]]:
    """Rows of sample indices, each row's lengths summing to at most `seq_length`.

    Among equal lengths earlier samples go first, or later ones with `latest_first`.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return []
    if lengths.min() < 1 or lengths.max() > seq_length:
        raise ValueError("every length must be in [1, seq_length]")
    order = np.argsort(lengths, kind="stable")
    counts = np.bincount(lengths, minlength=seq_length + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    taken = np.zeros(seq_length + 1, dtype=np.int64)
    fen = _Fenwick(seq_length)
    for length in np.nonzero(counts)[0]:
        fen.add(int(length), int(counts[length]))
    remaining = len(lengths)
    rows: list[list[int]] = []
    while remaining:
        room, row = seq_length, []
        while room > 0:
            k = fen.prefix(room)
            if k == 0:
                break
            length = fen.find(k)  # the longest remaining length <= room
            nth = counts[length] - 1 - taken[length] if latest_first else taken[length]
            row.append(int(order[starts[length] + nth]))
            taken[length] += 1
            fen.add(length, -1)
            room -= length
            remaining -= 1
        rows.append(row)
    return rows


def pack_rows(
    unpacked: dict[str, str],
    finals: dict[str, str],
    seq_length: int,
    pad: int,
    neat: bool = False,
    mask_padding: bool = False,
) -> tuple[int, list[tuple[Path, Path]]]:
    """Pack unpacked SFT datasets (key -> prefix) into rows of `seq_length`, as MindSpeed.

    MindSpeed's `_pack_serialize_to_disk`: samples fill `seq_length - 1` tokens (at least
    one pad follows), in `greedy_knapsack` order; padding is the pad id, label -100 and
    attention_mask 1 (0 with `mask_padding`). With `neat` (--neat-pack) attention_mask
    holds 1, 2, ... per sample and 0 on padding, and a sample longer than the row is cut
    to `seq_length - 1` tokens instead of dropped. Returns (rows, pairs to commit).
    """
    readers = {k: IndexedReader.open(p) for k, p in unpacked.items()}
    room = seq_length - 1
    lengths = np.minimum(readers["input_ids"].lengths, room)
    plan = pack_plan(lengths, room, latest_first=True)
    fill = {"input_ids": pad, "attention_mask": 0 if neat or mask_padding else 1, "labels": -100}
    writers = {k: IndexedWriter(p, np.int32) for k, p in finals.items()}
    try:
        for row in plan:
            for key, reader in readers.items():
                if neat and key == "attention_mask":
                    parts = [np.full(lengths[i], n, dtype=np.int32) for n, i in enumerate(row, 1)]
                else:
                    parts = [reader[i][:room] for i in row]
                n = sum(len(p) for p in parts)
                parts.append(np.full(seq_length - n, fill[key], dtype=np.int32))
                writers[key].add_sequence(np.concatenate(parts))
        return len(plan), [pair for w in writers.values() for pair in w.finish()]
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
