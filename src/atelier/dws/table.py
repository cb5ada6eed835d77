"""What the advisor knows about a table: its columns and types, size, constraints and
current distribution, and which column types can be a distribution key.

Shared by the database path (`catalog.py` fills it from the server's catalog) and the
offline path (`offline.py` from a parquet/csv file), so it imports no driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atelier.core.errors import AtelierError
from atelier.dws.constraints import UniqueConstraint
from atelier.dws.identifiers import quote_ident

# PostgreSQL type name -> the hash family that places it (see hashing.py / sql.py).
DISTRIBUTABLE = {
    "int2": "int4",
    "int4": "int4",
    "int8": "int8",
    "numeric": "numeric",
    "text": "text",
    "varchar": "text",
    "bpchar": "bpchar",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
}
# spellings a user may give to --type, as the catalog names them
TYPE_ALIASES = {
    "smallint": "int2",
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "decimal": "numeric",
    "char": "bpchar",
    "character": "bpchar",
    "character varying": "varchar",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
}
DISTRIBUTABLE_HELP = (
    "smallint, integer, bigint, numeric/decimal, text, varchar, char(n), date, time, "
    "timestamp, timestamptz"
)


@dataclass
class Column:
    name: str
    type: str  # pg_type.typname (of the base type for a domain)
    quoted: str = ""  # as DDL prints it: the server's quote_ident(), else identifiers.py's
    readable: bool = True  # the --dsn user may SELECT it (column privileges)

    def __post_init__(self) -> None:
        self.quoted = self.quoted or quote_ident(self.name)

    @property
    def distributable(self) -> bool:
        return self.type in DISTRIBUTABLE


@dataclass
class TableInfo:
    schema: str
    name: str
    columns: list[Column]
    estimated_rows: int
    current_key: tuple[str, ...] | None  # None: not hash-distributed (or no distributable column)
    current_source: str  # "pgxc_class", "gp_distribution_policy" or "first distributable column"
    locator: str = "hash"
    native: dict[str, Any] = field(default_factory=dict)
    constraints: list[UniqueConstraint] = field(default_factory=list)
    oid: int | None = None  # None offline
    quoted_schema: str = ""  # the server's quote_ident() of the catalog's own names
    quoted_name: str = ""

    def __post_init__(self) -> None:
        self.quoted_schema = self.quoted_schema or quote_ident(self.schema)
        self.quoted_name = self.quoted_name or quote_ident(self.name)

    @property
    def qualified(self) -> str:
        """schema.table quoted as SQL needs it: unambiguous whatever the names hold."""
        return f"{self.quoted_schema}.{self.quoted_name}"

    def quoted_column(self, name: str) -> str:
        return next((c.quoted for c in self.columns if c.name == name), quote_ident(name))

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        for c in self.columns:
            if c.name == name.lower():
                return c
        listed = ", ".join(f"{c.name} ({c.type})" for c in self.columns)
        raise AtelierError(f"table {self.qualified} has no column {name!r}; columns: {listed}")
