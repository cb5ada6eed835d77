"""Greedy packing of instruction samples into rows of exactly `seq_length` tokens.

Like LLaMA-Factory/MindSpeed's greedy knapsack: fill one row at a time with the
longest remaining sample that still fits. Lengths are bounded by seq_length, so
a Fenwick tree over lengths finds "longest that fits" in O(log seq_length) and
the plan needs only the lengths in memory, never the samples.
"""

from __future__ import annotations

import numpy as np


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


def pack_plan(lengths: np.ndarray, seq_length: int) -> list[list[int]]:
    """Rows of sample indices; among equal lengths, earlier samples go first."""
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
            row.append(int(order[starts[length] + taken[length]]))
            taken[length] += 1
            fen.add(length, -1)
            room -= length
            remaining -= 1
        rows.append(row)
    return rows
