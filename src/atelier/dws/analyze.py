"""The suite's entry points: `skew` (one table, in-database or from a file) and `scan`.

Each returns a plain report object; render.py turns it into a rich table or JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.core.errors import AtelierError
from atelier.dws import catalog
from atelier.dws.advise import REPLICATE_BELOW, Ranked, Recommendation, rank, recommend
from atelier.dws.constraints import UniqueConstraint, common_columns
from atelier.dws.distribution import default_key
from atelier.dws.identifiers import parse_qualified
from atelier.dws.skew import KeyStats
from atelier.dws.table import DISTRIBUTABLE_HELP, TableInfo
from atelier.dws.workload import Workload, read_workload


@dataclass
class SkewConfig:
    table: str | None = None  # schema.table (in-database)
    dsn: str | None = None
    file: str | None = None  # parquet/csv (offline)
    columns: list[tuple[str, ...]] | None = None  # None: every distributable column
    nodes: int = 6
    sample: int | None = None  # rows; TABLESAMPLE for very large tables
    workload: str | None = None  # queries.sql
    statement_timeout: float = 300.0
    replicate_below: int = REPLICATE_BELOW
    types: dict[str, str] = field(default_factory=dict)  # offline type overrides
    exact_distinct: bool = False  # count(DISTINCT) (a sort per key) instead of HyperLogLog
    jobs: int | None = None  # concurrent page ranges; None: min(4, CPUs)
    primary_key: tuple[str, ...] | None = None  # offline: the table's primary key
    unique: list[tuple[str, ...]] = field(default_factory=list)  # offline: unique constraints


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class SkewReport:
    table: str
    source: str  # "database (postgresql 15.x)" or "file x.parquet"
    nodes: int
    rows: int  # rows analyzed (the sample when sampled)
    table_rows: int  # rows in the table (estimated when sampled)
    sample_fraction: float
    current_key: tuple[str, ...] | None
    current_source: str
    ranked: list[Ranked]
    recommendation: Recommendation
    native: dict[str, Any] = field(default_factory=dict)
    constraints: list[UniqueConstraint] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source": self.source,
            "nodes": self.nodes,
            "rows": self.rows,
            "table_rows": self.table_rows,
            "sample_fraction": self.sample_fraction,
            "current_key": list(self.current_key) if self.current_key else None,
            "current_key_source": self.current_source,
            "constraints": [c.to_json() for c in self.constraints],
            "keys": [r.to_json() for r in self.ranked],
            "recommendation": self.recommendation.to_json(),
            "native": self.native,
        }


def _validate(cfg: SkewConfig) -> None:
    if cfg.nodes < 1:
        raise AtelierError(f"--nodes {cfg.nodes}: need at least 1 data node")
    if cfg.sample is not None and cfg.sample < 1:
        raise AtelierError(f"--sample {cfg.sample}: give a positive number of rows")
    if cfg.jobs is not None and cfg.jobs < 1:
        raise AtelierError(f"--jobs {cfg.jobs}: need at least 1")
    if cfg.statement_timeout <= 0:
        raise AtelierError("--statement-timeout must be positive (seconds)")
    if bool(cfg.file) == bool(cfg.dsn):
        raise AtelierError("give either --dsn (with --table) or --file")
    if cfg.dsn and not cfg.table:
        raise AtelierError("--table schema.table is required with --dsn")
    if cfg.file and (cfg.sample or cfg.jobs or cfg.table):
        flag = "--sample" if cfg.sample else "--jobs" if cfg.jobs else "--table"
        raise AtelierError(f"{flag} is for --dsn; --file is always read whole, as one table")
    if cfg.table:
        parse_qualified(cfg.table)  # a malformed name fails before connecting
    if cfg.dsn and (cfg.primary_key or cfg.unique):
        raise AtelierError(
            "--primary-key/--unique are for --file; with --dsn the constraints come from the "
            "catalog (pg_constraint, pg_index)"
        )


def _candidates(cfg: SkewConfig, info: TableInfo) -> list[tuple[str, ...]]:
    keys = list(cfg.columns or [])
    if not keys:
        # columns the user may not SELECT are left out (they would fail the whole scan)
        keys = [(c.name,) for c in info.columns if c.distributable and c.readable]
        if not keys and any(c.distributable for c in info.columns):
            raise AtelierError(
                f"permission denied for every distributable column of {info.qualified}: the "
                "advisor needs SELECT on the key columns (GRANT SELECT ON ... TO the --dsn user)"
            )
        if not keys:
            listed = ", ".join(f"{c.name} ({c.type})" for c in info.columns[:20])
            raise AtelierError(
                f"{info.qualified} has no column that can be a distribution key (columns: "
                f"{listed}); distributable types: {DISTRIBUTABLE_HELP}"
            )
        # the widest key every constraint allows (e.g. a composite primary key) is a
        # candidate too: always allowed, and usually even
        shared = common_columns(info.constraints)
        if shared and len(shared) > 1 and all(info.column(c).distributable for c in shared):
            keys.append(shared)
    readable = {c.name for c in info.columns if c.readable}
    current = tuple(info.current_key or ())
    if current and current not in keys and set(current) <= readable:
        keys.insert(0, current)
    return keys


def _finish(
    cfg: SkewConfig,
    info: TableInfo,
    stats: list[KeyStats],
    rows: int,
    table_rows: int,
    fraction: float,
    source: str,
    workload: Workload | None,
) -> SkewReport:
    if rows == 0:
        what = "the sample" if fraction < 1 else "the table"
        hint = "; raise --sample" if fraction < 1 else ""
        raise AtelierError(f"{info.qualified}: {what} is empty, nothing to distribute{hint}")
    for s in stats:
        s.fold(cfg.nodes)
        s.current = info.current_key is not None and s.columns == tuple(info.current_key)
    ranked = rank(stats, workload, info.constraints, {c.name: c.type for c in info.columns})
    rec = recommend(info, ranked, table_rows, cfg.replicate_below)
    return SkewReport(
        table=info.qualified,
        source=source,
        nodes=cfg.nodes,
        rows=rows,
        table_rows=table_rows,
        sample_fraction=fraction,
        current_key=info.current_key,
        current_source=info.current_source,
        ranked=ranked,
        recommendation=rec,
        native=info.native,
        constraints=info.constraints,
    )


def skew(cfg: SkewConfig) -> SkewReport:
    """Analyze one table: in the database (`dsn`) or offline (`file`)."""
    _validate(cfg)
    # a bad workload file fails before any database work
    workload = read_workload(cfg.workload) if cfg.workload else None
    if cfg.file:
        return _skew_file(cfg, workload)
    from atelier.dws.sql import check_keys, count_keys

    with catalog.connect(cfg.dsn or "", cfg.statement_timeout) as conn:
        version = catalog.version(conn)
        info = catalog.describe(conn, cfg.table or "")
        keys = check_keys(info, _candidates(cfg, info))
        counted = count_keys(
            conn,
            info,
            keys,
            sample_rows=cfg.sample,
            exact_distinct=cfg.exact_distinct,
            jobs=cfg.jobs or default_jobs(),
            connect=lambda: catalog.connect(cfg.dsn or "", cfg.statement_timeout),
        )
    rows = counted.rows
    table_rows = round(rows / counted.sample_fraction) if counted.sample_fraction < 1 else rows
    flavor = catalog.flavor_of(version)
    short = " ".join(version.split()[:2])
    return _finish(
        cfg,
        info,
        counted.keys,
        rows,
        table_rows,
        counted.sample_fraction,
        f"{flavor}: {short}",
        workload,
    )


def _skew_file(cfg: SkewConfig, workload: Workload | None) -> SkewReport:
    from atelier.dws.offline import count_keys_offline, file_info, read_table

    table, pg = read_table(cfg.file or "", cfg.types)
    info = file_info(cfg.file or "", table, pg)

    def known(cols: tuple[str, ...], flag: str) -> tuple[str, ...]:
        for c in cols:
            if c not in pg:
                listed = ", ".join(f"{n} ({t})" for n, t in pg.items())
                raise AtelierError(
                    f"{flag}: {Path(cfg.file or '').name} has no column {c!r}; columns: {listed}"
                )
        return cols

    if cfg.primary_key:
        pk = known(cfg.primary_key, "--primary-key")
        info.constraints.append(UniqueConstraint("PRIMARY KEY", None, pk))
    for u in cfg.unique:
        info.constraints.append(UniqueConstraint("UNIQUE", None, known(u, "--unique")))
    if info.constraints:
        info.current_key, info.current_source = default_key(info)
    keys = [known(k, "--columns") for k in _candidates(cfg, info)]
    stats = count_keys_offline(
        table, pg, keys, exact_distinct=cfg.exact_distinct, path=cfg.file or ""
    )
    source = f"file {Path(cfg.file or '').name}"
    return _finish(cfg, info, stats, table.num_rows, table.num_rows, 1.0, source, workload)


@dataclass
class ScanRow:
    table: str
    key: tuple[str, ...] | None
    rows: int
    size_bytes: int
    stats: KeyStats | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "table": self.table,
            "key": list(self.key) if self.key else None,
            "rows": self.rows,
            "size_bytes": self.size_bytes,
        }
        if self.stats is not None:
            out.update(
                {k: v for k, v in self.stats.to_json().items() if k not in ("key", "current")}
            )
        return out


@dataclass
class ScanReport:
    """Tables above the threshold, and the tables that could not be analyzed, with why."""

    rows: list[ScanRow]
    skipped: list[tuple[str, str]]  # (table, reason)
    scanned: int  # tables analyzed

    def to_json(self) -> dict[str, Any]:
        return {
            "tables": [r.to_json() for r in self.rows],
            "skipped": [{"table": t, "reason": why} for t, why in self.skipped],
            "scanned": self.scanned,
        }


def scan(
    dsn: str,
    schema: str | None = None,
    nodes: int = 6,
    threshold: float = 0.05,
    top: int = 50,
    sample: int | None = None,
    statement_timeout: float = 300.0,
    jobs: int | None = None,
) -> ScanReport:
    """Every hash-distributed table whose current key skews above `threshold`, largest first.

    A table that cannot be read (no SELECT privilege, a statement past the timeout, a
    foreign server that does not answer, ...) is reported as skipped with the reason and
    the scan goes on; only a lost connection ends it.
    """
    import psycopg

    from atelier.dws.sql import count_keys

    if nodes < 1 or top < 1 or threshold < 0:
        raise AtelierError("--nodes and --top must be positive, --threshold at least 0")
    out: list[ScanRow] = []
    skipped: list[tuple[str, str]] = []
    scanned = 0
    with catalog.connect(dsn, statement_timeout) as conn:
        for oid, shown, size in catalog.list_tables(conn, schema):
            try:
                info = catalog.describe_oid(conn, oid)
                if info.locator != "hash" or not info.current_key:
                    if info.locator == "hash":
                        skipped.append((shown, "no distributable column"))
                    continue
                counted = count_keys(
                    conn,
                    info,
                    [tuple(info.current_key)],
                    sample_rows=sample,
                    jobs=jobs or default_jobs(),
                    connect=lambda: catalog.connect(dsn, statement_timeout),
                )
            except psycopg.Error as e:
                if conn.broken:
                    raise  # the connection is gone: connect() turns it into one line
                conn.rollback()
                why = (
                    catalog.timeout_message(statement_timeout)
                    if isinstance(e, psycopg.errors.QueryCanceled)
                    else catalog.first_line(e)
                )
                skipped.append((shown, why))
                continue
            except AtelierError as e:
                conn.rollback()
                skipped.append((shown, str(e)))
                continue
            conn.rollback()  # one short read-only transaction per table
            scanned += 1
            if counted.rows == 0:
                continue
            st = counted.keys[0].fold(nodes)
            if st.skew_ratio > threshold:
                out.append(ScanRow(info.qualified, st.columns, counted.rows, int(size), st))
            if len(out) >= top:
                break
    return ScanReport(out, skipped, scanned)
