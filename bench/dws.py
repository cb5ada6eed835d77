"""dws skew benchmark: in-database analysis vs pulling the key columns and hashing client-side.

A 10M-row table with 5 candidate keys (one badly skewed, one low-cardinality, one good,
a text key and a numeric key) is generated inside PostgreSQL with generate_series. Both
paths run in the same process on the same server; they must agree bucket for bucket.
The in-database path runs with the default page ranges and with one statement (they must
agree exactly); the HyperLogLog distinct estimates are printed next to the exact
`count(DISTINCT)` figures (`--exact-distinct`, computed here only to show the error).

    python bench/dws.py --dsn postgresql://...      (or with scripts/postgres.sh started)
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg

from atelier.dws import hashing
from atelier.dws.analyze import SkewConfig, default_jobs, skew

KEYS = [("bad",), ("low",), ("good",), ("name",), ("amount",)]


def make_table(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_skew")
        conn.execute(
            "CREATE UNLOGGED TABLE bench_skew AS SELECT "
            "CASE WHEN g %% 10 < 6 THEN 0 ELSE g END::int8 AS bad, "  # 60% one value
            "(g %% 7)::int4 AS low, "
            "g::int8 AS good, "
            "'cust' || (g %% 1000003)::text AS name, "
            "((g %% 500009) / 100.0)::numeric(12,2) AS amount "
            "FROM generate_series(1, %s) g",
            [rows],
        )
        conn.execute("VACUUM ANALYZE bench_skew")


def client_side(dsn: str) -> dict[tuple[str, ...], np.ndarray]:
    """Fetch the key columns (binary COPY would be faster still; this is what a client does)."""
    out: dict[tuple[str, ...], np.ndarray] = {}
    with psycopg.connect(dsn) as conn:
        cols: dict[str, list] = {k[0]: [] for k in KEYS}
        with conn.cursor(name="pull") as cur:
            cur.itersize = 200_000
            cur.execute("SELECT bad, low, good, name, amount FROM bench_skew")
            for batch in iter(lambda: cur.fetchmany(200_000), []):
                for i, k in enumerate(cols):
                    cols[k].extend(r[i] for r in batch)
    fns = {
        "bad": lambda v: hashing.hashint8(np.array(v, dtype=np.int64)),
        "low": lambda v: hashing.hashint4(np.array(v, dtype=np.int64)),
        "good": lambda v: hashing.hashint8(np.array(v, dtype=np.int64)),
        "name": hashing.hashtext,
        "amount": lambda v: hashing.hash_numeric([Decimal(x) for x in v]),
    }
    for (c,) in KEYS:
        b = hashing.bucket_of(fns[c](cols[c]))
        out[(c,)] = np.bincount(b, minlength=hashing.BUCKETS)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default=None, help="default: .pg/dsn from scripts/postgres.sh")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--skip-client", action="store_true")
    ap.add_argument("--skip-exact", action="store_true", help="no count(DISTINCT) comparison")
    ap.add_argument("--jobs", type=int, default=None, help="page ranges (default min(4, CPUs))")
    a = ap.parse_args()
    dsn = a.dsn or (Path(__file__).resolve().parents[1] / ".pg" / "dsn").read_text().strip()
    t = time.perf_counter()
    make_table(dsn, a.rows)
    print(f"generate {a.rows:,} rows in PostgreSQL: {time.perf_counter() - t:.1f} s")

    jobs = a.jobs or default_jobs()
    t = time.perf_counter()
    rep = skew(SkewConfig(dsn=dsn, table="public.bench_skew", columns=KEYS, nodes=6, jobs=jobs))
    t_db = time.perf_counter() - t
    print(f"in-database (buckets + HyperLogLog distinct, 5 keys, {jobs} page ranges): {t_db:.1f} s")
    if jobs > 1:
        t = time.perf_counter()
        one = skew(SkewConfig(dsn=dsn, table="public.bench_skew", columns=KEYS, nodes=6, jobs=1))
        print(f"in-database, one statement (--jobs 1): {time.perf_counter() - t:.1f} s")
        same = all(
            np.array_equal(x.stats.buckets, y.stats.buckets)
            and np.array_equal(x.stats.registers, y.stats.registers)
            for x, y in zip(rep.ranked, one.ranked, strict=True)
        )
        print(
            f"  {jobs} ranges == 1 statement, bucket for bucket and register for register: {same}"
        )
    exact = {}
    if not a.skip_exact:
        t = time.perf_counter()
        ex = skew(
            SkewConfig(
                dsn=dsn, table="public.bench_skew", columns=KEYS, nodes=6, exact_distinct=True
            )
        )
        print(
            f"in-database with --exact-distinct (count(DISTINCT), bench only): "
            f"{time.perf_counter() - t:.1f} s"
        )
        exact = {r.stats.columns: r.stats.distinct for r in ex.ranked}
    for r in rep.ranked:
        s = r.stats
        line = f"  {s.label:8s} skew {s.skew_ratio:7.1%}  distinct≈ {s.distinct:>10,}"
        if s.columns in exact:
            n = exact[s.columns]
            line += f"  exact {n:>10,}  error {(s.distinct - n) / n:+6.2%}"
        print(f"{line}  {s.verdict}")
    print(f"  recommendation: {rep.recommendation.ddl or rep.recommendation.strategy}")
    if a.skip_client:
        return
    t = time.perf_counter()
    client = client_side(dsn)
    t_cl = time.perf_counter() - t
    agree = all(np.array_equal(client[r.stats.columns], r.stats.buckets) for r in rep.ranked)
    print(f"client-side (fetch 5 columns + numpy hashing): {t_cl:.1f} s; agree: {agree}")
    print(f"ratio client/in-database: {t_cl / t_db:.1f}x")


if __name__ == "__main__":
    main()
