"""`atelier dws skew|scan`: flags -> atelier.dws.analyze, output as a table or --json."""

from __future__ import annotations

import argparse

from atelier.core.flags import NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_INT, Float, Int


def register(suites: argparse._SubParsersAction) -> None:
    dws = suites.add_parser("dws", help="distribution-skew advisor for MPP warehouses")
    verbs = dws.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser(
        "skew",
        help="rows per DN for the current and candidate distribution keys, and the best key",
        description="Place every row the way GaussDB(DWS)/openGauss does (type hash, "
        "rotate-xor across key columns, 16384 buckets, bucket % N) for each candidate key, "
        "inside the database (only counts leave it) or offline from a parquet/csv file. "
        "Read-only: recommended DDL is printed, never executed. A key the table's primary "
        "key or unique constraints do not contain is never recommended.",
    )
    src = p.add_argument_group("source (one of)")
    src.add_argument("--dsn", help="postgresql://user:password@host:port/db")
    src.add_argument("--table", help="schema.table (with --dsn)")
    src.add_argument("--file", help="offline: a .parquet or .csv file")
    p.add_argument(
        "--columns", help="candidate keys, e.g. a,b,(c,d); default every distributable column"
    )
    p.add_argument("--nodes", type=Int(1, 4096), default=6, help="data nodes (DNs) (default 6)")
    p.add_argument(
        "--sample",
        type=POSITIVE_INT,
        default=None,
        metavar="ROWS",
        help="analyze about ROWS rows (TABLESAMPLE SYSTEM) instead of the table",
    )
    p.add_argument(
        "--workload",
        metavar="queries.sql",
        help="queries whose join/group-by columns are preferred and whose "
        "constant-filter columns are avoided",
    )
    p.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="COL=TYPE",
        help="offline: PostgreSQL type of a file column (e.g. code=bpchar)",
    )
    p.add_argument(
        "--primary-key",
        metavar="COLS",
        help="offline: the table's primary key, e.g. id or a,b (with --dsn it comes from the "
        "catalog)",
    )
    p.add_argument(
        "--unique",
        action="append",
        default=[],
        metavar="COLS",
        help="offline: a unique constraint's columns, e.g. email (repeatable)",
    )
    p.add_argument(
        "--replicate-below",
        type=NON_NEGATIVE_INT,
        default=1_000_000,
        metavar="ROWS",
        help="recommend REPLICATION below this many rows (default 1000000)",
    )
    p.add_argument(
        "--exact-distinct",
        action="store_true",
        help="exact count(DISTINCT) per key (a sort each) instead of the HyperLogLog estimate",
    )
    p.add_argument(
        "--jobs",
        type=Int(1, 64),
        default=None,
        help="scan the table in this many page ranges at once (default min(4, CPUs))",
    )
    _common(p)
    p.set_defaults(func=run_skew)

    s = verbs.add_parser("scan", help="every table whose current key skews above a threshold")
    s.add_argument("--dsn", required=True)
    s.add_argument("--schema", default=None, help="only this schema (default: all user schemas)")
    s.add_argument(
        "--threshold",
        type=NON_NEGATIVE_FLOAT,
        default=0.05,
        help="(max-min)/avg above which a table is listed (default 0.05)",
    )
    s.add_argument(
        "--top", type=POSITIVE_INT, default=50, help="at most this many tables (default 50)"
    )
    s.add_argument("--nodes", type=Int(1, 4096), default=6, help="data nodes (DNs) (default 6)")
    s.add_argument("--sample", type=POSITIVE_INT, default=None, metavar="ROWS")
    s.add_argument(
        "--jobs",
        type=Int(1, 64),
        default=None,
        help="scan each table in this many page ranges at once (default min(4, CPUs))",
    )
    _common(s)
    s.set_defaults(func=run_scan)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--statement-timeout",
        type=Float(0, 86400 * 7, lo_open=True),
        default=300.0,
        metavar="SECONDS",
        help="cancel any statement running longer (default 300)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_skew(args: argparse.Namespace) -> int:
    from rich.console import Console

    from atelier.core.errors import AtelierError
    from atelier.dws.analyze import SkewConfig, skew
    from atelier.dws.render import skew_table, to_json
    from atelier.dws.skew import parse_keys

    types = {}
    pk = _column_list(args.primary_key, "--primary-key") if args.primary_key else None
    unique = [_column_list(u, "--unique") for u in args.unique]
    for item in args.type:
        name, sep, typ = item.partition("=")
        if not sep or not name or not typ:
            raise AtelierError(f"--type {item!r}: expected COLUMN=TYPE, e.g. code=bpchar")
        types[name] = typ.strip().lower()
    cfg = SkewConfig(
        table=args.table,
        dsn=args.dsn,
        file=args.file,
        columns=parse_keys(args.columns) if args.columns else None,
        nodes=args.nodes,
        sample=args.sample,
        workload=args.workload,
        statement_timeout=args.statement_timeout,
        replicate_below=args.replicate_below,
        types=types,
        exact_distinct=args.exact_distinct,
        jobs=args.jobs,
        primary_key=pk,
        unique=unique,
    )
    report = skew(cfg)
    if args.json:
        print(to_json(report.to_json()))
    else:
        skew_table(report, Console())
    return 0


def run_scan(args: argparse.Namespace) -> int:
    from rich.console import Console

    from atelier.dws.analyze import scan
    from atelier.dws.render import scan_table, to_json

    report = scan(
        args.dsn,
        schema=args.schema,
        nodes=args.nodes,
        threshold=args.threshold,
        top=args.top,
        sample=args.sample,
        statement_timeout=args.statement_timeout,
        jobs=args.jobs,
    )
    if args.json:
        print(to_json(report.to_json()))
    else:
        scan_table(report, args.threshold, Console())
    return 0


def _column_list(spec: str, flag: str) -> tuple[str, ...]:
    """`a,b` or `"Odd, name",b` -> column names (one constraint's columns)."""
    from atelier.core.errors import AtelierError
    from atelier.dws.skew import parse_keys

    keys = parse_keys(spec, flag)
    cols = tuple(c for key in keys for c in key)
    if len(set(cols)) != len(cols):
        raise AtelierError(f"{flag} {spec!r}: names a column twice")
    return cols
