"""One scan split into page ranges run concurrently, all reading one snapshot.

PostgreSQL runs GROUPING SETS in one process, so `sql.count_keys` may cut the table into
ranges of pages (`ctid >= '(a,0)' AND ctid < '(b,0)'`, a TID range scan on PostgreSQL 14+)
and run each on its own read-only connection sharing the first connection's snapshot
(`pg_export_snapshot`): the counts are identical for any number of ranges. Apart from
`sql.py` because it is about connections and threads, not the statement.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from psycopg import sql

from atelier.core.errors import AtelierError
from atelier.dws.catalog import flavor_of
from atelier.dws.table import TableInfo


def page_ranges(
    conn: Any, info: TableInfo, jobs: int, min_pages: int
) -> list[tuple[int | None, int | None]]:
    """[(None, p1), (p1, p2), ..., (pk, None)]: open ends, so pages added meanwhile count."""
    num, version = conn.execute(
        "SELECT current_setting('server_version_num')::int, version()"
    ).fetchone()
    # TID range scans are PostgreSQL 14+; elsewhere each range would read the whole table
    if num < 140000 or flavor_of(version) != "postgresql" or info.oid is None:
        return [(None, None)]
    # by oid: no name is parsed again (a partitioned parent has 0 pages: one statement)
    pages = conn.execute(
        "SELECT pg_relation_size(%s::oid::regclass) / current_setting('block_size')::int8",
        [info.oid],
    ).fetchone()[0]
    k = max(1, min(jobs, int(pages) // max(1, min_pages)))
    if k == 1:
        return [(None, None)]
    cuts = [int(pages) * i // k for i in range(1, k)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def range_sql(lo: int | None, hi: int | None) -> sql.Composable:
    conds = []
    if lo is not None:
        conds.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({lo},0)")))
    if hi is not None:
        conds.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({hi},0)")))
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL("")


class NoConnection(Exception):
    """A range's connection could not be opened."""


def run_ranges(
    conn: Any,
    connect: Callable[[], AbstractContextManager[Any]],
    queries: list[sql.Composed],
) -> list[list[tuple]]:
    """One connection per range, all reading the snapshot `conn` exports."""
    import psycopg

    snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    opened: list[Any] = []
    lock = threading.Lock()

    def one(query: sql.Composed) -> list[tuple]:
        with contextlib.ExitStack() as stack:
            try:
                c = stack.enter_context(connect())
            except AtelierError as e:  # e.g. max_connections reached
                raise NoConnection(str(e)) from None
            with lock:
                opened.append(c)
            c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            c.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            return c.execute(query).fetchall()

    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        futures = [pool.submit(one, q) for q in queries]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            with lock:
                for c in opened:
                    with contextlib.suppress(Exception):
                        c.cancel_safe()
            raise
