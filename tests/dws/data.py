"""One deterministic mixed-type table, loaded into PostgreSQL and written to files."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from psycopg import sql

COLUMNS = [
    ("id", "int4"),
    ("big", "int8"),
    ("name", "text"),
    ("code", "char(4)"),
    ("amount", "numeric(14,3)"),
    ("day", "date"),
    ("ts", "timestamp"),
    ("tstz", "timestamptz"),
    ("region", "int2"),
    ("label", "varchar(20)"),
]


def rows(n: int = 3000, seed: int = 7) -> list[tuple]:
    rng = random.Random(seed)
    words = ["alpha", "béta", "ж", "中文", "x y", "", "🙂", "z"]
    out = []
    for i in range(n):
        null = rng.random() < 0.05
        out.append(
            (
                i,
                rng.randint(-(2**62), 2**62) if i % 5 else 7,  # 20% one value: skewed
                None if null else rng.choice(words) + str(rng.randint(0, 500)),
                None
                if null
                else rng.choice(["ab", "cd", "x"]) + str(i % 3) + rng.choice(["", " "]),
                None
                if null
                else Decimal(rng.randint(-(10**10), 10**10)).scaleb(-3)
                if i % 7
                else Decimal(0),
                dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(-5000, 9000)),
                dt.datetime(2024, 1, 1) + dt.timedelta(microseconds=rng.randint(-(10**15), 10**15)),
                dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
                + dt.timedelta(seconds=rng.randint(0, 10**8)),
                i % 4,  # low cardinality
                None if i % 11 == 0 else f"L{rng.randint(0, 10**6)}",
            )
        )
    return out


def load(conn, schema: str, name: str, data: list[tuple]) -> None:
    table = sql.Identifier(schema, name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(
        sql.SQL("CREATE TABLE {} ({})").format(
            table,
            sql.SQL(", ").join(sql.SQL(f"{{}} {t}").format(sql.Identifier(c)) for c, t in COLUMNS),
        )
    )
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(table)) as cp:
        for r in data:
            cp.write_row(r)


def to_parquet(data: list[tuple], path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = [
        pa.int32(),
        pa.int64(),
        pa.string(),
        pa.string(),
        pa.decimal128(14, 3),
        pa.date32(),
        pa.timestamp("us"),
        pa.timestamp("us", tz="UTC"),
        pa.int16(),
        pa.string(),
    ]
    cols = list(zip(*data, strict=True))
    arrays = [pa.array(list(c), type=t) for c, t in zip(cols, types, strict=True)]
    pq.write_table(pa.table(arrays, names=[c for c, _ in COLUMNS]), path)


def to_csv(conn, schema: str, name: str, path) -> None:
    """As PostgreSQL itself exports it (COPY ... CSV HEADER)."""
    q = sql.SQL("COPY {} TO STDOUT WITH (FORMAT csv, HEADER)").format(sql.Identifier(schema, name))
    with open(path, "wb") as f, conn.cursor().copy(q) as cp:
        for block in cp:
            f.write(block)
