"""The same analysis on a parquet or csv file, with numpy and pyarrow.

Column types come from the file (parquet's schema; csv by inference, where anything with
a decimal point is read as exact numeric text, never as a float) and map to the
PostgreSQL type that would hold them; `types` overrides that, e.g. `{"code": "bpchar"}`
for char(n) data. Every hash is hashing.py's bit-exact copy of the server's, so a file
exported from a table gives the same per-bucket counts as the in-database path.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np

from atelier.core.errors import AtelierError
from atelier.dws import hashing, hll
from atelier.dws.catalog import DISTRIBUTABLE, DISTRIBUTABLE_HELP, Column, TableInfo
from atelier.dws.skew import KeyStats

_EPOCH_2000_US = 946_684_800_000_000
_EPOCH_2000_DAYS = 10_957


def read_table(path: str | Path, types: dict[str, str] | None = None):
    """Load the file as a pyarrow Table plus the PostgreSQL type of each column."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise AtelierError(f"--file {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
        elif suffix in (".csv", ".txt"):
            conv = pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
            table = pacsv.read_csv(path, convert_options=conv)
            floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
            if floats:  # exact decimal text, not binary floats: numeric hashes digits
                conv = pacsv.ConvertOptions(
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    column_types={n: pa.string() for n in floats},
                )
                table = pacsv.read_csv(path, convert_options=conv)
                types = {**{n: "numeric" for n in floats}, **(types or {})}
        else:
            raise AtelierError(f"--file {path}: expected a .parquet or .csv file")
    except (pa.ArrowInvalid, OSError) as e:
        raise AtelierError(f"--file {path}: cannot read: {str(e).splitlines()[0]}") from None
    pg = {f.name: _pg_type(f.type) for f in table.schema}
    for name, t in (types or {}).items():
        if name not in pg:
            raise AtelierError(f"--type {name}={t}: {path.name} has no column {name!r}")
        if t not in DISTRIBUTABLE:
            raise AtelierError(
                f"--type {name}={t}: unknown type; use one of {', '.join(DISTRIBUTABLE)}"
            )
        pg[name] = t
    return table, pg


def _pg_type(t) -> str:
    import pyarrow as pa

    if pa.types.is_integer(t):
        return "int8"  # hashint8 == hashint4 for values in int4 range: width does not matter
    if pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_time(t):
        return "time"
    return str(t)


def column_hash(col, pg_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Signed int32 hash per row (NULL -> 0) and the NULL mask, for one column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    family = DISTRIBUTABLE[pg_type]
    if family in ("int4", "int8"):
        vals = pc.fill_null(col.cast(pa.int64()), 0).to_numpy()
        h = hashing.hashint8(vals)
    elif family in ("text", "bpchar"):
        strs = [s if s is not None else "" for s in col.cast(pa.string()).to_pylist()]
        h = hashing.hashbpchar(strs) if family == "bpchar" else hashing.hashtext(strs)
    elif family == "numeric":
        vals = [Decimal(str(v)) if v is not None else Decimal(0) for v in col.to_pylist()]
        h = hashing.hash_numeric(vals)
    elif family == "date":
        days = pc.fill_null(col.cast(pa.date32()).cast(pa.int32()), 0).to_numpy()
        h = hashing.hashint4(days.astype(np.int64) - _EPOCH_2000_DAYS)
    elif family in ("timestamp", "timestamptz"):
        us = col.cast(pa.timestamp("us", tz=col.type.tz)).cast(pa.int64())
        h = hashing.hashint8(pc.fill_null(us, 0).to_numpy() - _EPOCH_2000_US)
    elif family == "time":
        us = pc.fill_null(col.cast(pa.time64("us")).cast(pa.int64()), 0).to_numpy()
        h = hashing.hashint8(us)
    else:  # pragma: no cover - DISTRIBUTABLE and this list move together
        raise AssertionError(family)
    h = np.where(nulls, 0, h).astype(np.int32)
    return h, nulls


def file_info(path: str | Path, table, pg: dict[str, str]) -> TableInfo:
    cols = [Column(n, pg[n]) for n in table.column_names]
    first = next((c.name for c in cols if c.distributable), None)
    return TableInfo(
        schema="file",
        name=Path(path).stem,
        columns=cols,
        estimated_rows=table.num_rows,
        current_key=(first,) if first else None,
        current_source="first distributable column",
    )


def count_keys_offline(
    table, pg: dict[str, str], keys: list[tuple[str, ...]], exact_distinct: bool = False
) -> list[KeyStats]:
    """Rows per bucket, NULL-key rows and distinct non-NULL values, per key.

    Distinct values are the HyperLogLog estimate from the same registers the database
    path builds (hll.py); `exact_distinct` groups the key values instead.
    """
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for key in keys:
        for c in key:
            if c not in cache:
                if pg[c] not in DISTRIBUTABLE:
                    raise AtelierError(
                        f"column {c} has type {pg[c]}, which cannot be a distribution key; "
                        f"distributable types: {DISTRIBUTABLE_HELP}"
                    )
                cache[c] = column_hash(table.column(c), pg[c])
        key_hash = hashing.combine([cache[c][0] for c in key])
        bucket = hashing.bucket_of(key_hash)
        buckets = np.bincount(bucket, minlength=hashing.BUCKETS)
        any_null = np.zeros(table.num_rows, dtype=bool)
        for c in key:
            any_null |= cache[c][1]
        regs = hll.registers(bucket, key_hash, ~any_null)
        if exact_distinct:
            distinct = _exact_distinct(table, pg, key, any_null)
        else:
            distinct = hll.estimate(regs)
        out.append(
            KeyStats(
                key,
                buckets.astype(np.int64),
                int(any_null.sum()),
                distinct,
                registers=regs,
                distinct_exact=exact_distinct,
            )
        )
    return out


def _exact_distinct(table, pg: dict[str, str], key: tuple[str, ...], any_null) -> int:
    import pyarrow.compute as pc

    sub = table.select(list(key)).filter(pc.invert(_mask(any_null)))
    for c in key:
        if pg[c] == "bpchar":  # char(n): 'a' and 'a  ' are the same value
            i = sub.column_names.index(c)
            sub = sub.set_column(i, c, pc.utf8_rtrim(sub.column(c), characters=" "))
    return sub.group_by(list(key)).aggregate([]).num_rows if sub.num_rows else 0


def _mask(values: np.ndarray):
    import pyarrow as pa

    return pa.array(values, type=pa.bool_())
