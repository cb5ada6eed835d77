"""Reading queries.sql: joins, groupings and constant filters, nothing inside strings or
comments, any text (a megabyte word, an unclosed quote) in one linear pass."""

from __future__ import annotations

from atelier.dws.workload import parse_workload


def test_joins_groups_and_constants():
    w = parse_workload(
        "SELECT s.shop, sum(1) FROM sales s JOIN shops h ON s.shop = h.shop GROUP BY s.shop;\n"
        "SELECT a FROM t JOIN u USING (k1, \"K2\") WHERE t.\"Status\" IN ('a', 'b')\n"
        "  AND x = -5 AND f = true AND y = lower(z) AND d = DATE_TRUNC('day', ts)\n"
        "GROUP BY t.a, date_trunc('day', ts), \"Reg\" HAVING count(*) > 1 ORDER BY 1;\n"
        "SELECT * FROM sales WHERE sale_id = 42;"
    )
    assert w.join == {"shop", "k1", "K2"}
    assert w.group == {"shop", "a", "Reg"}
    assert w.constant == {"Status", "x", "sale_id"}


def test_strings_and_comments_are_not_read():
    w = parse_workload(
        "SELECT 'a = b', E'c = 1' FROM t -- d = e\n/* f = g GROUP BY h */ WHERE \"i = j\" = k;"
    )
    assert w.join == {"i = j", "k"} and not w.group and not w.constant


def test_any_text_is_read():
    for text in ("a" * 100_000, '"' + "b" * 100_000, "'unclosed", "/* open", "GROUP BY", "= ="):
        parse_workload(text)  # no error, no hang
    assert parse_workload("x = 'unclosed").constant == {"x"}
