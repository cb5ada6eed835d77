"""HyperLogLog distinct estimates: accuracy, small counts, and the rho definition."""

from __future__ import annotations

import numpy as np
import pytest

from atelier.dws import hashing, hll


def _estimate(values: np.ndarray) -> int:
    h = hashing.hashint8(values)
    b = hashing.bucket_of(h)
    return hll.estimate(hll.registers(b, h, np.ones(len(values), dtype=bool)))


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_estimate_within_3_percent(n):
    rng = np.random.default_rng(n)
    distinct = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    rows = np.concatenate([distinct, rng.choice(distinct, size=n // 2)])  # with repeats
    est = _estimate(rows)
    assert abs(est - n) / n < 0.03, (n, est)


def test_small_cardinalities_are_near_exact():
    for n in [0, 1, 2, 7, 60, 200]:
        vals = np.repeat(np.arange(n, dtype=np.int64) * 7919 - 1000, 3)
        assert abs(_estimate(vals) - n) <= max(1, n // 100), n


def test_rho_is_one_plus_leading_zeros_of_bits_14_to_30():
    hs = [0, 1, 16383, 1 << 14, 1 << 30, (1 << 31) - 1, -1, -(2**31), 3 << 20, -(1 << 15)]
    got = hll.rho_of(np.array(hs, dtype=np.int64).astype(np.int32))
    for h, r in zip(hs, got, strict=True):
        bits = [(h >> i) & 1 for i in range(30, 13, -1)]  # bit 30 first
        want = bits.index(1) + 1 if 1 in bits else 18
        assert r == want, (h, r, want)


def test_null_key_rows_are_left_out():
    h = hashing.hashint8(np.arange(100, dtype=np.int64))
    valid = np.arange(100) % 2 == 0
    reg = hll.registers(hashing.bucket_of(h), h, valid)
    assert hll.estimate(reg) == 50
    assert hll.estimate(np.zeros(hll.M, dtype=np.int8)) == 0
