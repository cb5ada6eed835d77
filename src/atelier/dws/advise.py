"""Verdicts, ranking and DDL by the DWS distribution-key rules.

The rules (GaussDB(DWS) development guide): a key should have many distinct values,
spread rows evenly (more than 5% between DNs is skew, 10% or more: change the key), not
be a column queries filter to a constant (such a query would run on one DN), and
preferably be a join or group-by column so joins and aggregates stay DN-local. When no
key is even, ROUNDROBIN; a small dimension table (< 1M rows) is better REPLICATED.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.core.errors import AtelierError
from atelier.dws.skew import SKEWED, KeyStats

LOW_CARDINALITY_PER_DN = 10  # fewer distinct values than 10 per DN cannot spread evenly
REPLICATE_BELOW = 1_000_000


@dataclass
class Workload:
    """Columns that queries join or group on, and columns they filter to a constant."""

    join: set[str] = field(default_factory=set)
    group: set[str] = field(default_factory=set)
    constant: set[str] = field(default_factory=set)

    @property
    def preferred(self) -> set[str]:
        return self.join | self.group


_NAME = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QNAME = rf"(?:{_NAME}\s*\.\s*)*{_NAME}"
_EQ_COLS = re.compile(rf"({_QNAME})\s*=\s*({_QNAME})(?!\s*\()")
_EQ_CONST = re.compile(rf"({_QNAME})\s*(?:=|\bIN\b)\s*(?:'[^']*'|-?\d[\d.]*|\(\s*(?:'|-?\d))", re.I)
_GROUP = re.compile(r"\bGROUP\s+BY\s+(.+?)(?:\bHAVING\b|\bORDER\b|\bLIMIT\b|\)|;|$)", re.I | re.S)
_USING = re.compile(r"\bUSING\s*\(([^)]*)\)", re.I)
_KEYWORDS = {"true", "false", "null", "and", "or", "not", "select", "where", "on"}


def _bare(name: str) -> str:
    last = name.split(".")[-1].strip()
    return last[1:-1] if last.startswith('"') else last.lower()


def read_workload(path: str | Path) -> Workload:
    """A lexical reading of queries.sql: good enough to know which columns matter."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AtelierError(f"--workload {path}: cannot read: {e.strerror}") from None
    text = re.sub(r"--[^\n]*", " ", text)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    w = Workload()
    for a, b in _EQ_COLS.findall(text):
        if _bare(a) not in _KEYWORDS and _bare(b) not in _KEYWORDS:
            w.join |= {_bare(a), _bare(b)}
    for cols in _USING.findall(text):
        w.join |= {_bare(c) for c in cols.split(",") if c.strip()}
    for cols in _GROUP.findall(text):
        w.group |= {_bare(c) for c in cols.split(",") if re.fullmatch(_QNAME, c.strip())}
    for col in _EQ_CONST.findall(text):
        w.constant.add(_bare(col))
    return w


@dataclass
class Ranked:
    stats: KeyStats
    notes: list[str]
    penalty: int  # 0 good, 1 even but filtered to constants, 2 skewed, 3 change key

    def to_json(self) -> dict[str, Any]:
        return {**self.stats.to_json(), "notes": self.notes}


def rank(keys: list[KeyStats], workload: Workload | None = None) -> list[Ranked]:
    """Best first: even, high cardinality, not constant-filtered, joined/grouped on, current."""
    workload = workload or Workload()
    out = []
    for k in keys:
        notes: list[str] = []
        low = k.distinct >= 0 and k.distinct < LOW_CARDINALITY_PER_DN * max(k.nodes, 1)
        if low:
            notes.append(f"low cardinality ({k.distinct_text} distinct)")
        if k.null_share > SKEWED:
            notes.append(f"{k.null_share:.0%} NULL (all on one DN)")
        const = [c for c in k.columns if c.lower() in workload.constant]
        if const:
            notes.append(f"filtered to constants in the workload ({', '.join(const)})")
        used = [c for c in k.columns if c.lower() in workload.preferred]
        if used:
            notes.append(f"join/group-by column ({', '.join(used)})")
        if k.verdict == "change key":
            penalty = 3
        elif k.verdict == "skewed" or low:
            penalty = 2
        elif const:
            penalty = 1
        else:
            penalty = 0
        out.append(Ranked(k, notes, penalty))
    out.sort(
        key=lambda r: (
            r.penalty,
            -sum(c.lower() in workload.preferred for c in r.stats.columns) / len(r.stats.columns),
            not r.stats.current,  # a good current key needs no redistribution
            len(r.stats.columns),
            round(r.stats.skew_ratio, 3),
            -r.stats.distinct,
            r.stats.label,
        )
    )
    return out


@dataclass
class Recommendation:
    strategy: str  # "hash", "keep", "roundrobin", "replication"
    key: tuple[str, ...] | None
    ddl: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "key": list(self.key) if self.key else None,
            "ddl": self.ddl,
            "reason": self.reason,
        }


def quote_ident(name: str) -> str:
    """Quote like PostgreSQL's quote_ident: only when the name needs it."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def recommend(
    table: str,
    ranked: list[Ranked],
    table_rows: int,
    current: tuple[str, ...] | None,
    replicate_below: int = REPLICATE_BELOW,
) -> Recommendation:
    """One recommendation and its DDL (printed, never executed)."""
    schema, _, name = table.rpartition(".")
    target = ".".join(quote_ident(p) for p in ([schema] if schema else []) + [name])
    if table_rows < replicate_below:
        return Recommendation(
            "replication",
            None,
            f"ALTER TABLE {target} DISTRIBUTE BY REPLICATION;",
            f"{table_rows:,} rows < {replicate_below:,}: a small dimension table is cheaper "
            "replicated on every DN (joins need no redistribution)",
        )
    best = ranked[0] if ranked else None
    if best is None or best.penalty >= 2:
        return Recommendation(
            "roundrobin",
            None,
            f"ALTER TABLE {target} DISTRIBUTE BY ROUNDROBIN;",
            "no candidate key spreads rows evenly (all above 5% skew or low cardinality)",
        )
    cols = best.stats.columns
    ddl = f"ALTER TABLE {target} DISTRIBUTE BY HASH({', '.join(map(quote_ident, cols))});"
    why = f"skew {best.stats.skew_ratio:.1%}, {best.stats.distinct_text} distinct" + (
        f"; {'; '.join(best.notes)}" if best.notes else ""
    )
    if current is not None and tuple(current) == tuple(cols):
        return Recommendation("keep", cols, None, f"the current key is the best: {why}")
    return Recommendation("hash", cols, ddl, why)
