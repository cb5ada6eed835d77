"""CLI output (table and --json), scan, workload rules and DDL."""

from __future__ import annotations

import json

from psycopg import sql

from atelier.cli.main import main
from atelier.dws.identifiers import quote_ident
from atelier.dws.workload import read_workload


def test_json_and_ddl(capsys, pg_dsn, pg_conn, pg_schema):
    t = sql.Identifier(pg_schema, "facts")
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    # first column (the implicit key) is a 4-value status: badly skewed
    pg_conn.execute(
        sql.SQL(
            "CREATE TABLE {} AS SELECT (g % 4)::int4 AS status, g::int8 AS order_id,"
            " (g % 997)::int4 AS shop FROM generate_series(1, 20000) g"
        ).format(t)
    )
    code = main(
        [
            "dws",
            "skew",
            "--dsn",
            pg_dsn,
            "--table",
            f"{pg_schema}.facts",
            "--nodes",
            "4",
            "--replicate-below",
            "0",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["current_key"] == ["status"]
    keys = {tuple(k["key"]): k for k in out["keys"]}
    assert keys[("status",)]["verdict"] == "change key"
    assert sum(keys[("order_id",)]["rows_per_dn"]) == 20000
    assert keys[("order_id",)]["distinct_exact"] is False
    assert abs(keys[("order_id",)]["distinct"] - 20000) < 200  # HyperLogLog estimate
    assert keys[("order_id",)]["distinct_estimate"] == keys[("order_id",)]["distinct"]
    assert keys[("status",)]["distinct"] == 4
    assert out["recommendation"]["ddl"] == (
        f"ALTER TABLE {pg_schema}.facts DISTRIBUTE BY HASH(order_id);"
    )
    base = ["dws", "skew", "--dsn", pg_dsn, "--table", f"{pg_schema}.facts", "--nodes", "4"]
    code = main([*base, "--exact-distinct", "--jobs", "2", "--json"])
    exact = {tuple(k["key"]): k for k in json.loads(capsys.readouterr().out)["keys"]}
    assert code == 0 and exact[("order_id",)]["distinct"] == 20000
    assert exact[("order_id",)]["distinct_exact"] is True
    assert exact[("order_id",)]["rows_per_dn"] == keys[("order_id",)]["rows_per_dn"]
    assert main([*base, "--jobs", "0"]) == 2
    assert "argument --jobs: 0 is below the minimum" in capsys.readouterr().err
    code = main(base)
    text = capsys.readouterr().out
    assert code == 0 and "REPLICATION" in text  # 20000 rows < 1M: a dimension-sized table

    code = main(["dws", "scan", "--dsn", pg_dsn, "--schema", pg_schema, "--nodes", "4", "--json"])
    listed = json.loads(capsys.readouterr().out)["tables"]
    assert code == 0
    assert any(r["table"] == f"{pg_schema}.facts" and r["key"] == ["status"] for r in listed)


def test_workload_prefers_join_columns(capsys, pg_dsn, pg_conn, pg_schema, tmp_path):
    t = sql.Identifier(pg_schema, "sales")
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(
        sql.SQL(
            "CREATE TABLE {} AS SELECT g::int8 AS sale_id, (g % 30000)::int4 AS shop,"
            " (g % 7)::int4 AS item FROM generate_series(1, 60000) g"
        ).format(t)
    )
    wl = tmp_path / "queries.sql"
    wl.write_text(
        "SELECT s.shop, sum(1) FROM sales s JOIN shops h ON s.shop = h.shop GROUP BY s.shop;\n"
        "SELECT * FROM sales WHERE sale_id = 42;  -- point lookups\n"
    )
    w = read_workload(wl)
    assert "shop" in w.join and "shop" in w.group and "sale_id" in w.constant
    code = main(
        [
            "dws",
            "skew",
            "--dsn",
            pg_dsn,
            "--table",
            f"{pg_schema}.sales",
            "--nodes",
            "4",
            "--workload",
            str(wl),
            "--replicate-below",
            "0",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["recommendation"]["key"] == ["shop"]


def test_quote_ident():
    assert quote_ident("abc_1") == "abc_1"
    assert quote_ident("Mixed") == '"Mixed"'
    assert quote_ident('a"b') == '"a""b"'
