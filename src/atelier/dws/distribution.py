"""A table's current distribution as the server records it, and DWS's own skew figures.

DWS/openGauss keep the distribution key in `pgxc_class`, Greenplum in
`gp_distribution_policy`, plain PostgreSQL nowhere; a table created without DISTRIBUTE BY
gets DWS's default (`default_key`). `native_figures` reads DWS's per-DN views to report
beside the advisor's own counts. Each reader tolerates a server without that catalog.
"""

from __future__ import annotations

from typing import Any

from atelier.dws.table import TableInfo


def default_key(info: TableInfo) -> tuple[tuple[str, ...] | None, str]:
    """What DWS picks without DISTRIBUTE BY: the primary key's (else the first unique
    constraint's) first column, else the first distributable column (see the UGO
    conversion guide, U0000008)."""
    for c in sorted(info.constraints, key=lambda c: c.kind != "PRIMARY KEY"):
        if c.columns and info.column(c.columns[0]).distributable:
            what = {"UNIQUE": "unique constraint"}.get(c.kind, c.kind.lower())
            return (c.columns[0],), f"first column of the {what}"
    first = next((c.name for c in info.columns if c.distributable), None)
    return ((first,) if first else None), "first distributable column"


def pgxc_key(conn: Any, oid: int, info: TableInfo) -> None:
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


def greenplum_key(conn: Any, oid: int, info: TableInfo) -> None:
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
