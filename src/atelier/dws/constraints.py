"""Which distribution keys a table's primary key and unique constraints allow.

GaussDB(DWS) checks uniqueness on each DN, so "the primary key constraint and unique
constraint in the table must contain a distribution column" (DWS developer guide,
"Creating and Managing DWS Tables"; the FAQ "Do I Need to Set a Distribution Key After
Setting a Primary Key?": "the primary key must contain the distribution key"). Greenplum
refuses the same ("UNIQUE index must contain all columns in the distribution key") and
Citus too (unique constraints must include the distribution column). So a hash key is
allowed only when its columns are a subset of the columns of *every* primary key, unique
constraint and unique index; ROUNDROBIN (Greenplum: RANDOMLY) has no distribution column
at all and is ruled out by any of them, REPLICATION is always allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from atelier.dws.identifiers import quote_ident


@dataclass(frozen=True)
class UniqueConstraint:
    """A primary key, unique constraint or unique index, by its column names."""

    kind: str  # "PRIMARY KEY", "UNIQUE" or "UNIQUE INDEX"
    name: str | None  # None for an offline --primary-key / --unique
    columns: tuple[str, ...]
    expression: bool = False  # a unique index with expression columns (not only `columns`)
    quoted: str = ""  # the name as DDL prints it (the server's quote_ident in the database)

    def __post_init__(self) -> None:
        if not self.quoted and self.name:
            object.__setattr__(self, "quoted", quote_ident(self.name))

    def describe(self) -> str:
        named = f" {self.quoted}" if self.name else ""
        cols = ", ".join(map(quote_ident, self.columns))
        return f"{self.kind}{named} ({cols}{', <expression>' if self.expression else ''})"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "name": self.name,
            "columns": list(self.columns),
            "expression": self.expression,
        }


def violated(key: Iterable[str], constraints: Sequence[UniqueConstraint]) -> list[UniqueConstraint]:
    """The constraints that do not contain every column of `key` (empty: the key is allowed)."""
    cols = set(key)
    return [c for c in constraints if not cols <= set(c.columns)]


def common_columns(constraints: Sequence[UniqueConstraint]) -> tuple[str, ...] | None:
    """Columns in every constraint, in the first one's order (None: no constraint at all)."""
    if not constraints:
        return None
    shared = set(constraints[0].columns)
    for c in constraints[1:]:
        shared &= set(c.columns)
    return tuple(c for c in constraints[0].columns if c in shared)


def primary_key(constraints: Sequence[UniqueConstraint]) -> tuple[str, ...] | None:
    return next((c.columns for c in constraints if c.kind == "PRIMARY KEY"), None)
