"""Connecting read-only, and what the catalog says about a table.

Every database error a user can cause (unreachable server, bad password, unknown table
or column, a statement timeout) becomes one `AtelierError` line here, so the rest of
the suite never sees a driver exception.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from atelier.core.errors import AtelierError

# PostgreSQL type name -> the hash family that places it (see hashing.py / sql.py).
DISTRIBUTABLE = {
    "int2": "int4",
    "int4": "int4",
    "int8": "int8",
    "numeric": "numeric",
    "text": "text",
    "varchar": "text",
    "bpchar": "bpchar",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
}
DISTRIBUTABLE_HELP = (
    "smallint, integer, bigint, numeric/decimal, text, varchar, char(n), date, time, "
    "timestamp, timestamptz"
)


@dataclass
class Column:
    name: str
    type: str  # pg_type.typname

    @property
    def distributable(self) -> bool:
        return self.type in DISTRIBUTABLE


@dataclass
class TableInfo:
    schema: str
    name: str
    columns: list[Column]
    estimated_rows: int
    current_key: tuple[str, ...] | None  # None: not hash-distributed (or no distributable column)
    current_source: str  # "pgxc_class", "gp_distribution_policy" or "first distributable column"
    locator: str = "hash"
    native: dict[str, Any] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        for c in self.columns:
            if c.name == name.lower():
                return c
        listed = ", ".join(f"{c.name} ({c.type})" for c in self.columns)
        raise AtelierError(f"table {self.qualified} has no column {name!r}; columns: {listed}")


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    dsn = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def flavor_of(version: str) -> str:
    v = version.lower()
    if "gaussdb" in v:
        return "dws"
    if "opengauss" in v:
        return "opengauss"
    if "greenplum" in v:
        return "greenplum"
    return "postgresql"


@contextlib.contextmanager
def connect(dsn: str, statement_timeout: float = 300.0) -> Iterator[Any]:
    """A read-only session: the advisor never changes anything, DDL included."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - declared in the dws extra
        raise AtelierError("the dws suite needs psycopg: pip install 'atelier[dws]'") from e
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=False)
    except psycopg.OperationalError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise AtelierError(f"cannot connect to {redact(dsn)}: {first}") from None
    except psycopg.ProgrammingError as e:
        raise AtelierError(f"--dsn {redact(dsn)}: {e}") from None
    try:
        conn.read_only = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                [f"{int(statement_timeout * 1000)}ms"],
            )
            # timestamptz hashes via timestamp_hash(v::timestamp): identity only in UTC
            cur.execute("SELECT set_config('TimeZone', 'UTC', false)")
            cur.execute("SELECT set_config('work_mem', '256MB', false)")
        conn.commit()
        with translate_errors(statement_timeout):
            yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()


@contextlib.contextmanager
def translate_errors(statement_timeout: float) -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.errors.QueryCanceled:
        raise AtelierError(
            f"a statement ran past --statement-timeout {statement_timeout:g}s; raise it, or "
            "use --sample ROWS to analyze a sample of the table"
        ) from None
    except psycopg.errors.InsufficientPrivilege as e:
        raise AtelierError(f"permission denied: {str(e).splitlines()[0]}") from None
    except psycopg.OperationalError as e:
        raise AtelierError(
            f"database connection failed: {str(e).strip().splitlines()[0]}"
        ) from None


def split_table(name: str) -> tuple[str | None, str]:
    parts = [p.strip('"') for p in re.findall(r'"(?:[^"]|"")*"|[^.]+', name)]
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise AtelierError(f"--table {name!r}: expected schema.table or table")


def _one(conn: Any, query: str, params: list[Any] | None = None) -> Any:
    row = conn.execute(query, params or []).fetchone()
    return row[0] if row else None


def version(conn: Any) -> str:
    return str(_one(conn, "SELECT version()"))


def describe(conn: Any, table: str) -> TableInfo:
    """Columns, estimated size and current distribution key of `schema.table`."""
    schema, name = split_table(table)
    if schema is None:
        schema = _one(conn, "SELECT current_schema()") or "public"
    row = None
    for s, n in [(schema, name), (schema.lower(), name.lower())]:
        row = conn.execute(
            "SELECT c.oid, n.nspname, c.relname, c.relkind, greatest(c.reltuples, 0)::int8 "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            [s, n],
        ).fetchone()
        if row:
            break
    if row is None:
        _unknown_table(conn, schema, name)
    oid, schema, name, kind, reltuples = row
    if kind not in ("r", "p", "m", "f"):
        raise AtelierError(f"{schema}.{name} is not a table (relkind {kind!r})")
    cols = [
        Column(n, t)
        for n, t in conn.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [oid],
        )
    ]
    info = TableInfo(schema, name, cols, int(reltuples), None, "first distributable column")
    flavor = flavor_of(version(conn))
    if flavor in ("dws", "opengauss"):
        _pgxc_key(conn, oid, info)
    elif flavor == "greenplum":
        _greenplum_key(conn, oid, info)
    if info.current_key is None and info.locator == "hash":
        first = next((c.name for c in cols if c.distributable), None)
        info.current_key = (first,) if first else None
        info.current_source = "first distributable column"
    if flavor in ("dws", "opengauss"):
        info.native = native_figures(conn, info)
    return info


def _pgxc_key(conn: Any, oid: int, info: TableInfo) -> None:
    """DWS/openGauss record the distribution in pgxc_class (pcattnum: key column numbers)."""
    try:
        row = conn.execute(
            "SELECT pclocatortype, pcattnum::text FROM pgxc_class WHERE pcrelid = %s", [oid]
        ).fetchone()
    except Exception:
        conn.rollback()
        return
    if not row:
        return
    locator, attnums = row
    info.locator = {"H": "hash", "N": "roundrobin", "R": "replication"}.get(locator, locator)
    nums = [int(x) for x in str(attnums).split() if x.strip().lstrip("-").isdigit()]
    names = dict(
        conn.execute(
            "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0", [oid]
        ).fetchall()
    )
    key = tuple(names[n] for n in nums if n in names)
    if key:
        info.current_key, info.current_source = key, "pgxc_class"


def _greenplum_key(conn: Any, oid: int, info: TableInfo) -> None:
    try:
        row = conn.execute(
            "SELECT distkey::text FROM gp_distribution_policy WHERE localoid = %s", [oid]
        ).fetchone()
    except Exception:
        conn.rollback()
        return
    if row and row[0]:
        names = dict(
            conn.execute(
                "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s", [oid]
            ).fetchall()
        )
        key = tuple(names[int(x)] for x in str(row[0]).split() if int(x) in names)
        if key:
            info.current_key, info.current_source = key, "gp_distribution_policy"


def native_figures(conn: Any, info: TableInfo) -> dict[str, Any]:
    """DWS/openGauss's own per-DN figures, reported beside ours when the server has them."""
    out: dict[str, Any] = {}
    for label, query, params in [
        (
            "table_distribution",
            "SELECT * FROM pg_catalog.table_distribution(%s, %s)",
            [info.schema, info.name],
        ),
        (
            "pgxc_get_table_skewness",
            "SELECT * FROM pg_catalog.pgxc_get_table_skewness "
            "WHERE schemaname = %s AND tablename = %s",
            [info.schema, info.name],
        ),
    ]:
        try:
            cur = conn.execute(query, params)
            names = [d.name for d in cur.description or []]
            out[label] = [dict(zip(names, map(_plain, r), strict=False)) for r in cur.fetchall()]
        except Exception as e:  # absent on this build or not permitted: say so, go on
            conn.rollback()
            out[label] = f"unavailable: {str(e).strip().splitlines()[0]}"
    return out


def _plain(v: Any) -> Any:
    return v if isinstance(v, int | float | str | type(None)) else str(v)


def _unknown_table(conn: Any, schema: str, name: str) -> None:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm', 'f') ORDER BY 1",
            [schema],
        )
    ]
    if not tables:
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' "
                "AND nspname <> 'information_schema' ORDER BY 1"
            )
        ]
        raise AtelierError(
            f"no table {schema}.{name}: schema {schema!r} has no tables; schemas: "
            + ", ".join(schemas)
        )
    close = difflib.get_close_matches(name, tables, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    shown = ", ".join(tables[:30]) + (f", ... ({len(tables)} in all)" if len(tables) > 30 else "")
    raise AtelierError(f"no table {schema}.{name}; {hint}tables in {schema}: {shown}")
