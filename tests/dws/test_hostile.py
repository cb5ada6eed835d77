"""Hostile and careless input (issue 10, #17 #18 #20 #22 and beyond): odd names, tables
the role cannot read, injection attempts through every name-bearing flag, binary and
malformed files, odd DSNs, timeouts in the middle of a parallel scan.

Every run either works or ends in one `atelier: error:` line with exit 2; nothing the
advisor is given ever runs as SQL.
"""

from __future__ import annotations

import json
import os

import pytest
from psycopg import sql

from atelier.core.errors import AtelierError
from tests.dws.cli import one_line_error, run

# one per xdist worker, like pg_schema: a space in it, and the worker's name
ODD_SCHEMA = f"Sch ema {os.environ.get('PYTEST_XDIST_WORKER', 'master')}"
ODD_TABLE = 'We"ird; Tab'


@pytest.fixture(scope="module")
def scan_schema(pg_conn, pg_schema):
    """A schema of its own: odd names, a table we may not read, a view, a partitioned
    table, a materialized view, a domain column, a table with no distributable column."""
    s = f"{pg_schema}_scan"
    q = sql.Identifier(s)
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(q))
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(q))
    odd = sql.Identifier(ODD_SCHEMA)
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(odd))
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(odd))
    for stmt in [
        "CREATE TABLE {s}.{odd} (st int4, id int4 PRIMARY KEY)",
        "INSERT INTO {s}.{odd} SELECT g % 3, g FROM generate_series(1, 3000) g",
        "CREATE TABLE {s}.secret (st int4)",
        "INSERT INTO {s}.secret SELECT g % 3 FROM generate_series(1, 3000) g",
        "REVOKE ALL ON {s}.secret FROM CURRENT_USER",  # the owner may revoke its own rights
        "CREATE TABLE {s}.{semi} (st int4)",
        "INSERT INTO {s}.{semi} SELECT g % 2 FROM generate_series(1, 3000) g",
        "CREATE VIEW {s}.v AS SELECT 1 AS st",
        "CREATE TABLE {s}.parted (st int4, d date) PARTITION BY RANGE (d)",
        "CREATE TABLE {s}.parted_a PARTITION OF {s}.parted FOR VALUES FROM ('2000-01-01') "
        "TO ('2100-01-01')",
        "INSERT INTO {s}.parted SELECT g % 2, DATE '2020-01-01' + g % 900 "
        "FROM generate_series(1, 3000) g",
        "CREATE MATERIALIZED VIEW {s}.mv AS SELECT g % 2 AS st FROM generate_series(1, 100) g",
        "CREATE DOMAIN {s}.posint AS int4 CHECK (VALUE > 0)",
        "CREATE TABLE {s}.dom (k {s}.posint, f float8)",
        "INSERT INTO {s}.dom SELECT 1 + g % 2, g FROM generate_series(1, 3000) g",
        "CREATE TABLE {s}.floats (f float8, j jsonb, a int4[])",
        "INSERT INTO {s}.floats VALUES (1.5, '{{}}', '{{1}}')",
    ]:
        pg_conn.execute(
            sql.SQL(stmt).format(
                s=q,
                odd=sql.Identifier(ODD_TABLE),
                semi=sql.Identifier("a b;c"),
            )
        )
    pg_conn.execute(
        sql.SQL("CREATE TABLE {}.{} AS SELECT 1 AS x").format(odd, sql.Identifier(ODD_TABLE))
    )
    yield s
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(q))
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(odd))


def _json(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_scan_skips_unreadable_and_reads_odd_names(capsys, pg_dsn, scan_schema):
    out = _json(
        capsys, "scan", "--dsn", pg_dsn, "--schema", scan_schema, "--nodes", "4",
        "--threshold", "0",
    )  # fmt: skip
    listed = {r["table"] for r in out["tables"]}
    assert f'{scan_schema}."a b;c"' in listed
    assert f'{scan_schema}."We""ird; Tab"' in listed
    assert f"{scan_schema}.parted" in listed  # the parent covers its partition
    assert f"{scan_schema}.dom" in listed  # a domain over int4 hashes as int4
    assert not any("parted_a" in t or t.endswith((".v", ".mv")) for t in listed)
    skipped = {s["table"]: s["reason"] for s in out["skipped"]}
    assert "permission denied" in skipped[f"{scan_schema}.secret"]
    assert "no distributable column" in skipped[f"{scan_schema}.floats"]
    # and as a table for people: the skipped table and why, after the findings
    code, text, _ = run(capsys, "scan", "--dsn", pg_dsn, "--schema", scan_schema)
    assert code == 0 and f"skipped {scan_schema}.secret: permission denied" in text


def test_skew_on_a_table_we_cannot_read(capsys, pg_dsn, scan_schema):
    args = ["skew", "--dsn", pg_dsn, "--table", f"{scan_schema}.secret"]
    line = one_line_error(*run(capsys, *args)[::2])
    assert "permission denied" in line and "secret" in line and "GRANT SELECT" in line


def test_quoted_names_with_quotes_semicolons_and_spaces(capsys, pg_dsn, scan_schema):
    out = _json(capsys, "skew", "--dsn", pg_dsn, "--table", f'{scan_schema}."We""ird; Tab"')
    assert out["table"] == f'{scan_schema}."We""ird; Tab"' and out["rows"] == 3000
    assert out["recommendation"]["ddl"] == (
        f'ALTER TABLE {scan_schema}."We""ird; Tab" DISTRIBUTE BY REPLICATION;'
    )
    # an odd schema as well, and an odd name that exists in both
    odd = f'"{ODD_SCHEMA}"."We""ird; Tab"'
    out = _json(capsys, "skew", "--dsn", pg_dsn, "--table", odd)
    assert out["table"] == odd and out["rows"] == 1
    out = _json(capsys, "scan", "--dsn", pg_dsn, "--schema", f'"{ODD_SCHEMA}"', "--threshold", "0")
    assert out["scanned"] == 1


def test_views_and_other_relations_are_refused_by_name(capsys, pg_dsn, scan_schema):
    line = one_line_error(*run(capsys, "skew", "--dsn", pg_dsn, "--table", f"{scan_schema}.v")[::2])
    assert "is a view; give a table" in line
    out = _json(capsys, "skew", "--dsn", pg_dsn, "--table", f"{scan_schema}.mv")
    assert out["rows"] == 100  # a materialized view holds rows: it can be analyzed


@pytest.mark.parametrize(
    "flag_args",
    [
        ["--table", "x'; DROP TABLE {s}.secret; --"],
        ["--table", '"{s}"."secret""; DROP TABLE x; --"'],
        ["--table", "{s}.dom", "--columns", '"k); DROP TABLE {s}.dom; --"'],
        ["--table", "{s}.dom", "--columns", "k' OR '1'='1"],
    ],
)
def test_injection_through_skew_flags(capsys, pg_dsn, pg_conn, scan_schema, flag_args):
    args = [a.format(s=scan_schema) for a in flag_args]
    line = one_line_error(*run(capsys, "skew", "--dsn", pg_dsn, *args)[::2])
    assert "no table" in line or "no column" in line or "unexpected" in line
    for t in ("secret", "dom"):  # still there
        assert pg_conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [f"{scan_schema}.{t}"]
        ).fetchone()[0]


def test_injection_through_schema_and_workload(capsys, pg_dsn, pg_conn, scan_schema, tmp_path):
    for schema in ("x' OR '1'='1", "\"x' OR '1'='1\""):
        line = one_line_error(*run(capsys, "scan", "--dsn", pg_dsn, "--schema", schema)[::2])
        assert "no such schema" in line or "unexpected" in line
    wl = tmp_path / "evil.sql"
    wl.write_text(f"DROP TABLE {scan_schema}.dom; SELECT * FROM t WHERE k = 1;")
    out = _json(
        capsys, "skew", "--dsn", pg_dsn, "--table", f"{scan_schema}.dom", "--workload", str(wl)
    )
    assert "filtered to constants" in " ".join(out["keys"][0]["notes"])
    assert pg_conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{scan_schema}.dom"]).fetchone()[
        0
    ]


def test_dsn_options_cannot_lift_read_only(pg_dsn):
    import psycopg

    from atelier.dws.catalog import connect

    sep = "&" if "?" in pg_dsn else "?"
    dsn = f"{pg_dsn}{sep}options=-c%20default_transaction_read_only%3Doff"
    with connect(dsn) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE should_not_exist (x int)")


def test_empty_and_missing_schema(capsys, pg_dsn, pg_conn, pg_schema):
    empty = sql.Identifier(f"{pg_schema}_empty")
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(empty))
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(empty))
    try:
        code, out, err = run(capsys, "scan", "--dsn", pg_dsn, "--schema", f"{pg_schema}_empty")
        assert code == 0 and "0 analyzed" in out, err
        line = one_line_error(*run(capsys, "scan", "--dsn", pg_dsn, "--schema", "nope_x")[::2])
        assert "no such schema" in line and f"{pg_schema}_empty" in line
        line = one_line_error(
            *run(capsys, "skew", "--dsn", pg_dsn, "--table", f"{pg_schema}_empty.t")[::2]
        )
        assert "has no tables" in line
    finally:
        pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(empty))


@pytest.mark.parametrize(
    ("dsn", "expect"),
    [
        ("postgresql://u:s3cret@127.0.0.1:1/db", "cannot connect"),
        ("host=127.0.0.1 port=99999 password=s3cret", "invalid port"),
        ("host=127.0.0.1 port=1 password='s3 cret'", "cannot connect"),
        ("postgresql://u:s3cret@[::1", "--dsn"),
        ("postgresql://u:s3c@ret@127.0.0.1:1/db", "cannot connect"),
        ("postgresql://u:s3cret@127.0.0.1:1/d\udcff", "not valid UTF-8"),
        ("not a dsn at all s3cret", "--dsn"),
    ],
)
def test_odd_dsns(capsys, dsn, expect):
    line = one_line_error(*run(capsys, "skew", "--dsn", dsn, "--table", "t")[::2])
    assert expect in line
    assert "s3" not in line and "cret" not in line


def test_statement_timeout_mid_scan_with_jobs(capsys, pg_dsn, pg_conn, pg_schema):
    """A big table times out in every page range: it is skipped, the scan goes on.

    1.5M rows: each of the two page ranges takes well over 50 ms even on a quiet machine
    (with 300,000 rows a CI run once finished the big table inside the timeout).
    """
    s = sql.Identifier(f"{pg_schema}_slow")
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(s))
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
    try:
        pg_conn.execute(
            sql.SQL(
                "CREATE TABLE {}.big AS SELECT g % 5 AS k, md5(g::text) AS s "
                "FROM generate_series(1, 1500000) g"
            ).format(s)
        )
        pg_conn.execute(sql.SQL("CREATE TABLE {}.small AS SELECT 1 AS k").format(s))
        out = _json(
            capsys, "scan", "--dsn", pg_dsn, "--schema", f"{pg_schema}_slow", "--jobs", "2",
            "--statement-timeout", "0.05", "--threshold", "0",
        )  # fmt: skip
        skipped = {x["table"]: x["reason"] for x in out["skipped"]}
        assert "--statement-timeout" in skipped[f"{pg_schema}_slow.big"]
        assert [r["table"] for r in out["tables"]] == [f"{pg_schema}_slow.small"]
        args = ["skew", "--dsn", pg_dsn, "--table", f"{pg_schema}_slow.big", "--jobs", "2"]
        line = one_line_error(*run(capsys, *args, "--statement-timeout", "0.05")[::2])
        assert "--statement-timeout" in line
    finally:
        pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(s))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_statement_timeout_refused_at_parse_time(capsys, value):
    line = one_line_error(
        *run(capsys, "skew", "--file", "x.csv", "--statement-timeout", value)[::2]
    )
    assert "--statement-timeout" in line


def test_huge_nodes(capsys, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("k\n" + "".join(f"{i}\n" for i in range(5000)))
    out = _json(capsys, "skew", "--file", str(f), "--nodes", "4096")
    assert out["nodes"] == 4096 and sum(out["keys"][0]["rows_per_dn"]) == 5000
    line = one_line_error(*run(capsys, "skew", "--file", str(f), "--nodes", "10**9")[::2])
    assert "--nodes" in line


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"SELECT 1;\x00\x00\x01", "NUL bytes"),
        (b"SELECT '\xff\xfe' FROM t", "not UTF-8 text (byte 0xff at offset 8)"),
        (bytes(range(256)), "NUL bytes"),
    ],
)
def test_binary_workload(capsys, tmp_path, content, expect):
    f = tmp_path / "t.csv"
    f.write_text("k\n1\n2\n")
    wl = tmp_path / "q.sql"
    wl.write_bytes(content)
    line = one_line_error(*run(capsys, "skew", "--file", str(f), "--workload", str(wl))[::2])
    assert str(wl) in line and expect in line
    line = one_line_error(*run(capsys, "skew", "--file", str(f), "--workload", str(tmp_path))[::2])
    assert "cannot read" in line


@pytest.mark.parametrize(
    ("rows", "typ", "expect"),
    [
        ("1\n2\nx1\n", "int4", "line 4, column a: 'x1' is not a valid int4"),
        ("1\n2\n3000000000\n", "int4", "line 4, column a: 3000000000 is not a valid int4"),
        ("1\n70000\n", "int2", "line 3, column a: 70000 is not a valid int2"),
        ("1\n99999999999999999999\n", "int8", "line 3, column a: '99999999999999999999'"),
        ("1.5\nabc\n", "numeric", "line 3, column a: 'abc' is not a valid numeric"),
        ("2024-01-01\n2024-13-45\n", "date", "line 3, column a: '2024-13-45'"),
        ("2024-01-01 00:00:00\nsoon\n", "timestamp", "line 3, column a: 'soon'"),
        ("12:00:00\n25:99\n", "time", "line 3, column a: '25:99'"),
    ],
)
def test_offline_bad_values_named_by_line(capsys, tmp_path, rows, typ, expect):
    f = tmp_path / "bad.csv"
    f.write_text("a,b\n" + "".join(f"{v},z\n" for v in rows.splitlines()))
    line = one_line_error(*run(capsys, "skew", "--file", str(f), "--type", f"a={typ}")[::2])
    assert expect in line and str(f) in line


def test_offline_bad_value_line_counts_multiline_fields(capsys, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text('a,b\n1,"two\nlines"\n\n2,z\nx,z\n')  # a quoted newline, an empty line
    line = one_line_error(*run(capsys, "skew", "--file", str(f), "--type", "a=int4")[::2])
    assert "line 6, column a: 'x'" in line
    pq = tmp_path / "bad.parquet"
    import pyarrow as pa
    import pyarrow.parquet as papq

    papq.write_table(pa.table({"a": ["1", "2", "x"]}), pq)
    line = one_line_error(*run(capsys, "skew", "--file", str(pq), "--type", "a=int8")[::2])
    assert "row 3, column a: 'x'" in line


def test_offline_text_type_keeps_exact_text(capsys, tmp_path):
    """--type a=text on digits: '007' and '7' are different values, as in the database."""
    f = tmp_path / "codes.csv"
    f.write_text("a\n007\n7\n07\n")
    out = _json(capsys, "skew", "--file", str(f), "--type", "a=text", "--exact-distinct")
    assert out["keys"][0]["distinct"] == 3


def test_help_shows_no_doubled_percent(capsys):
    for verb in ("skew", "scan"):
        code, out, _ = run(capsys, verb, "--help")
        assert code == 0 and "%%" not in out
    code, out, _ = run(capsys, "skew", "--help")
    assert "bucket % N" in " ".join(out.split())


def test_markup_in_names_is_printed_verbatim(capsys, tmp_path):
    f = tmp_path / "[bold]x[red].csv"
    f.write_text("[red]k\n" + "".join(f"{i}\n" for i in range(100)))
    code, out, err = run(capsys, "skew", "--file", str(f))
    assert code == 0, err
    assert "[red]k" in out and "[bold]x[red]" in out


def test_library_refuses_unparsable_table():
    from atelier.dws.analyze import SkewConfig, skew

    with pytest.raises(AtelierError, match="unterminated quote"):
        skew(SkewConfig(dsn="postgresql://127.0.0.1:1/x", table='"abc'))


def test_column_privileges_leave_unreadable_columns_out(capsys, pg_dsn, pg_conn, pg_schema):
    t = sql.Identifier(pg_schema, "colpriv")
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(sql.SQL("CREATE TABLE {} (secret_code text, id int4)").format(t))
    pg_conn.execute(
        sql.SQL("INSERT INTO {} SELECT md5(g::text), g FROM generate_series(1, 3000) g").format(t)
    )
    pg_conn.execute(sql.SQL("REVOKE ALL ON {} FROM CURRENT_USER").format(t))
    pg_conn.execute(sql.SQL("GRANT SELECT (id) ON {} TO CURRENT_USER").format(t))
    out = _json(capsys, "skew", "--dsn", pg_dsn, "--table", f"{pg_schema}.colpriv")
    assert [k["key"] for k in out["keys"]] == [["id"]]
    args = ["skew", "--dsn", pg_dsn, "--table", f"{pg_schema}.colpriv", "--columns", "secret_code"]
    line = one_line_error(*run(capsys, *args)[::2])
    assert "permission denied" in line and "GRANT SELECT" in line


def test_offline_file_oddities(capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as papq

    dup = tmp_path / "dup.csv"
    dup.write_text("a,a\n1,2\n")
    assert "appears 2 times" in one_line_error(*run(capsys, "skew", "--file", str(dup))[::2])
    cat = tmp_path / "cat.parquet"  # pandas categoricals are dictionary-encoded
    papq.write_table(
        pa.table({"c": pa.array([f"v{i}" for i in range(500)]).dictionary_encode()}), cat
    )
    out = _json(capsys, "skew", "--file", str(cat))
    assert out["keys"][0]["key"] == ["c"] and sum(out["keys"][0]["rows_per_dn"]) == 500
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"a\n\xff\xfe\n")
    line = one_line_error(*run(capsys, "skew", "--file", str(binary))[::2])
    assert "a (bytea)" in line
    aliased = tmp_path / "t.csv"
    aliased.write_text("a\n1\n2\n")
    out = _json(capsys, "skew", "--file", str(aliased), "--type", "a=integer")
    assert out["keys"][0]["key"] == ["a"]


def test_table_dropped_during_scan_is_skipped(pg_dsn, pg_conn, pg_schema, monkeypatch):
    from atelier.dws import analyze, catalog

    schema = f"{pg_schema}_drop"
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    t = sql.Identifier(schema, "vanishing")
    pg_conn.execute(sql.SQL("CREATE TABLE {} (k int4)").format(t))
    listed = catalog.list_tables

    def list_then_drop(conn, schema):
        rows = listed(conn, schema)
        pg_conn.execute(sql.SQL("DROP TABLE {}").format(t))  # another session drops it
        return rows

    monkeypatch.setattr(catalog, "list_tables", list_then_drop)
    try:
        report = analyze.scan(pg_dsn, schema=schema)
        assert [why for _, why in report.skipped] == [
            next(why for _, why in report.skipped if "no longer exists" in why)
        ]
    finally:
        pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_wide_table_counted_in_batches(capsys, pg_dsn, pg_conn, pg_schema, monkeypatch):
    """Past the 1664-entry target-list limit: keys go in several statements, same counts."""
    from atelier.dws import catalog
    from atelier.dws import sql as dsql

    t = sql.Identifier(pg_schema, "wide")
    cols = sql.SQL(", ").join(
        sql.SQL("{} int4").format(sql.Identifier(f"c{i}")) for i in range(900)
    )
    vals = sql.SQL(", ").join(sql.SQL("g + {}").format(sql.Literal(i)) for i in range(900))
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(sql.SQL("CREATE TABLE {} ({})").format(t, cols))
    pg_conn.execute(
        sql.SQL("INSERT INTO {} SELECT {} FROM generate_series(1, 50) g").format(t, vals)
    )
    keys = [("c0",), ("c1",), ("c2", "c3"), ("c4",), ("c3", "c5")]
    with catalog.connect(pg_dsn) as conn:
        info = catalog.describe(conn, f"{pg_schema}.wide")
        one = dsql.count_keys(conn, info, keys)
        monkeypatch.setattr(dsql, "MAX_COLUMNS_PER_SCAN", 2)
        assert len(dsql._batches(keys)) == 4
        split = dsql.count_keys(conn, info, keys)
        monkeypatch.undo()
    assert one.rows == split.rows == 50
    for a, b in zip(one.keys, split.keys, strict=True):
        assert (a.buckets == b.buckets).all() and (a.registers == b.registers).all()
    out = _json(
        capsys, "skew", "--dsn", pg_dsn, "--table", f"{pg_schema}.wide", "--columns",
        ",".join(f"c{i}" for i in range(0, 900, 9)),
    )  # fmt: skip
    assert len(out["keys"]) == 100 and {sum(k["rows_per_dn"]) for k in out["keys"]} == {50}


def test_tiny_statement_timeout_is_not_no_timeout(pg_dsn):
    from atelier.dws.catalog import connect

    with connect(pg_dsn, statement_timeout=0.0001) as conn:  # 0 ms would disable it
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1ms"


@pytest.mark.parametrize("flag", [["--sample", "10"], ["--jobs", "2"], ["--table", "t"]])
def test_database_flags_refused_with_file(capsys, tmp_path, flag):
    f = tmp_path / "t.csv"
    f.write_text("k\n1\n")
    line = one_line_error(*run(capsys, "skew", "--file", str(f), *flag)[::2])
    assert f"{flag[0]} is for --dsn" in line
