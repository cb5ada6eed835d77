"""The same analysis on a parquet or csv file, with numpy and pyarrow.

Column types come from the file (parquet's schema; csv by inference, where anything with
a decimal point is read as exact numeric text, never as a float) and map to the
PostgreSQL type that would hold them; `types` overrides that, e.g. `{"code": "bpchar"}`
for char(n) data. Every hash is hashing.py's bit-exact copy of the server's, so a file
exported from a table gives the same per-bucket counts as the in-database path.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np

from atelier.core.errors import AtelierError
from atelier.dws import hashing, hll
from atelier.dws.skew import KeyStats
from atelier.dws.table import (
    DISTRIBUTABLE,
    DISTRIBUTABLE_HELP,
    TYPE_ALIASES,
    Column,
    TableInfo,
)

_EPOCH_2000_US = 946_684_800_000_000
_EPOCH_2000_DAYS = 10_957


def read_table(path: str | Path, types: dict[str, str] | None = None):
    """Load the file as a pyarrow Table plus the PostgreSQL type of each column."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    types = {n: TYPE_ALIASES.get(t, t) for n, t in (types or {}).items()}
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
            # a column given a text type keeps its exact text ('007' is not 7)
            texts = [
                f.name
                for f in table.schema
                if DISTRIBUTABLE.get(types.get(f.name, ""), "") in ("text", "bpchar")
                and not pa.types.is_string(f.type)
            ]
            if floats or texts:  # exact decimal text, not binary floats: numeric hashes digits
                conv = pacsv.ConvertOptions(
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    column_types={n: pa.string() for n in floats + texts},
                )
                table = pacsv.read_csv(path, convert_options=conv)
                types = {**{n: "numeric" for n in floats}, **types}
        else:
            raise AtelierError(f"--file {path}: expected a .parquet or .csv file")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise AtelierError(f"--file {path}: cannot read: {str(e).splitlines()[0]}") from None
    names = table.column_names
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise AtelierError(
            f"--file {path}: column {dup!r} appears {names.count(dup)} times; rename all but one"
        )
    for i, f in enumerate(table.schema):  # dictionary-encoded (e.g. pandas categoricals)
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
    pg = {f.name: _pg_type(f.type) for f in table.schema}
    for name, t in types.items():
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
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytea"  # a csv column that is not UTF-8 text
    return str(t)


_INT_RANGE = {"int2": (-(2**15), 2**15 - 1), "int4": (-(2**31), 2**31 - 1)}


class BadValue(Exception):
    """A value that does not convert to the column's type, at row `index` of the file."""

    def __init__(self, index: int, value: object) -> None:
        super().__init__(index, value)
        self.index, self.value = index, value


def _conversion_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowInvalid, pa.ArrowNotImplementedError, ArithmeticError, ValueError, TypeError)


def _converted(col, fn: Callable):
    """fn(col), or BadValue naming the first row fn fails on (found by bisection)."""
    errors = _conversion_errors()
    try:
        return fn(col)
    except errors:
        pass
    lo, hi = 0, len(col)  # fn fails on col[lo:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            fn(col.slice(lo, mid - lo))
            lo = mid
        except errors:
            hi = mid
    raise BadValue(lo, col[lo].as_py())


def column_hash(col, pg_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Signed int32 hash per row (NULL -> 0) and the NULL mask, for one column.

    A value the type cannot hold raises BadValue with its row (the caller names the
    file, line and column).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    family = DISTRIBUTABLE[pg_type]
    if family in ("int4", "int8"):

        def ints(c):
            if pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
                c = pc.utf8_trim_whitespace(c)  # PostgreSQL accepts ' 42 '
            return c.cast(pa.int64())

        vals = pc.fill_null(_converted(col, ints), 0).to_numpy()
        if pg_type in _INT_RANGE:
            lo, hi = _INT_RANGE[pg_type]
            out = np.flatnonzero((vals < lo) | (vals > hi))
            if out.size:
                raise BadValue(int(out[0]), col[int(out[0])].as_py())
        h = hashing.hashint8(vals)
    elif family in ("text", "bpchar"):
        strs = [s if s is not None else "" for s in col.cast(pa.string()).to_pylist()]
        h = hashing.hashbpchar(strs) if family == "bpchar" else hashing.hashtext(strs)
    elif family == "numeric":

        def decimals(c):
            return [Decimal(str(v).strip()) if v is not None else Decimal(0) for v in c.to_pylist()]

        h = hashing.hash_numeric(_converted(col, decimals))
    elif family == "date":
        dates = _converted(col, lambda c: c.cast(pa.date32()))
        days = pc.fill_null(dates.cast(pa.int32()), 0).to_numpy()
        h = hashing.hashint4(days.astype(np.int64) - _EPOCH_2000_DAYS)
    elif family in ("timestamp", "timestamptz"):
        tz = getattr(col.type, "tz", None)
        us = _converted(col, lambda c: c.cast(pa.timestamp("us", tz=tz))).cast(pa.int64())
        h = hashing.hashint8(pc.fill_null(us, 0).to_numpy() - _EPOCH_2000_US)
    elif family == "time":

        def micros(c):
            if pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
                # Arrow has no string -> time cast: parse as a time on 2000-01-01
                day = pc.binary_join_element_wise("2000-01-01 ", pc.utf8_trim_whitespace(c), "")
                return pc.subtract(day.cast(pa.timestamp("us")).cast(pa.int64()), _EPOCH_2000_US)
            return c.cast(pa.time64("us")).cast(pa.int64())

        us = pc.fill_null(_converted(col, micros), 0).to_numpy()
        h = hashing.hashint8(us)
    else:  # pragma: no cover - DISTRIBUTABLE and this list move together
        raise AssertionError(family)
    h = np.where(nulls, 0, h).astype(np.int32)
    return h, nulls


def row_location(path: str | Path, index: int) -> str:
    """`line N` of data row `index` in a csv (quoted fields may span lines), `row N` else."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".txt"):
        return f"row {index + 1}"
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header
        before, k = reader.line_num, 0
        for row in reader:
            if row:  # pyarrow skips empty lines too
                if k == index:
                    return f"line {before + 1}"
                k += 1
            before = reader.line_num
    return f"row {index + 1}"


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
    table,
    pg: dict[str, str],
    keys: list[tuple[str, ...]],
    exact_distinct: bool = False,
    path: str | Path = "the file",
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
                try:
                    cache[c] = column_hash(table.column(c), pg[c])
                except BadValue as e:
                    raise AtelierError(
                        f"{path}: {row_location(path, e.index)}, column {c}: {e.value!r} is not "
                        f"a valid {pg[c]} "
                        f"value; fix the file or give the column another type (--type {c}=text)"
                    ) from None
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
