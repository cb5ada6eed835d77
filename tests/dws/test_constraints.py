"""Primary keys and unique constraints decide which keys may be recommended (issue 10, #19).

DWS, Greenplum and Citus require every primary key / unique constraint to contain the
distribution key; the advisor reads them from the catalog (or --primary-key/--unique
offline) and never recommends a key they forbid.
"""

from __future__ import annotations

import json

import pytest
from psycopg import sql

from atelier.dws.constraints import UniqueConstraint, common_columns, violated
from tests.dws.cli import one_line_error, run


def _make(pg_conn, schema: str, name: str, ddl: str, fill: str) -> str:
    t = sql.Identifier(schema, name)
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(sql.SQL(f"CREATE TABLE {{}} ({ddl})").format(t))
    pg_conn.execute(sql.SQL(f"INSERT INTO {{}} {fill}").format(t))
    pg_conn.execute(sql.SQL("ANALYZE {}").format(t))
    return f"{schema}.{name}"


def _skew(capsys, dsn, table, *extra) -> dict:
    code, out, err = run(
        capsys, "skew", "--dsn", dsn, "--table", table, "--nodes", "4",
        "--replicate-below", "0", "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)


def test_rules():
    pk = UniqueConstraint("PRIMARY KEY", "p", ("a", "b"))
    uq = UniqueConstraint("UNIQUE", "u", ("b", "c"))
    assert violated(("b",), [pk, uq]) == []
    assert violated(("a",), [pk, uq]) == [uq]
    assert violated(("a", "b"), [pk]) == []
    assert violated(("c",), []) == []
    assert common_columns([pk, uq]) == ("b",)
    assert common_columns([]) is None


def test_primary_key_forbids_other_keys(capsys, pg_dsn, pg_conn, pg_schema):
    table = _make(
        pg_conn, pg_schema, "pk_tab", "id int8 PRIMARY KEY, payload text, n int4",
        "SELECT g, md5(g::text), g FROM generate_series(1, 40000) g",
    )  # fmt: skip
    out = _skew(capsys, pg_dsn, table)
    keys = {tuple(k["key"]): k for k in out["keys"]}
    assert out["constraints"][0]["kind"] == "PRIMARY KEY"
    assert out["constraints"][0]["columns"] == ["id"]
    assert out["current_key"] == ["id"]  # what DWS picks: the primary key's first column
    assert keys[("payload",)]["allowed"] is False and keys[("n",)]["allowed"] is False
    assert "pk_tab_pkey" in keys[("payload",)]["forbidden_by"][0]
    rec = out["recommendation"]
    assert rec["key"] == ["id"] and rec["strategy"] == "keep"
    assert "primary key" in rec["choice"]
    # asked for the forbidden keys only: still never recommended
    out = _skew(capsys, pg_dsn, table, "--columns", "payload,n")
    assert out["recommendation"]["key"] == ["id"]
    assert all(not k["allowed"] for k in out["keys"] if k["key"] != ["id"])


def test_composite_primary_key_allows_its_subsets(capsys, pg_dsn, pg_conn, pg_schema):
    table = _make(
        pg_conn, pg_schema, "pk2", "tenant int4, id int8, note text, PRIMARY KEY (tenant, id)",
        "SELECT g % 3, g, md5(g::text) FROM generate_series(1, 30000) g",
    )  # fmt: skip
    out = _skew(capsys, pg_dsn, table)
    keys = {tuple(k["key"]): k for k in out["keys"]}
    assert keys[("tenant", "id")]["allowed"] and keys[("id",)]["allowed"]
    assert not keys[("note",)]["allowed"]
    assert keys[("tenant",)]["verdict"] == "change key"
    assert out["recommendation"]["key"] == ["id"]  # even, in the primary key, one column


def test_unique_index_with_nulls_gives_change_constraint(capsys, pg_dsn, pg_conn, pg_schema):
    # a unique column that is mostly NULL: every NULL hashes to one DN
    table = _make(
        pg_conn, pg_schema, "uq_nulls", "ext_ref text, amount int4",
        "SELECT CASE WHEN g % 10 = 0 THEN 'r' || g END, g FROM generate_series(1, 30000) g",
    )  # fmt: skip
    pg_conn.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE (ext_ref)").format(
            sql.Identifier(pg_schema, "uq_nulls"), sql.Identifier("Ext Ref Uq")
        )
    )
    out = _skew(capsys, pg_dsn, table)
    rec = out["recommendation"]
    assert rec["strategy"] == "change-constraint" and rec["key"] == ["amount"]
    assert (
        'DROP CONSTRAINT "Ext Ref Uq", ADD CONSTRAINT "Ext Ref Uq" UNIQUE (ext_ref, amount)'
        in (rec["ddl"])
    )
    assert rec["ddl"].endswith("DISTRIBUTE BY HASH(amount);")
    assert "uniqueness only of the wider column set" in rec["reason"]


def test_constraints_without_a_common_column(capsys, pg_dsn, pg_conn, pg_schema):
    table = _make(
        pg_conn, pg_schema, "two_keys", "id int4 PRIMARY KEY, email text UNIQUE",
        "SELECT g, 'u' || g FROM generate_series(1, 20000) g",
    )  # fmt: skip
    out = _skew(capsys, pg_dsn, table)
    rec = out["recommendation"]
    assert all(not k["allowed"] for k in out["keys"])  # no column is in both
    assert rec["strategy"] == "change-constraint" and rec["key"] == ["id"]
    assert "ADD CONSTRAINT two_keys_email_key UNIQUE (email, id)" in rec["ddl"]
    # too few rows for any key to be even: nothing to widen towards, say so
    small = _make(
        pg_conn, pg_schema, "two_small", "id int4 PRIMARY KEY, email text UNIQUE",
        "SELECT g, 'u' || g FROM generate_series(1, 30) g",
    )  # fmt: skip
    rec = _skew(capsys, pg_dsn, small)["recommendation"]
    assert rec["strategy"] == "change-constraint" and rec["key"] is None and rec["ddl"] is None
    assert "no distributable column in common" in rec["reason"]


def test_unique_index_include_and_expression(capsys, pg_dsn, pg_conn, pg_schema):
    table = _make(
        pg_conn, pg_schema, "idx_tab", "a int4, b int4, c text",
        "SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 20000) g",
    )  # fmt: skip
    t = sql.Identifier(pg_schema, "idx_tab")
    pg_conn.execute(sql.SQL("CREATE UNIQUE INDEX idx_ab ON {} (a) INCLUDE (b)").format(t))
    pg_conn.execute(sql.SQL("CREATE UNIQUE INDEX idx_expr ON {} (a, lower(c))").format(t))
    out = _skew(capsys, pg_dsn, table)
    cons = {c["name"]: c for c in out["constraints"]}
    assert cons["idx_ab"]["columns"] == ["a"]  # INCLUDE columns are not part of it
    assert cons["idx_expr"]["columns"] == ["a"] and cons["idx_expr"]["expression"]
    assert out["recommendation"]["key"] == ["a"]


def test_even_keys_ranked_by_meaning_not_by_noise(capsys, pg_dsn, pg_conn, pg_schema, tmp_path):
    # both unique, both even: the integer wins whatever the skew says (noise below 5%);
    # the current key (first column) is a status, so "no redistribution" decides nothing
    table = _make(
        pg_conn, pg_schema, "noise", "st int4, code text, n int4",
        "SELECT g % 3, md5(g::text), g FROM generate_series(1, 40000) g",
    )  # fmt: skip
    out = _skew(capsys, pg_dsn, table, "--columns", "code,n")
    assert {k["verdict"] for k in out["keys"] if k["key"] != ["st"]} == {"even"}
    assert out["recommendation"]["key"] == ["n"]
    assert "integer" in out["recommendation"]["choice"]
    assert "2 keys are even" in out["recommendation"]["choice"]
    # a join key of the workload wins over the integer
    wl = tmp_path / "q.sql"
    wl.write_text("SELECT * FROM noise a JOIN other b ON a.code = b.code;\n")
    out = _skew(capsys, pg_dsn, table, "--columns", "code,n", "--workload", str(wl))
    assert out["recommendation"]["key"] == ["code"]
    assert "join/group-by column" in out["recommendation"]["choice"]


def test_offline_primary_key_and_unique(capsys, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("id,payload,n\n" + "".join(f"{i},p{i * 7919 % 10007},{i}\n" for i in range(20000)))
    base = ["skew", "--file", str(f), "--nodes", "4", "--replicate-below", "0", "--json"]
    code, out, err = run(capsys, *base, "--columns", "payload", "--primary-key", "id")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["recommendation"]["key"] == ["id"]
    keys = {tuple(k["key"]): k for k in rep["keys"]}
    assert not keys[("payload",)]["allowed"]
    code, out, err = run(capsys, *base, "--primary-key", "id", "--unique", "payload")
    assert json.loads(out)["recommendation"]["strategy"] == "change-constraint"
    line = one_line_error(*run(capsys, *base, "--primary-key", "nope")[::2])
    assert "--primary-key" in line and "no column 'nope'" in line
    line = one_line_error(*run(capsys, *base, "--unique", "id,id")[::2])
    assert "names a column twice" in line


def test_primary_key_flag_refused_with_dsn(capsys, pg_dsn):
    args = ["skew", "--dsn", pg_dsn, "--table", "t", "--primary-key", "id"]
    line = one_line_error(*run(capsys, *args)[::2])
    assert "come from the catalog" in line


@pytest.mark.parametrize("name", ["Mixed Case", "order"])
def test_ddl_quotes_catalog_names(capsys, pg_dsn, pg_conn, pg_schema, name):
    t = sql.Identifier(pg_schema, "dotted.name")
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(sql.SQL("CREATE TABLE {} (st int4, {} int8)").format(t, sql.Identifier(name)))
    pg_conn.execute(
        sql.SQL("INSERT INTO {} SELECT g % 3, g FROM generate_series(1, 20000) g").format(t)
    )
    out = _skew(capsys, pg_dsn, f'{pg_schema}."dotted.name"')
    assert out["table"] == f'{pg_schema}."dotted.name"'
    assert out["recommendation"]["ddl"] == (
        f'ALTER TABLE {pg_schema}."dotted.name" DISTRIBUTE BY HASH("{name}");'
    )
