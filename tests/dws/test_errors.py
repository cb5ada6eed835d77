"""Bad input: one line on stderr, exit 2, saying what exists or what to do."""

from __future__ import annotations

import re
import socket

import pytest
from psycopg import sql

from tests.dws.cli import one_line_error as _one_line_error
from tests.dws.cli import run as _run


@pytest.fixture(scope="module")
def tables(pg_conn, pg_schema):
    s = pg_schema
    for stmt in [
        "DROP TABLE IF EXISTS {s}.orders, {s}.empty_t, {s}.floaty",
        "CREATE TABLE {s}.orders (id int4, customer text, price float8, flag bool)",
        "INSERT INTO {s}.orders SELECT g, 'c' || (g % 50), g * 1.5, g % 2 = 0"
        " FROM generate_series(1, 5000) g",
        "CREATE TABLE {s}.empty_t (id int4)",
        "CREATE TABLE {s}.floaty (x float8)",
        "INSERT INTO {s}.floaty VALUES (1.0)",
    ]:
        pg_conn.execute(sql.SQL(stmt).format(s=sql.Identifier(s)))
    return s


def test_unreachable_server(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = _run(
        capsys, "skew", "--dsn", f"postgresql://u:secret@127.0.0.1:{port}/db", "--table", "t"
    )
    line = _one_line_error(code, err)
    assert "cannot connect" in line and "secret" not in line


def test_bad_password(capsys, pg_dsn, tables):
    bad = re.sub(r":([^:@/]+)@", ":wrong@", pg_dsn)
    line = _one_line_error(*_run(capsys, "skew", "--dsn", bad, "--table", "x")[::2])
    assert "password authentication failed" in line and "wrong" not in line


def test_unknown_table_lists_tables(capsys, pg_dsn, tables):
    line = _one_line_error(
        *_run(capsys, "skew", "--dsn", pg_dsn, "--table", f"{tables}.order")[::2]
    )
    assert "did you mean orders" in line and "empty_t" in line


def test_unknown_column_lists_columns(capsys, pg_dsn, tables):
    args = ["skew", "--dsn", pg_dsn, "--table", f"{tables}.orders", "--columns", "id,(nope,id)"]
    line = _one_line_error(*_run(capsys, *args)[::2])
    assert "no column 'nope'" in line and "customer (text)" in line


def test_undistributable_type_names_the_types(capsys, pg_dsn, tables):
    args = ["skew", "--dsn", pg_dsn, "--table", f"{tables}.orders", "--columns", "price"]
    line = _one_line_error(*_run(capsys, *args)[::2])
    assert "float8" in line and "distributable types: smallint" in line
    line = _one_line_error(
        *_run(capsys, "skew", "--dsn", pg_dsn, "--table", f"{tables}.floaty")[::2]
    )
    assert "no column that can be a distribution key" in line


def test_empty_table(capsys, pg_dsn, tables):
    line = _one_line_error(
        *_run(capsys, "skew", "--dsn", pg_dsn, "--table", f"{tables}.empty_t")[::2]
    )
    assert "empty" in line


def test_statement_timeout(capsys, pg_dsn, tables, pg_conn):
    from psycopg import sql as q

    t = q.Identifier(tables, "slow")
    pg_conn.execute(q.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(
        q.SQL(
            "CREATE TABLE {} AS SELECT g AS k, md5(g::text) AS s FROM generate_series(1, 300000) g"
        ).format(t)
    )
    args = ["skew", "--dsn", pg_dsn, "--table", f"{tables}.slow", "--statement-timeout", "0.01"]
    line = _one_line_error(*_run(capsys, *args)[::2])
    assert "--statement-timeout" in line


def test_advisor_is_read_only(pg_dsn, tables):
    import psycopg

    from atelier.dws.catalog import connect

    with connect(pg_dsn) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(tables, "orders")))


def test_bad_flags(capsys, tmp_path):
    line = _one_line_error(*_run(capsys, "skew", "--file", str(tmp_path / "no.parquet"))[::2])
    assert "no such file" in line
    line = _one_line_error(*_run(capsys, "skew", "--columns", "(a,b", "--file", "x.csv")[::2])
    assert "missing ')'" in line
    line = _one_line_error(*_run(capsys, "skew")[::2])
    assert "--dsn" in line
