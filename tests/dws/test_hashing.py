"""Every numpy hash against the live server's own SQL function, value by value.

This comparison is what makes the offline (`--file`) path trustworthy.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import numpy as np

from atelier.dws import hashing

EPOCH = dt.datetime(2000, 1, 1)


def _server(conn, fn: str, cast: str, values: list) -> np.ndarray:
    rows = conn.execute(
        f"SELECT {fn}(v) FROM unnest(%s::{cast}[]) WITH ORDINALITY AS u(v, i) ORDER BY i",
        [values],
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def _ints(rng: random.Random, lo: int, hi: int, n: int = 400) -> list[int]:
    edge = [lo, lo + 1, -1, 0, 1, hi - 1, hi]
    return (
        edge
        + [rng.randint(lo, hi) for _ in range(n)]
        + [rng.randint(-1000, 1000) for _ in range(50)]
    )


def test_integers_match_server(pg_conn):
    rng = random.Random(1)
    for fn, cast, lo, hi, ours in [
        ("hashint2", "int2", -(2**15), 2**15 - 1, hashing.hashint4),
        ("hashint4", "int4", -(2**31), 2**31 - 1, hashing.hashint4),
        ("hashint8", "int8", -(2**63), 2**63 - 1, hashing.hashint8),
    ]:
        vals = _ints(rng, lo, hi)
        assert np.array_equal(_server(pg_conn, fn, cast, vals), ours(np.array(vals))), fn
    small = _ints(rng, -(2**31), 2**31 - 1)
    # cross-type: an int8 in int4 range hashes like the int4 (so csv ints need no width)
    assert np.array_equal(hashing.hashint8(np.array(small)), hashing.hashint4(np.array(small)))


def _strings(rng: random.Random) -> list[str]:
    alphabet = "abcXYZ019 _-éüßж中文🙂"
    out = ["", " ", "a", "ab", "abc", "abcd", "x" * 11, "x" * 12, "y" * 13, "z" * 24, "w" * 25]
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(400)]
    out += ["long " * 60]
    return out


def test_text_and_bpchar_match_server(pg_conn):
    rng = random.Random(2)
    vals = _strings(rng)
    assert np.array_equal(_server(pg_conn, "hashtext", "text", vals), hashing.hashtext(vals))
    assert np.array_equal(_server(pg_conn, "hashtext", "varchar", vals), hashing.hashtext(vals))
    padded = [v + " " * rng.randint(0, 3) for v in vals]
    assert np.array_equal(
        _server(pg_conn, "hashbpchar", "bpchar", padded), hashing.hashbpchar(padded)
    )


def test_numeric_matches_server(pg_conn):
    rng = random.Random(3)
    vals = ["0", "0.000", "-0", "1", "-1", "10000", "0.0001", "1e20", "-1e-20", "12345.678"]
    vals += ["99999999.99990000", "100000000", "0.5", "1.50", "NaN", "-123456789012345678.9"]
    for _ in range(400):
        digits = str(rng.randint(0, 10 ** rng.randint(1, 30)))
        scale = rng.randint(0, 12)
        sign = rng.choice(["", "-"])
        v = Decimal(f"{sign}{digits}").scaleb(-scale)
        vals.append(str(v))
    got = hashing.hash_numeric([Decimal(v) for v in vals])
    assert np.array_equal(_server(pg_conn, "hash_numeric", "numeric", vals), got)


def test_dates_and_timestamps_match_server(pg_conn):
    rng = random.Random(4)
    days = [rng.randint(-700000, 2900000) for _ in range(300)] + [0, -1, 1]
    dates = [dt.date(2000, 1, 1) + dt.timedelta(days=d) for d in days if -730000 < d < 2900000]
    dates = [d for d in dates if 1 <= d.year <= 9999]
    rows = pg_conn.execute(
        "SELECT hashint4(v - DATE '2000-01-01') FROM unnest(%s::date[])"
        " WITH ORDINALITY u(v, i) ORDER BY i",
        [dates],
    )
    server = np.array([r[0] for r in rows])
    ours = hashing.hashint4(np.array([(d - dt.date(2000, 1, 1)).days for d in dates]))
    assert np.array_equal(server, ours)

    stamps = [EPOCH + dt.timedelta(microseconds=rng.randint(-(2**55), 2**55)) for _ in range(300)]
    stamps = [s for s in stamps if 1 <= s.year <= 9999]
    micros = np.array([(s - EPOCH) // dt.timedelta(microseconds=1) for s in stamps])
    assert np.array_equal(
        _server(pg_conn, "timestamp_hash", "timestamp", stamps), hashing.hashint8(micros)
    )
    # timestamptz shares timestamp_hash; the cast is the identity in a UTC session
    aware = [s.replace(tzinfo=dt.UTC) for s in stamps]
    rows = pg_conn.execute(
        "SELECT timestamp_hash(v::timestamp) FROM unnest(%s::timestamptz[])"
        " WITH ORDINALITY u(v, i) ORDER BY i",
        [aware],
    )
    assert np.array_equal(np.array([r[0] for r in rows]), hashing.hashint8(micros))
    secs = [rng.randint(0, 86399) for _ in range(200)]
    times = [dt.time(s // 3600, s // 60 % 60, s % 60, 17 * s % 10**6) for s in secs]
    tmicros = np.array([s * 10**6 + 17 * s % 10**6 for s in secs])
    assert np.array_equal(_server(pg_conn, "time_hash", "time", times), hashing.hashint8(tmicros))


def test_combine_and_bucket_model():
    h1 = np.array([1, -1, 2**31 - 1, -(2**31)], dtype=np.int32)
    h2 = np.array([0, 0, 5, 7], dtype=np.int32)
    got = hashing.combine([h1, h2])
    # rotate-left-1 of the first hash, then XOR the second
    u = h1.view(np.uint32).astype(np.uint64)
    want = (((u << 1) | (u >> 31)) & 0xFFFFFFFF).astype(np.uint32) ^ h2.view(np.uint32)
    assert np.array_equal(got.view(np.uint32), want)
    assert np.array_equal(hashing.combine([h1]), h1)
    assert hashing.bucket_of(np.array([-(2**31)], dtype=np.int32))[0] == 0
    assert hashing.bucket_of(np.array([-5], dtype=np.int32))[0] == 5
