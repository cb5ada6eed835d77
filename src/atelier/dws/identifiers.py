"""SQL identifiers as users type them and as DDL must print them.

`--table '"Sch ema"."We""ird; Tab"'` is read with PostgreSQL's own rules: a double-quoted
part is exact (`""` inside is one `"`, a dot inside is part of the name), an unquoted part
is folded to lower case (the catalog is asked for the name as typed first, then folded, so
`Orders` finds a table that was created unquoted). Printed DDL quotes every name the way
the server's `quote_ident()` does; in the database the server's own function quotes the
catalog's names (catalog.py), and `quote_ident` here is the offline equivalent, tested
against the server on every keyword and on odd names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atelier.core.errors import AtelierError

# PostgreSQL 15 keywords that are not UNRESERVED (pg_get_keywords() catcode <> 'U'):
# quote_ident() quotes these. tests/dws/test_identifiers.py compares with the live server.
_RESERVED_TEXT = """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary
    bit boolean both case cast char character check coalesce collate collation column
    concurrently constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user dec decimal default deferrable
    desc distinct do else end except exists extract false fetch float for foreign freeze from
    full grant greatest group grouping having ilike in initially inner inout int integer
    intersect interval into is isnull join lateral leading least left like limit localtime
    localtimestamp national natural nchar none normalize not notnull null nullif numeric offset
    on only or order out outer overlaps overlay placing position precision primary real
    references returning right row select session_user setof similar smallint some substring
    symmetric table tablesample then time timestamp to trailing treat trim true union unique
    user using values varchar variadic verbose when where window with xmlattributes xmlconcat
    xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
"""
RESERVED = frozenset(_RESERVED_TEXT.split())
_SAFE = re.compile(r"[a-z_][a-z0-9_]*")


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident: quoted unless plain lower-case and not a keyword."""
    if _SAFE.fullmatch(name) and name not in RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Ident:
    """One part of a qualified name: its text (unescaped) and whether it was quoted."""

    text: str
    quoted: bool

    def spellings(self) -> list[str]:
        """Names to look up, exact first: a quoted part only as written."""
        if self.quoted or self.text == self.text.lower():
            return [self.text]
        return [self.text, self.text.lower()]


_PART = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^".\s]+))\s*')


def parse_qualified(spec: str, flag: str = "--table", max_parts: int = 2) -> list[Ident]:
    """`a.b`, `"A b"."c""d"` -> Idents; errors name the flag and the position."""
    try:
        spec.encode("utf-8")
    except UnicodeEncodeError as e:  # undecodable bytes in argv arrive as surrogates
        raise AtelierError(
            f"{flag} {spec!a}: not valid UTF-8 text (position {e.start}); names in "
            "the catalog are UTF-8"
        ) from None
    if "\0" in spec:
        raise AtelierError(f"{flag} {spec!r}: contains a NUL character")
    parts: list[Ident] = []
    pos = 0
    while True:
        m = _PART.match(spec, pos)
        if not m or m.end() == pos:
            what = "an unterminated quote" if spec[pos:].lstrip().startswith('"') else "a name"
            raise AtelierError(
                f"{flag} {spec!r}: expected {what} at position {pos}; quote names with "
                'spaces, dots or capitals as "Name" and write a " inside one as ""'
            )
        quoted, plain = m.group(1), m.group(2)
        if quoted is not None:
            if quoted == "":
                raise AtelierError(f'{flag} {spec!r}: "" is an empty name')
            parts.append(Ident(quoted.replace('""', '"'), True))
        else:
            parts.append(Ident(plain, False))
        pos = m.end()
        if pos == len(spec):
            break
        if spec[pos] != ".":
            raise AtelierError(
                f"{flag} {spec!r}: unexpected {spec[pos]!r} at position {pos}; quote the "
                'name as "..." if it contains it'
            )
        pos += 1
    if len(parts) > max_parts:
        shape = "schema.table or table" if max_parts == 2 else "one name"
        raise AtelierError(f"{flag} {spec!r}: expected {shape}, got {len(parts)} parts")
    return parts
