"""In-database analysis: hash, bucket and count inside the server; only counts come back.

One statement per page range scans the table once for every candidate key:

1. the innermost subquery (fenced with `OFFSET 0`, so each hash is computed once although
   the bucket and the HyperLogLog rank both use it) hashes each key column once with the
   server's own function (hashint4, hashint8, hash_numeric, hashtext, hashbpchar,
   timestamp_hash, time_hash) as a signed int4 (NULL -> 0);
2. one fenced subquery level per extra key column folds composite keys in int4: rotate-left-1
   of the running hash, `(x << 1) | ((x >> 31) & 1)`, XOR the next column's;
3. bucket = abs(int4 hash) & 16383 (a CASE, no int8 cast, INT_MIN -> 0 as in C), plus
   16384 for rows with a NULL key column (so they are counted apart, and left out of the
   distinct estimate);
   rho = 1 + leading zeros of bits 14..30 of the hash, as the one-hot constant
   1 << (rho - 1) from a CASE ladder (~2 comparisons per row on average), three keys
   packed per int8; `GROUP BY GROUPING SETS ((b0), (b1), ...)` returns per key and bucket
   count(*) and bit_or(packed rho bits), whose highest bit is max(rho): the HyperLogLog
   registers (hll.py). Aggregates run for every grouping set, so there are few of them:
   count(*) and one bit_or per three keys, no FILTER and no grand-total set.

PostgreSQL runs GROUPING SETS in one process, so the table may be split into `jobs` ranges
of pages, each on its own connection sharing one snapshot (`page_ranges.py`), and counts
are summed and registers maxed client-side: the result is identical for any number of
ranges. Exact distinct counts (`count(DISTINCT ...)`, one sort per key) are a second
statement, only on request. Identifiers are always `psycopg.sql.Identifier`, values always
literals or bound parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import sql

from atelier.core.errors import AtelierError
from atelier.dws import hll
from atelier.dws.hashing import BUCKETS
from atelier.dws.page_ranges import NoConnection, page_ranges, range_sql, run_ranges
from atelier.dws.skew import KeyStats
from atelier.dws.table import DISTRIBUTABLE, DISTRIBUTABLE_HELP, TableInfo

_HASH = {
    "int4": "hashint4({})",
    "int8": "hashint8({})",
    "numeric": "hash_numeric({})",
    "text": "hashtext({}::text)",
    "bpchar": "hashbpchar({})",
    # DateADT is days since 2000-01-01, +-infinity are INT_MAX / INT_MIN
    "date": (
        "hashint4(CASE WHEN {0} = 'infinity'::date THEN 2147483647 "
        "WHEN {0} = '-infinity'::date THEN -2147483648 ELSE {0} - DATE '2000-01-01' END)"
    ),
    "timestamp": "timestamp_hash({})",
    # same bits as timestamp: the cast is the identity because the session runs in UTC
    "timestamptz": "timestamp_hash({}::timestamp)",
    "time": "time_hash({})",
}


@dataclass
class Counted:
    """What the scan returned: per-key stats and how much of the table was read."""

    keys: list[KeyStats]
    rows: int
    sample_fraction: float  # 1.0 when the whole table was read
    jobs: int = 1  # page ranges scanned concurrently


def check_keys(info: TableInfo, keys: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Resolve names against the catalog; refuse unknown columns and undistributable types."""
    out = []
    for key in keys:
        cols = tuple(info.column(c) for c in key)
        for c in cols:
            if not c.distributable:
                raise AtelierError(
                    f"column {c.name} of {info.qualified} has type {c.type}, which cannot be a "
                    f"distribution key; distributable types: {DISTRIBUTABLE_HELP}"
                )
        if len({c.name for c in cols}) != len(cols):
            raise AtelierError(f"key ({', '.join(key)}) names a column twice")
        out.append(tuple(c.name for c in cols))
    return list(dict.fromkeys(out))


def count_keys(
    conn: Any,
    info: TableInfo,
    keys: list[tuple[str, ...]],
    sample_rows: int | None = None,
    seed: int = 0,
    exact_distinct: bool = False,
    jobs: int = 1,
    connect: Callable[[], AbstractContextManager[Any]] | None = None,
    min_pages_per_job: int = 1024,
) -> Counted:
    """Rows per bucket, NULL-key rows and distinct values (HyperLogLog) for every key.

    `jobs` > 1 splits a full scan into that many page ranges run concurrently on
    connections from `connect` (PostgreSQL 14+, ranges of at least `min_pages_per_job`
    pages); a sampled scan is always one statement.
    """
    fraction = 1.0
    if sample_rows:
        est = info.estimated_rows or _count(conn, info)
        fraction = min(1.0, sample_rows / est) if est else 1.0
    source = _source(info, fraction, seed)
    ranges: list[tuple[int | None, int | None]] = [(None, None)]
    if fraction >= 1.0 and jobs > 1 and connect is not None:
        ranges = page_ranges(conn, info, jobs, min_pages_per_job)
    nk = len(keys)
    counts = np.zeros((nk, BUCKETS), dtype=np.int64)
    regs = np.zeros((nk, BUCKETS), dtype=np.int8)
    null_counts = np.zeros(nk, dtype=np.int64)
    total = 0
    for first, batch in _batches(keys):
        if len(ranges) == 1:
            results = [conn.execute(_scan_query(info, batch, source)).fetchall()]
        else:
            assert connect is not None
            queries = [_scan_query(info, batch, source, range_sql(lo, hi)) for lo, hi in ranges]
            try:
                results = run_ranges(conn, connect, queries)
            except NoConnection:  # no more connections: one statement on this one
                ranges = [(None, None)]
                results = [conn.execute(_scan_query(info, batch, source)).fetchall()]
        nb, batch_total = len(batch), 0
        for rows in results:
            for row in rows:
                j = next(i for i, b in enumerate(row[:nb]) if b is not None)
                k, b, n = first + j, int(row[j]), int(row[nb])
                if j == 0:
                    batch_total += n
                if b >= BUCKETS:  # rows with a NULL key column
                    null_counts[k] += n
                    counts[k, b - BUCKETS] += n
                    continue
                counts[k, b] += n
                bits = (int(row[nb + 1 + j // PACK]) >> (18 * (j % PACK))) & 0x3FFFF
                regs[k, b] = max(int(regs[k, b]), bits.bit_length())
        total = total if first else batch_total
    distincts = _distinct(conn, keys, source) if exact_distinct else None
    stats = []
    for k, key in enumerate(keys):
        est = hll.estimate(regs[k])
        stats.append(
            KeyStats(
                columns=key,
                buckets=counts[k],
                nulls=int(null_counts[k]),
                distinct=distincts[k] if distincts else est,
                registers=regs[k],
                distinct_exact=distincts is not None,
            )
        )
    return Counted(stats, total, fraction, len(ranges))


PACK = 3  # keys per packed int8 register column: 3 x 18 one-hot bits
# PostgreSQL allows 1664 entries in a target list (the innermost level has two per column,
# each fenced level carries all names forward), and the hashed GROUPING SETS cost grows
# faster than the number of sets (each set's entries carry every packed register column):
# on a 1000-column table, 0.025 s per key at 4 keys per statement, 0.048 at 32, 0.17 at
# 128. So a wide table's keys are counted in statements of at most 32 columns and keys.
MAX_COLUMNS_PER_SCAN = 32


def _batches(keys: list[tuple[str, ...]]) -> list[tuple[int, list[tuple[str, ...]]]]:
    """(index of the first key, keys) per statement."""
    out: list[tuple[int, list[tuple[str, ...]]]] = []
    cols: set[str] = set()
    for i, key in enumerate(keys):
        if (
            not out
            or len(cols | set(key)) > MAX_COLUMNS_PER_SCAN
            or len(out[-1][1]) >= (MAX_COLUMNS_PER_SCAN)
        ):
            out.append((i, []))
            cols = set()
        out[-1][1].append(key)
        cols |= set(key)
    return out


def _rho_bit(x: sql.Composable, shift: int) -> sql.Composable:
    """1 << (rho - 1 + shift), rho = 1 + leading zeros of bits 14..30 of int4 x (1..18).

    A CASE ladder on x & 0x7FFFC000 (two comparisons on average) whose results are
    constants, so `bit_or` of it per bucket keeps every rho seen and the highest bit is
    max(rho): one aggregate carries the registers of three keys.
    """
    t = sql.SQL("({} & {})").format(x, sql.Literal(hll.RHO_MASK))
    whens = [
        sql.SQL("WHEN {} >= {} THEN {}").format(
            t, sql.Literal(1 << (31 - rho)), sql.Literal(1 << (rho - 1 + shift))
        )
        for rho in range(1, hll.RHO_MAX)
    ]
    return sql.SQL("(CASE {} ELSE {} END)").format(
        sql.SQL(" ").join(whens), sql.Literal(1 << (hll.RHO_MAX - 1 + shift))
    )


def _scan_query(
    info: TableInfo,
    keys: list[tuple[str, ...]],
    source: sql.Composable,
    where: sql.Composable | None = None,
) -> sql.Composed:
    """The GROUPING SETS statement, over the rows `where` selects (a page range)."""
    cols = list(dict.fromkeys(c for key in keys for c in key))
    col_id = {c: i for i, c in enumerate(cols)}
    types = {c.name: c.type for c in info.columns}

    # level 0: one hash per column (int4, NULL -> 0) and a NULL flag per column
    items = []
    for c in cols:
        expr = sql.SQL(_HASH[DISTRIBUTABLE[types[c]]]).format(sql.Identifier(c))
        items.append(sql.SQL("coalesce({}, 0) AS {}").format(expr, sql.Identifier(f"h{col_id[c]}")))
        items.append(
            sql.SQL("({} IS NULL) AS {}").format(sql.Identifier(c), sql.Identifier(f"z{col_id[c]}"))
        )
    names = [f"h{i}" for i in range(len(cols))] + [f"z{i}" for i in range(len(cols))]
    query = sql.SQL("SELECT {} FROM {} {} OFFSET 0").format(
        sql.SQL(", ").join(items), source, where or sql.SQL("")
    )
    running = {k: f"h{col_id[key[0]]}" for k, key in enumerate(keys)}
    for level in range(1, max(len(k) for k in keys)):
        new = {}
        items = [sql.Identifier(n) for n in names]
        for k, key in enumerate(keys):
            if len(key) > level:
                r = sql.Identifier(running[k])
                nxt = sql.Identifier(f"h{col_id[key[level]]}")
                name = f"r{k}_{level}"
                items.append(
                    sql.SQL("((({r} << 1) | (({r} >> 31) & 1)) # {n}) AS {a}").format(
                        r=r, n=nxt, a=sql.Identifier(name)
                    )
                )
                new[k] = name
        names += list(new.values())
        running.update(new)
        query = sql.SQL("SELECT {} FROM ({}) {} OFFSET 0").format(
            sql.SQL(", ").join(items), query, sql.Identifier(f"l{level}")
        )
    outs, packs = [], []
    for k, key in enumerate(keys):
        x = sql.Identifier(running[k])
        null = sql.SQL(" OR ").join(sql.Identifier(f"z{col_id[c]}") for c in key)
        m = sql.Literal(BUCKETS - 1)
        # abs(int4) & 16383 without abs(INT_MIN) overflowing: -(x & m) & m for negatives.
        # Rows with a NULL key column get bucket + 16384, to count them apart; a
        # one-column key's NULLs hash to 0, bucket 0.
        bucket = sql.SQL("CASE WHEN {x} >= 0 THEN {x} & {m} ELSE (-({x} & {m})) & {m} END")
        outs.append(
            sql.SQL("({} + CASE WHEN {} THEN {} ELSE 0 END) AS {}").format(
                bucket.format(x=x, m=m), null, sql.Literal(BUCKETS), sql.Identifier(f"b{k}")
            )
            if len(key) > 1
            else sql.SQL(
                "(CASE WHEN {n} THEN {nb} WHEN {x} >= 0 THEN {x} & {m} "
                "ELSE (-({x} & {m})) & {m} END) AS {b}"
            ).format(n=null, nb=sql.Literal(BUCKETS), x=x, m=m, b=sql.Identifier(f"b{k}"))
        )
        if k % PACK == 0:
            packs.append([])
        packs[-1].append(_rho_bit(x, 18 * (k % PACK)))
    for g, bits in enumerate(packs):
        outs.append(
            sql.SQL("({}) AS {}").format(sql.SQL(" | ").join(bits), sql.Identifier(f"p{g}"))
        )
    b_ids = [sql.Identifier(f"b{k}") for k in range(len(keys))]
    return sql.SQL(
        "SELECT {bs}, count(*), {regs} FROM (SELECT {items} FROM ({inner}) s) t "
        "GROUP BY GROUPING SETS ({sets})"
    ).format(
        bs=sql.SQL(", ").join(b_ids),
        regs=sql.SQL(", ").join(
            sql.SQL("bit_or({})").format(sql.Identifier(f"p{g}")) for g in range(len(packs))
        ),
        items=sql.SQL(", ").join(outs),
        inner=query,
        sets=sql.SQL(", ").join(sql.SQL("({})").format(b) for b in b_ids),
    )


def _distinct(conn: Any, keys: list[tuple[str, ...]], source: sql.Composable) -> list[int]:
    """Distinct non-NULL key values (rows with a NULL key column are not counted)."""
    aggs = []
    for key in keys:
        ids = [sql.Identifier(c) for c in key]
        if len(key) == 1:
            aggs.append(sql.SQL("count(DISTINCT {})").format(ids[0]))
        else:
            aggs.append(
                sql.SQL("count(DISTINCT ({})) FILTER (WHERE {})").format(
                    sql.SQL(", ").join(ids),
                    sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(i) for i in ids),
                )
            )
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(aggs), source))
    return [int(x) for x in row.fetchone()]


def _source(info: TableInfo, fraction: float, seed: int) -> sql.Composable:
    table = sql.Identifier(info.schema, info.name)
    if fraction >= 1.0:
        return table
    # block sampling: reads only the sampled pages, which is the point for huge tables
    return sql.SQL("{} TABLESAMPLE SYSTEM ({}) REPEATABLE ({})").format(
        table, sql.Literal(round(fraction * 100, 6)), sql.Literal(seed)
    )


def _count(conn: Any, info: TableInfo) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(info.schema, info.name))
    ).fetchone()
    return int(row[0])
