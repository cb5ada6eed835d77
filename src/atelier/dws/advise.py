"""Verdicts, ranking and DDL by the DWS distribution-key rules.

The rules (GaussDB(DWS) development guide): a key should have many distinct values,
spread rows evenly (more than 5% between DNs is skew, 10% or more: change the key), not
be a column queries filter to a constant (such a query would run on one DN), and
preferably be a join or group-by column so joins and aggregates stay DN-local. When no
key is even, ROUNDROBIN; a small dimension table (< 1M rows) is better REPLICATED.

A key must also be contained in every primary key / unique constraint (constraints.py):
a key they forbid is never recommended; when only such a key is even, the advice says
which constraint would have to change, and how.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atelier.dws.constraints import UniqueConstraint, common_columns, primary_key, violated
from atelier.dws.skew import SKEWED, KeyStats
from atelier.dws.table import TableInfo
from atelier.dws.workload import Workload

LOW_CARDINALITY_PER_DN = 10  # fewer distinct values than 10 per DN cannot spread evenly
REPLICATE_BELOW = 1_000_000
# cheaper to hash, to store and to join on: integers, then fixed-width, then the rest
_TYPE_CLASS = {
    "int2": 0,
    "int4": 0,
    "int8": 0,
    "date": 1,
    "time": 1,
    "timestamp": 1,
    "timestamptz": 1,
    "numeric": 2,
}


@dataclass
class Ranked:
    stats: KeyStats
    notes: list[str]
    penalty: int  # 0 good, 1 even but filtered to constants, 2 skewed, 3 change key
    forbidden_by: list[UniqueConstraint] = field(default_factory=list)
    in_primary_key: bool = False
    integer: bool = False

    @property
    def allowed(self) -> bool:
        return not self.forbidden_by

    def to_json(self) -> dict[str, Any]:
        return {
            **self.stats.to_json(),
            "allowed": self.allowed,
            "forbidden_by": [c.describe() for c in self.forbidden_by],
            "notes": self.notes,
        }


def rank(
    keys: list[KeyStats],
    workload: Workload | None = None,
    constraints: Sequence[UniqueConstraint] = (),
    types: dict[str, str] | None = None,
) -> list[Ranked]:
    """Best first: allowed by the constraints, even, high cardinality, not constant-filtered;
    then among those (skew differences below 5% are noise, not a reason): joined/grouped on,
    the current key, within the primary key, fewer columns, more distinct values (by order
    of magnitude), integer types, and only last the lower skew. Keys that are not even are
    ordered by skew first (the least skewed is the fallback)."""
    workload = workload or Workload()
    types = types or {}
    pk = primary_key(constraints)
    out = []
    for k in keys:
        notes: list[str] = []
        bad = violated(k.columns, constraints)
        if bad:
            notes.append(f"not allowed: {bad[0].describe()} does not contain it")
        low = k.distinct >= 0 and k.distinct < LOW_CARDINALITY_PER_DN * max(k.nodes, 1)
        if low:
            notes.append(f"low cardinality ({k.distinct_text} distinct)")
        if k.null_share > SKEWED:
            notes.append(f"{k.null_share:.0%} NULL (all on one DN)")
        const = [c for c in k.columns if _in(c, workload.constant)]
        if const:
            notes.append(f"filtered to constants in the workload ({', '.join(const)})")
        used = [c for c in k.columns if _in(c, workload.preferred)]
        if used:
            notes.append(f"join/group-by column ({', '.join(used)})")
        in_pk = pk is not None and set(k.columns) <= set(pk)
        if in_pk:
            notes.append(
                "primary key" if tuple(k.columns) == tuple(pk or ()) else "in the primary key"
            )
        if k.verdict == "change key":
            penalty = 3
        elif k.verdict == "skewed" or low:
            penalty = 2
        elif const:
            penalty = 1
        else:
            penalty = 0
        integer = all(_TYPE_CLASS.get(types.get(c, ""), 3) == 0 for c in k.columns)
        out.append(Ranked(k, notes, penalty, bad, in_pk, integer))
    out.sort(
        key=lambda r: (
            not r.allowed,
            r.penalty,
            r.stats.skew_ratio if r.penalty >= 2 else 0.0,  # a fallback: least skewed first
            -sum(_in(c, workload.preferred) for c in r.stats.columns) / len(r.stats.columns),
            not r.stats.current,  # a good current key needs no redistribution
            not r.in_primary_key,
            len(r.stats.columns),
            -math.floor(math.log10(max(r.stats.distinct, 1))),
            max(_TYPE_CLASS.get(types.get(c, ""), 3) for c in r.stats.columns),
            r.stats.skew_ratio,  # among even keys only the last word: below 5% it is noise
            r.stats.label,
        )
    )
    return out


def _in(column: str, names: set[str]) -> bool:
    return column in names or column.lower() in names


@dataclass
class Recommendation:
    strategy: str  # "hash", "keep", "roundrobin", "replication", "change-constraint"
    key: tuple[str, ...] | None
    ddl: str | None
    reason: str
    choice: str = ""  # one line: why this key over the others

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "key": list(self.key) if self.key else None,
            "ddl": self.ddl,
            "reason": self.reason,
            "choice": self.choice,
        }


def _why(best: Ranked, ranked: list[Ranked]) -> str:
    """One line: what made `best` win among the keys that were as good on skew."""
    peers = [r for r in ranked if r.allowed and r.penalty == best.penalty]
    traits = [t for t in best.notes if not t.startswith(("low cardinality", "not allowed"))]
    if best.stats.current:
        traits.append("the current key (no redistribution)")
    if best.integer:
        traits.append("integer")
    traits.append(f"{best.stats.distinct_text} distinct")
    head = (
        f"{len(peers)} keys are even (skew <= {SKEWED:.0%}; lower skew below that is noise)"
        if len(peers) > 1 and best.penalty < 2
        else "the only even key"
        if best.penalty < 2
        else "the least skewed key allowed"
    )
    forbidden = [r for r in ranked if not r.allowed]
    tail = ""
    if forbidden:
        c = forbidden[0].forbidden_by[0]
        tail = f"; {len(forbidden)} other key(s) not allowed: {c.describe()} must contain the key"
    return f"{head}; chose {best.stats.label}: {', '.join(traits)}{tail}"


def recommend(
    info: TableInfo,
    ranked: list[Ranked],
    table_rows: int,
    replicate_below: int = REPLICATE_BELOW,
) -> Recommendation:
    """One recommendation and its DDL (printed, never executed), names quoted as SQL needs."""
    target = info.qualified
    current = info.current_key
    constraints = info.constraints
    if table_rows < replicate_below:
        return Recommendation(
            "replication",
            None,
            f"ALTER TABLE {target} DISTRIBUTE BY REPLICATION;",
            f"{table_rows:,} rows < {replicate_below:,}: a small dimension table is cheaper "
            "replicated on every DN (joins need no redistribution)",
            "replication allows any primary key or unique constraint",
        )

    def hash_ddl(cols: tuple[str, ...]) -> str:
        return (
            f"ALTER TABLE {target} DISTRIBUTE BY HASH({', '.join(map(info.quoted_column, cols))});"
        )

    allowed = [r for r in ranked if r.allowed]
    best = allowed[0] if allowed else None
    if best is not None and best.penalty < 2:
        return _hash_or_keep(best, ranked, current, hash_ddl(best.stats.columns))
    even_forbidden = [r for r in ranked if not r.allowed and r.penalty < 2]
    if not constraints:
        return Recommendation(
            "roundrobin",
            None,
            f"ALTER TABLE {target} DISTRIBUTE BY ROUNDROBIN;",
            "no candidate key spreads rows evenly (all above 5% skew or low cardinality)",
            "ROUNDROBIN spreads rows evenly whatever their values",
        )
    cons = "; ".join(c.describe() for c in constraints)
    if even_forbidden:
        return _change_constraint(info, even_forbidden[0], best, hash_ddl)
    if best is not None:
        rec = _hash_or_keep(best, ranked, current, hash_ddl(best.stats.columns))
        rec.reason = (
            f"no key that {cons} allows is even, and ROUNDROBIN is ruled out by them (it has "
            f"no distribution column for them to contain): {best.stats.label} is the least "
            f"skewed allowed key (skew {best.stats.skew_ratio:.1%}, {best.stats.distinct_text} "
            "distinct)"
        )
        return rec
    shared = common_columns(constraints)
    return Recommendation(
        "change-constraint",
        None,
        None,
        f"no distribution key is allowed: {cons} have no distributable column in common; "
        "make all but one of them plain (non-unique) indexes, or use REPLICATION",
        f"columns common to all constraints: {', '.join(shared or ()) or 'none'}",
    )


def _hash_or_keep(
    best: Ranked, ranked: list[Ranked], current: tuple[str, ...] | None, ddl: str
) -> Recommendation:
    cols = best.stats.columns
    why = f"skew {best.stats.skew_ratio:.1%}, {best.stats.distinct_text} distinct" + (
        f"; {'; '.join(best.notes)}" if best.notes else ""
    )
    choice = _why(best, ranked)
    if current is not None and tuple(current) == tuple(cols):
        return Recommendation("keep", cols, None, f"the current key is the best: {why}", choice)
    return Recommendation("hash", cols, ddl, why, choice)


def _change_constraint(
    info: TableInfo,
    even: Ranked,
    best: Ranked | None,
    hash_ddl: Callable[[tuple[str, ...]], str],
) -> Recommendation:
    """The even key the constraints forbid, and how they would have to change to allow it."""
    key = even.stats.columns
    stmts = []
    widened = []
    for c in even.forbidden_by:
        cols = (*c.columns, *(k for k in key if k not in c.columns))
        widened.append(f"{c.describe()} -> ({', '.join(cols)})")
        col_sql = ", ".join(map(info.quoted_column, cols))
        if c.name and c.kind in ("PRIMARY KEY", "UNIQUE"):
            name = c.quoted
            stmts.append(
                f"ALTER TABLE {info.qualified} DROP CONSTRAINT {name}, "
                f"ADD CONSTRAINT {name} {c.kind} ({col_sql});"
            )
        elif c.name:
            stmts.append(f"DROP INDEX {info.quoted_schema}.{c.quoted};")
            stmts.append(f"CREATE UNIQUE INDEX {c.quoted} ON {info.qualified} ({col_sql});")
    stmts.append(hash_ddl(key))
    fallback = (
        f"; or keep the constraints and HASH({best.stats.label}) at "
        f"{best.stats.skew_ratio:.1%} skew"
        if best is not None
        else ""
    )
    return Recommendation(
        "change-constraint",
        key,
        " ".join(stmts) if info.oid is not None else hash_ddl(key),
        f"HASH({even.stats.label}) is even (skew {even.stats.skew_ratio:.1%}) but the "
        f"distribution key must be contained in every primary key/unique constraint: widen "
        f"{'; '.join(widened)}, which then enforces uniqueness only of the wider column set"
        + (
            " (and a primary key makes the added columns NOT NULL)"
            if any(c.kind == "PRIMARY KEY" for c in even.forbidden_by)
            else ""
        )
        + fallback,
        "no key the constraints allow is even",
    )
