"""Reports as rich tables (people) or JSON (scripts)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atelier.dws.analyze import ScanReport, SkewReport

_STYLE = {"even": "green", "skewed": "yellow", "change key": "bold red"}


def _dn_summary(per_node) -> str:
    vals = [int(x) for x in per_node]
    if len(vals) <= 4:
        return " ".join(f"{v:,}" for v in vals)
    return f"{min(vals):,}..{max(vals):,}"


def skew_table(report: SkewReport, console: Console) -> None:
    sampled = (
        f", sample {report.sample_fraction:.2%} (~{report.table_rows:,} rows in table)"
        if report.sample_fraction < 1
        else ""
    )
    console.print(
        f"[bold]{escape(report.table)}[/]  {report.rows:,} rows on {report.nodes} DNs  "
        f"({escape(report.source)}{sampled})"
    )
    cur = ", ".join(report.current_key) if report.current_key else "none"
    console.print(f"current key: [bold]{escape(cur)}[/] ({report.current_source})")
    if report.constraints:
        cons = "; ".join(c.describe() for c in report.constraints)
        console.print(f"constraints: {escape(cons)} (a key must be contained in each)")
    t = Table(show_lines=False)
    for col in (
        "key",
        "rows/DN min..max",
        "(max-min)/avg",
        "max/avg",
        "NULL",
        "distinct",
        "verdict",
    ):
        t.add_column(
            col, justify="left" if col in ("key", "rows/DN min..max", "verdict") else "right"
        )
    t.add_column("notes")
    for r in report.ranked:
        s = r.stats
        t.add_row(
            escape(s.label + (" *" if s.current else "")),
            _dn_summary(s.per_node),
            f"{s.skew_ratio:.1%}",
            f"{s.max_over_avg:.2f}",
            f"{s.null_share:.1%}",
            s.distinct_text,
            f"[{_STYLE[s.verdict]}]{s.verdict}[/]",
            escape("; ".join(r.notes)),
        )
    console.print(t)
    rec = report.recommendation
    console.print(f"[bold]recommendation:[/] {rec.strategy} — {escape(rec.reason)}")
    if rec.choice:
        console.print(f"  why: {escape(rec.choice)}")
    if rec.ddl:
        console.print(f"  {escape(rec.ddl)}  [dim](not executed)[/]", soft_wrap=True)
    for name, val in report.native.items():
        console.print(f"[bold]{name}[/] (server): {escape(str(val))}")


def scan_table(report: ScanReport, threshold: float, console: Console) -> None:
    if not report.rows:
        console.print(f"no table skews above {threshold:.1%} ({report.scanned} analyzed)")
    else:
        t = Table()
        for col in ("table", "key", "rows", "size", "(max-min)/avg", "max/avg", "verdict"):
            t.add_column(col, justify="left" if col in ("table", "key", "verdict") else "right")
        for r in report.rows:
            s = r.stats
            assert s is not None
            t.add_row(
                escape(r.table),
                escape(", ".join(r.key or ())),
                f"{r.rows:,}",
                f"{r.size_bytes / 2**20:,.1f} MiB",
                f"{s.skew_ratio:.1%}",
                f"{s.max_over_avg:.2f}",
                f"[{_STYLE[s.verdict]}]{s.verdict}[/]",
            )
        console.print(t)
    for table, why in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(table)}: {escape(why)}", soft_wrap=True)


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
