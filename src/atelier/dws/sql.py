"""In-database analysis: hash, bucket and count inside the server; only counts come back.

One statement scans the table (or its TABLESAMPLE) once for every candidate key:

1. the innermost subquery hashes each key column once with the server's own function
   (hashint4, hashint8, hash_numeric, hashtext, hashbpchar, timestamp_hash, time_hash),
   as an unsigned 32-bit value in an int8 (NULL -> 0);
2. one fenced subquery level per extra key column folds composite keys: rotate-left-1 of
   the running hash, XOR the next column's (`OFFSET 0` keeps PostgreSQL from inlining the
   levels into each other, which would duplicate the hash calls);
3. bucket = abs(signed hash) & 16383, and `GROUP BY GROUPING SETS ((b0), (b1), ..., ())`
   counts rows per bucket per key, plus NULL-key rows in the grand-total set.

A second statement counts distinct key values. Identifiers are always
`psycopg.sql.Identifier`, values always bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import sql

from atelier.core.errors import AtelierError
from atelier.dws.catalog import DISTRIBUTABLE, DISTRIBUTABLE_HELP, TableInfo
from atelier.dws.hashing import BUCKETS
from atelier.dws.skew import KeyStats

U32 = sql.SQL("4294967295")

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
    distinct: bool = True,
) -> Counted:
    """Rows per bucket, NULL-key rows and distinct values for every key, in one scan."""
    fraction = 1.0
    if sample_rows:
        est = info.estimated_rows or _count(conn, info)
        fraction = min(1.0, sample_rows / est) if est else 1.0
    source = _source(info, fraction, seed)
    cols = list(dict.fromkeys(c for key in keys for c in key))
    col_id = {c: i for i, c in enumerate(cols)}
    types = {c.name: c.type for c in info.columns}

    # level 0: one hash per column (unsigned, NULL -> 0) and a NULL flag per column
    items = []
    for c in cols:
        expr = sql.SQL(_HASH[DISTRIBUTABLE[types[c]]]).format(sql.Identifier(c))
        items.append(
            sql.SQL("(coalesce({}, 0)::int8 & {}) AS {}").format(
                expr, U32, sql.Identifier(f"h{col_id[c]}")
            )
        )
        items.append(
            sql.SQL("({} IS NULL) AS {}").format(sql.Identifier(c), sql.Identifier(f"z{col_id[c]}"))
        )
    names = [f"h{i}" for i in range(len(cols))] + [f"z{i}" for i in range(len(cols))]
    query = sql.SQL("SELECT {} FROM {} OFFSET 0").format(sql.SQL(", ").join(items), source)
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
                    sql.SQL("(((({r} << 1) & {m}) | ({r} >> 31)) # {n}) AS {a}").format(
                        r=r, m=U32, n=nxt, a=sql.Identifier(name)
                    )
                )
                new[k] = name
        names += list(new.values())
        running.update(new)
        query = sql.SQL("SELECT {} FROM ({}) {} OFFSET 0").format(
            sql.SQL(", ").join(items), query, sql.Identifier(f"l{level}")
        )
    buckets, nulls = [], []
    for k, key in enumerate(keys):
        r = sql.Identifier(running[k])
        buckets.append(
            sql.SQL("(abs({r} - (({r} >> 31) << 32)) & {m}) AS {b}").format(
                r=r, m=sql.Literal(BUCKETS - 1), b=sql.Identifier(f"b{k}")
            )
        )
        nulls.append(
            sql.SQL("({}) AS {}").format(
                sql.SQL(" OR ").join(sql.Identifier(f"z{col_id[c]}") for c in key),
                sql.Identifier(f"n{k}"),
            )
        )
    b_ids = [sql.Identifier(f"b{k}") for k in range(len(keys))]
    final = sql.SQL(
        "SELECT {bs}, count(*), {nulls} FROM (SELECT {items} FROM ({inner}) s) t "
        "GROUP BY GROUPING SETS ({sets}, ())"
    ).format(
        bs=sql.SQL(", ").join(b_ids),
        nulls=sql.SQL(", ").join(
            sql.SQL("count(*) FILTER (WHERE {})").format(sql.Identifier(f"n{k}"))
            for k in range(len(keys))
        ),
        items=sql.SQL(", ").join(buckets + nulls),
        inner=query,
        sets=sql.SQL(", ").join(sql.SQL("({})").format(b) for b in b_ids),
    )
    counts = np.zeros((len(keys), BUCKETS), dtype=np.int64)
    null_counts = [0] * len(keys)
    total = 0
    nk = len(keys)
    for row in conn.execute(final):
        bs, n, ns = row[:nk], row[nk], row[nk + 1 :]
        which = [i for i, b in enumerate(bs) if b is not None]
        if not which:  # grand total
            total = int(n)
            null_counts = [int(x) for x in ns]
        else:
            counts[which[0], int(bs[which[0]])] = int(n)
    distincts = _distinct(conn, keys, source) if distinct else [-1] * len(keys)
    stats = [
        KeyStats(columns=key, buckets=counts[k], nulls=null_counts[k], distinct=distincts[k])
        for k, key in enumerate(keys)
    ]
    return Counted(stats, total, fraction)


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
