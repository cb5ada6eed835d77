"""What one analysis produces: per-key bucket counts folded into per-DN figures.

Both paths (in-database and offline) return counts per bucket (16384 of them), not per
DN: the bucket of a row does not depend on the cluster size, so `--nodes` only changes
the final fold `DN = bucket % N`, and the two paths can be compared bucket by bucket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atelier.core.errors import AtelierError
from atelier.dws.hashing import BUCKETS

SKEWED = 0.05  # DWS: more than 5% between DNs is skew
CHANGE = 0.10  # DWS: 10% or more, change the distribution key


@dataclass
class KeyStats:
    """One candidate distribution key and how it spreads the table's rows."""

    columns: tuple[str, ...]
    buckets: np.ndarray  # int64[16384]: rows per hash bucket
    nulls: int  # rows with a NULL in any key column (they hash to 0)
    distinct: int  # distinct non-NULL key values (the estimate unless distinct_exact)
    registers: np.ndarray | None = None  # int8[16384]: HyperLogLog registers (hll.py)
    distinct_exact: bool = True  # False: `distinct` is the HyperLogLog estimate
    current: bool = False
    nodes: int = 0
    per_node: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def fold(self, nodes: int) -> KeyStats:
        self.nodes = nodes
        self.per_node = np.bincount(np.arange(BUCKETS) % nodes, self.buckets, nodes).astype(
            np.int64
        )
        return self

    @property
    def rows(self) -> int:
        return int(self.buckets.sum())

    @property
    def avg(self) -> float:
        return self.rows / self.nodes if self.nodes else 0.0

    @property
    def skew_ratio(self) -> float:
        """(max - min) / avg, the figure DWS reports as the skew ratio."""
        if not self.rows:
            return 0.0
        return float(self.per_node.max() - self.per_node.min()) / self.avg

    @property
    def max_over_avg(self) -> float:
        return float(self.per_node.max()) / self.avg if self.rows else 0.0

    @property
    def null_share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def verdict(self) -> str:
        if self.skew_ratio >= CHANGE:
            return "change key"
        if self.skew_ratio > SKEWED:
            return "skewed"
        return "even"

    @property
    def label(self) -> str:
        return ", ".join(self.columns)

    @property
    def distinct_estimate(self) -> int | None:
        from atelier.dws.hll import estimate

        return estimate(self.registers) if self.registers is not None else None

    @property
    def distinct_text(self) -> str:
        """`1,234` when exact, `≈1,234` when estimated, `-` when not computed."""
        if self.distinct < 0:
            return "-"
        return f"{'' if self.distinct_exact else '≈'}{self.distinct:,}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": list(self.columns),
            "current": self.current,
            "rows_per_dn": [int(x) for x in self.per_node],
            "skew_ratio": round(self.skew_ratio, 6),
            "max_over_avg": round(self.max_over_avg, 6),
            "null_share": round(self.null_share, 6),
            "distinct": self.distinct,
            "distinct_exact": self.distinct_exact,
            "distinct_estimate": self.distinct_estimate,
            "verdict": self.verdict,
        }


_TOKEN = re.compile(r"\s*(\(|\)|,|\"(?:[^\"]|\"\")+\"|[^,()\s]+)\s*")


def parse_keys(spec: str, flag: str = "--columns") -> list[tuple[str, ...]]:
    """`a,b,(c,d)` -> [(a,), (b,), (c, d)]; double-quoted names keep commas and case."""
    keys: list[tuple[str, ...]] = []
    group: list[str] | None = None
    pos = 0
    while pos < len(spec):
        m = _TOKEN.match(spec, pos)
        if not m:
            raise AtelierError(f"{flag} {spec!r}: cannot read at position {pos}")
        tok, pos = m.group(1), m.end()
        if tok == "(":
            if group is not None:
                raise AtelierError(f"{flag} {spec!r}: nested parentheses")
            group = []
        elif tok == ")":
            if not group:
                raise AtelierError(f"{flag} {spec!r}: empty or unmatched ')'")
            keys.append(tuple(group))
            group = None
        elif tok == ",":
            continue
        else:
            name = tok[1:-1].replace('""', '"') if tok.startswith('"') else tok
            if group is not None:
                group.append(name)
            else:
                keys.append((name,))
    if group is not None:
        raise AtelierError(f"{flag} {spec!r}: missing ')'")
    if not keys:
        raise AtelierError(f"{flag} is empty; give column names like a,b,(c,d)")
    return keys
