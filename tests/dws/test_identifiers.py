"""Qualified names as typed (--table/--schema) and identifiers as DDL prints them."""

from __future__ import annotations

import pytest

from atelier.core.errors import AtelierError
from atelier.dws.identifiers import RESERVED, Ident, parse_qualified, quote_ident


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("orders", [Ident("orders", False)]),
        ("Sales.Orders", [Ident("Sales", False), Ident("Orders", False)]),
        ('"Sch ema"."We""ird; Tab"', [Ident("Sch ema", True), Ident('We"ird; Tab', True)]),
        ('"dotted.name"', [Ident("dotted.name", True)]),
        ('x."dotted.name"', [Ident("x", False), Ident("dotted.name", True)]),
        (' s . "t" ', [Ident("s", False), Ident("t", True)]),
        ('"a""""b"', [Ident('a""b', True)]),
        ("t;drop", [Ident("t;drop", False)]),  # looked up as a name, never run
    ],
)
def test_parse_qualified(spec, parts):
    assert parse_qualified(spec) == parts


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ('"unterminated', "unterminated quote"),
        ("a.b.c", "3 parts"),
        ('""', "empty name"),
        ("a.", "expected a name"),
        ("Sch ema.t", "unexpected 'e'"),
        ('"a"b', "unexpected 'b'"),
        ("", "expected a name"),
        ("x.\udcff", "not valid UTF-8"),  # an undecodable argv byte
        ("a\0b", "NUL"),
    ],
)
def test_parse_qualified_refuses(spec, why):
    with pytest.raises(AtelierError, match=why):
        parse_qualified(spec)


def test_spellings_exact_first_and_folded_only_when_unquoted():
    assert Ident("Orders", False).spellings() == ["Orders", "orders"]
    assert Ident("Orders", True).spellings() == ["Orders"]
    assert Ident("orders", False).spellings() == ["orders"]


ODD = [
    "plain",
    "Mixed",
    'a"b',
    "a$b",
    "$a",
    "_x",
    "1a",
    "a b",
    "dotted.name",
    'We"ird; Tab',
    "é",
    "中文",
    "abs",
    "order",
    "user",
    "select",
    "x" * 63,
]


def test_quote_ident_matches_the_server(pg_conn):
    keywords = pg_conn.execute("SELECT word, catcode FROM pg_get_keywords()").fetchall()
    assert {w for w, cat in keywords if cat != "U"} == set(RESERVED)
    names = ODD + [w for w, _ in keywords]
    got = pg_conn.execute("SELECT n, quote_ident(n) FROM unnest(%s::text[]) n", [names]).fetchall()
    assert {n: q for n, q in got} == {n: quote_ident(n) for n in names}
