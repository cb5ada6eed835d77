"""Reports as rich tables (people) or JSON (scripts)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from atelier.dws.analyze import ScanRow, SkewReport

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
        f"[bold]{report.table}[/]  {report.rows:,} rows on {report.nodes} DNs  ({report.source}"
        f"{sampled})"
    )
    cur = ", ".join(report.current_key) if report.current_key else "none"
    console.print(f"current key: [bold]{cur}[/] ({report.current_source})")
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
            s.label + (" *" if s.current else ""),
            _dn_summary(s.per_node),
            f"{s.skew_ratio:.1%}",
            f"{s.max_over_avg:.2f}",
            f"{s.null_share:.1%}",
            s.distinct_text,
            f"[{_STYLE[s.verdict]}]{s.verdict}[/]",
            "; ".join(r.notes),
        )
    console.print(t)
    rec = report.recommendation
    console.print(f"[bold]recommendation:[/] {rec.strategy} — {rec.reason}")
    if rec.ddl:
        console.print(f"  {rec.ddl}  [dim](not executed)[/]", soft_wrap=True)
    for name, val in report.native.items():
        console.print(f"[bold]{name}[/] (server): {val}")


def scan_table(rows: list[ScanRow], threshold: float, console: Console) -> None:
    if not rows:
        console.print(f"no table skews above {threshold:.1%}")
        return
    t = Table()
    for col in ("table", "key", "rows", "size", "(max-min)/avg", "max/avg", "verdict"):
        t.add_column(col, justify="left" if col in ("table", "key", "verdict") else "right")
    for r in rows:
        s = r.stats
        assert s is not None
        t.add_row(
            r.table,
            ", ".join(r.key or ()),
            f"{r.rows:,}",
            f"{r.size_bytes / 2**20:,.1f} MiB",
            f"{s.skew_ratio:.1%}",
            f"{s.max_over_avg:.2f}",
            f"[{_STYLE[s.verdict]}]{s.verdict}[/]",
        )
    console.print(t)


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
