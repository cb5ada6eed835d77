"""Connecting read-only, and what the catalog says about a table (`table.TableInfo`).

Every database error a user can cause (unreachable server, bad password, unknown table
or column, a statement timeout) becomes one `AtelierError` line here, so the rest of
the suite never sees a driver exception.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator
from typing import Any, NoReturn

from atelier.core.errors import AtelierError
from atelier.dws.constraints import UniqueConstraint
from atelier.dws.distribution import default_key, greenplum_key, native_figures, pgxc_key
from atelier.dws.identifiers import Ident, parse_qualified, quote_ident
from atelier.dws.table import Column, TableInfo


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    dsn = dsn.encode("utf-8", "backslashreplace").decode("utf-8")  # undecodable argv bytes
    dsn = re.sub(r"(://[^:/@]*):.*@", r"\1:***@", dsn)  # up to the last @: never leak a part
    # key=value form: a value may be single-quoted with \' and \\ inside (libpq's rules)
    return re.sub(r"(password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s&]+)", r"\1***", dsn)


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
        dsn.encode("utf-8")
    except UnicodeEncodeError:
        raise AtelierError(f"--dsn {redact(dsn)}: not valid UTF-8 text") from None
    if "\0" in dsn:
        raise AtelierError(f"--dsn {redact(dsn)!r}: contains a NUL character")
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=False)
    except psycopg.OperationalError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise AtelierError(f"cannot connect to {redact(dsn)}: {redact(first)}") from None
    except psycopg.ProgrammingError as e:
        # libpq could not parse it, so which part is the password is unknown: not echoed
        raise AtelierError(
            f"--dsn: not a connection string libpq can read ({_without(first_line(e), dsn)}); "
            "use postgresql://user:password@host:port/db or host=... dbname=... user=..."
        ) from None
    try:
        conn.read_only = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                # at least 1 ms: 0 would mean no timeout at all
                [f"{max(1, round(statement_timeout * 1000))}ms"],
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
        raise AtelierError(timeout_message(statement_timeout)) from None
    except psycopg.errors.InsufficientPrivilege as e:
        raise AtelierError(
            f"{first_line(e)}: the advisor needs SELECT on the table (GRANT SELECT ON ... TO "
            "the --dsn user)"
        ) from None
    except psycopg.OperationalError as e:
        # class 08 is the connection; others (e.g. 54: a program limit) are the statement's
        lost = (getattr(e, "sqlstate", None) or "08").startswith("08")
        what = "database connection failed" if lost else "the server refused the statement"
        raise AtelierError(f"{what}: {first_line(e)}") from None


def _without(message: str, dsn: str) -> str:
    """libpq quotes the bad string back: keep the message, drop the string."""
    return redact(message.replace(dsn, "<dsn>"))


def timeout_message(statement_timeout: float) -> str:
    return (
        f"a statement ran past --statement-timeout {statement_timeout:g}s; raise it, or use "
        "--sample ROWS to analyze a sample of the table"
    )


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _one(conn: Any, query: str, params: list[Any] | None = None) -> Any:
    row = conn.execute(query, params or []).fetchone()
    return row[0] if row else None


def version(conn: Any) -> str:
    return str(_one(conn, "SELECT version()"))


def describe(conn: Any, table: str) -> TableInfo:
    """Columns, size, constraints and current distribution key of `schema.table` as typed."""
    parts = parse_qualified(table)
    if len(parts) == 1:
        parts.insert(0, Ident(str(_one(conn, "SELECT current_schema()") or "public"), True))
    schema, name = parts
    oid = None
    for s in schema.spellings():
        for n in name.spellings():
            oid = _one(
                conn,
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                [s, n],
            )
            if oid is not None:
                return describe_oid(conn, oid)
    _unknown_table(conn, schema, name)


def describe_oid(conn: Any, oid: int) -> TableInfo:
    """The same, for a relation the catalog named (scan): no name parsing at all."""
    row = conn.execute(
        "SELECT n.nspname, c.relname, quote_ident(n.nspname), quote_ident(c.relname), "
        "c.relkind, greatest(c.reltuples, 0)::int8 "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
        [oid],
    ).fetchone()
    if row is None:  # dropped between listing and reading (scan)
        raise AtelierError(f"relation {oid} no longer exists (dropped meanwhile)")
    schema, name, q_schema, q_name, kind, reltuples = row
    if kind not in ("r", "p", "m", "f"):
        what = {"v": "a view", "S": "a sequence", "i": "an index", "c": "a composite type"}
        raise AtelierError(
            f"{q_schema}.{q_name} is {what.get(kind, f'not a table (relkind {kind!r})')}; "
            "give a table"
        )
    # a domain hashes as its base type (one level of domain over domain is resolved too)
    cols = [
        Column(n, t, q, bool(r))
        for n, t, q, r in conn.execute(
            "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN coalesce(CASE WHEN b.typtype = 'd' "
            "THEN bb.typname END, b.typname) ELSE t.typname END, quote_ident(a.attname), "
            "has_column_privilege(a.attrelid, a.attnum, 'SELECT') "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_type b ON b.oid = t.typbasetype "
            "LEFT JOIN pg_type bb ON bb.oid = b.typbasetype "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [oid],
        )
    ]
    info = TableInfo(
        schema,
        name,
        cols,
        int(reltuples),
        None,
        "first distributable column",
        oid=oid,
        quoted_schema=q_schema,
        quoted_name=q_name,
    )
    info.constraints = unique_constraints(conn, oid)
    flavor = flavor_of(version(conn))
    if flavor in ("dws", "opengauss"):
        pgxc_key(conn, oid, info)
    elif flavor == "greenplum":
        greenplum_key(conn, oid, info)
    if info.current_key is None and info.locator == "hash":
        info.current_key, info.current_source = default_key(info)
    if flavor in ("dws", "opengauss"):
        info.native = native_figures(conn, info)
    return info


def list_tables(conn: Any, schema: str | None) -> list[tuple[int, str, int]]:
    """(oid, quoted schema.table, bytes) of the user tables to scan, largest first.

    Ordinary and partitioned tables, not partitions (their parent covers them; the
    column relispartition is PostgreSQL 10+, absent on DWS/openGauss), views, foreign
    tables, sequences or system schemas. `schema` is read like a --table part.
    """
    nsp = None
    if schema is not None:
        (part,) = parse_qualified(schema, "--schema", max_parts=1)
        for sp in part.spellings():
            nsp = _one(conn, "SELECT oid FROM pg_namespace WHERE nspname = %s", [sp])
            if nsp is not None:
                break
        if nsp is None:
            raise AtelierError(f"--schema {schema!r}: no such schema; schemas: {_schemas(conn)}")
    has_partitions = _one(
        conn,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'pg_catalog.pg_class'::regclass "
        "AND attname = 'relispartition'",
    )
    # a partitioned table's own size is 0: count its partitions (PostgreSQL 12+)
    size = (
        "CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0)"
        " FROM pg_partition_tree(c.oid) p) ELSE pg_total_relation_size(c.oid) END"
        if _one(conn, "SELECT count(*) FROM pg_proc WHERE proname = 'pg_partition_tree'")
        else "pg_total_relation_size(c.oid)"
    )
    rows = conn.execute(
        "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
        f"{size} FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
        + ("AND NOT c.relispartition " if has_partitions else "")
        + "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_%%' AND (%s::oid IS NULL OR n.oid = %s::oid) "
        "ORDER BY 3 DESC, 2",
        [nsp, nsp],
    ).fetchall()
    return [(int(o), str(q), int(size)) for o, q, size in rows]


def unique_constraints(conn: Any, oid: int) -> list[UniqueConstraint]:
    """Primary key, unique constraints and unique indexes, by their key columns.

    pg_index covers all three (a constraint owns its index). Included (INCLUDE) columns
    are not part of the uniqueness (indnkeyatts, PostgreSQL 11+); servers without that
    column have no INCLUDE either. A 0 in indkey is an expression column.
    """
    import psycopg

    base = (
        "SELECT i.indisprimary, con.conname, ic.relname, i.indkey::text, {natts}, "
        "quote_ident(coalesce(con.conname, ic.relname)) "
        "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
        "AND con.contype IN ('p', 'u') WHERE i.indrelid = %s AND i.indisunique ORDER BY 1 DESC, 3"
    )
    try:
        rows = conn.execute(base.format(natts="i.indnkeyatts"), [oid]).fetchall()
    except psycopg.errors.UndefinedColumn:
        conn.rollback()
        rows = conn.execute(base.format(natts="i.indnatts"), [oid]).fetchall()
    names = dict(
        conn.execute(
            "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0", [oid]
        ).fetchall()
    )
    out = []
    for primary, conname, indexname, indkey, nkey, quoted in rows:
        nums = [int(x) for x in str(indkey).split()][: int(nkey)]
        kind = "PRIMARY KEY" if primary else "UNIQUE" if conname else "UNIQUE INDEX"
        out.append(
            UniqueConstraint(
                kind,
                conname or indexname,
                tuple(names[n] for n in nums if n in names),
                expression=0 in nums,
                quoted=quoted,
            )
        )
    return out


def _schemas(conn: Any) -> str:
    return ", ".join(
        quote_ident(r[0])
        for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' "
            "AND nspname <> 'information_schema' ORDER BY 1"
        )
    )


def _unknown_table(conn: Any, schema: Ident, name: Ident) -> NoReturn:
    shown_name = f"{quote_ident(schema.text)}.{quote_ident(name.text)}"
    nsp = None
    for sp in schema.spellings():
        nsp = _one(conn, "SELECT oid FROM pg_namespace WHERE nspname = %s", [sp])
        if nsp is not None:
            break
    tables = []
    if nsp is not None:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s "
                "AND c.relkind IN ('r', 'p', 'm', 'f') ORDER BY 1",
                [nsp],
            )
        ]
    if not tables:
        why = "does not exist" if nsp is None else "has no tables"
        raise AtelierError(
            f"no table {shown_name}: schema {quote_ident(schema.text)} {why}; "
            f"schemas: {_schemas(conn)}"
        )
    close = difflib.get_close_matches(name.text, tables, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(map(quote_ident, close))}? " if close else ""
    shown = ", ".join(map(quote_ident, tables[:30])) + (
        f", ... ({len(tables)} in all)" if len(tables) > 30 else ""
    )
    raise AtelierError(
        f"no table {shown_name}; {hint}tables in {quote_ident(schema.text)}: {shown}"
    )
