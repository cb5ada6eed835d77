"""Greedy packing plan: rows never overflow and take the longest sample that fits."""

from __future__ import annotations

import numpy as np
import pytest

from atelier.llm.data.packing import pack_plan


def test_plan_is_greedy_and_complete():
    lengths = np.array([5, 3, 8, 2, 2, 7, 1])
    rows = pack_plan(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[r]) <= 10 for r in rows)
    assert rows[0] == [2, 3]  # 8 first, then the longest that fits: a 2 (the earlier one)


def test_random_plans_against_naive_greedy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(1, 33, size=int(rng.integers(1, 200)))
        got = pack_plan(lengths, 32)
        remaining = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        expected = []
        while remaining:
            room, row = 32, []
            while True:
                fits = [i for i in remaining if lengths[i] <= room]
                if not fits:
                    break
                best = max(lengths[i] for i in fits)
                pick = min(i for i in fits if lengths[i] == best)
                row.append(pick)
                remaining.remove(pick)
                room -= lengths[pick]
            expected.append(row)
        assert got == expected


def test_bad_lengths():
    with pytest.raises(ValueError):
        pack_plan(np.array([3, 40]), 32)
