"""The in-database path and the offline path put every row on the same DN."""

from __future__ import annotations

import numpy as np
import pytest

from atelier.dws.analyze import SkewConfig, skew

from .data import load, rows, to_csv, to_parquet

KEYS = "id,big,name,code,amount,day,ts,tstz,region,label,(id,name),(region,day,code),(name,label)"


@pytest.fixture(scope="module")
def mixed(pg_conn, pg_schema, tmp_path_factory):
    data = rows()
    load(pg_conn, pg_schema, "mixed", data)
    d = tmp_path_factory.mktemp("files")
    to_parquet(data, d / "mixed.parquet")
    to_csv(pg_conn, pg_schema, "mixed", d / "mixed.csv")
    return f"{pg_schema}.mixed", d


def _by_key(report):
    return {r.stats.columns: r.stats for r in report.ranked}


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_database_and_file_agree_exactly(pg_dsn, mixed, fmt, exact):
    table, d = mixed
    from atelier.dws.skew import parse_keys

    keys = parse_keys(KEYS)
    db = skew(SkewConfig(dsn=pg_dsn, table=table, columns=keys, nodes=6, exact_distinct=exact))
    types = {"code": "bpchar"}
    if fmt == "csv":
        types["tstz"] = "timestamptz"
    off = skew(
        SkewConfig(
            file=str(d / f"mixed.{fmt}"), columns=keys, nodes=6, types=types, exact_distinct=exact
        )
    )
    a, b = _by_key(db), _by_key(off)
    assert set(a) == set(b) and len(a) == len(keys)
    for k in a:
        assert np.array_equal(a[k].buckets, b[k].buckets), k
        assert np.array_equal(a[k].per_node, b[k].per_node), k
        # identical HyperLogLog registers, hence identical estimates
        assert np.array_equal(a[k].registers, b[k].registers), k
        assert a[k].registers.any(), k
        assert (a[k].nulls, a[k].distinct) == (b[k].nulls, b[k].distinct), k
        assert a[k].distinct_estimate == b[k].distinct_estimate, k
        assert a[k].distinct_exact is b[k].distinct_exact is exact, k
        if exact:  # 3000 rows: linear counting, within 2% of the exact count
            assert abs(a[k].distinct_estimate - a[k].distinct) <= max(1, a[k].distinct // 50), k
    assert (
        db.recommendation == off.recommendation or db.recommendation.key == off.recommendation.key
    )


def test_skewed_and_low_cardinality_flagged(pg_dsn, mixed):
    table, _ = mixed
    rep = skew(SkewConfig(dsn=pg_dsn, table=table, nodes=4, replicate_below=0))
    by = _by_key(rep)
    assert by[("big",)].verdict == "change key"  # 20% of rows share one value
    assert by[("region",)].distinct == 4 and by[("region",)].verdict == "change key"
    assert by[("id",)].verdict == "even" and by[("id",)].current
    assert rep.current_key == ("id",)
    assert rep.recommendation.strategy == "keep"
    assert sum(by[("id",)].per_node) == 3000


def test_sample_reads_part_of_the_table(pg_dsn, pg_conn, pg_schema):
    from psycopg import sql

    t = sql.Identifier(pg_schema, "big")
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(
        sql.SQL("CREATE TABLE {} AS SELECT g AS k FROM generate_series(1, 200000) g").format(t)
    )
    pg_conn.execute(sql.SQL("ANALYZE {}").format(t))
    rep = skew(SkewConfig(dsn=pg_dsn, table=f"{pg_schema}.big", sample=20000, nodes=4))
    assert rep.sample_fraction < 0.2
    assert 5000 < rep.rows < 60000
    assert 100000 < rep.table_rows < 400000


def _split_stats(pg_dsn, table, keys, jobs, sample=None):
    from atelier.dws import catalog
    from atelier.dws.sql import check_keys, count_keys

    with catalog.connect(pg_dsn) as conn:
        info = catalog.describe(conn, table)
        counted = count_keys(
            conn,
            info,
            check_keys(info, keys),
            sample_rows=sample,
            jobs=jobs,
            connect=lambda: catalog.connect(pg_dsn),
            min_pages_per_job=1,
        )
    return counted


def test_page_ranges_give_identical_results(pg_dsn, mixed):
    """K concurrent page ranges sum to the one-statement result, bucket for bucket."""
    from atelier.dws.skew import parse_keys

    table, _ = mixed
    keys = parse_keys(KEYS)
    one = _split_stats(pg_dsn, table, keys, 1)
    three = _split_stats(pg_dsn, table, keys, 3)
    assert (one.jobs, three.jobs) == (1, 3)
    assert one.rows == three.rows == 3000
    for a, b in zip(one.keys, three.keys, strict=True):
        assert a.columns == b.columns
        assert np.array_equal(a.buckets, b.buckets), a.columns
        assert np.array_equal(a.registers, b.registers), a.columns
        assert (a.nulls, a.distinct) == (b.nulls, b.distinct), a.columns
    assert any(s.nulls for s in one.keys)


def test_no_spare_connection_falls_back_to_one_statement(pg_dsn, mixed):
    from atelier.core.errors import AtelierError
    from atelier.dws import catalog
    from atelier.dws.sql import count_keys

    def refuse():
        raise AtelierError("cannot connect: too many clients already")

    table, _ = mixed
    with catalog.connect(pg_dsn) as conn:
        info = catalog.describe(conn, table)
        got = count_keys(conn, info, [("id",)], jobs=3, connect=refuse, min_pages_per_job=1)
    assert got.jobs == 1 and got.rows == 3000


@pytest.fixture(scope="module")
def wide(pg_conn, pg_schema):
    from psycopg import sql

    t = sql.Identifier(pg_schema, "wide")
    pg_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
    pg_conn.execute(
        sql.SQL(
            "CREATE TABLE {} AS SELECT g::int8 AS id, (g % 150000)::int4 AS k,"
            " 'v' || (g % 20011)::text AS s, (g % 5)::int2 AS few,"
            " CASE WHEN g % 10 = 0 THEN NULL ELSE g % 1000 END AS n"
            " FROM generate_series(1, 200000) g"
        ).format(t)
    )
    pg_conn.execute(sql.SQL("ANALYZE {}").format(t))
    return f"{pg_schema}.wide"


def test_database_estimates_within_3_percent(pg_dsn, wide):
    keys = [("id",), ("k",), ("s",), ("few",), ("n",), ("k", "s")]
    exact = {("id",): 200000, ("k",): 150000, ("s",): 20011, ("few",): 5, ("n",): 900}
    exact[("k", "s")] = 200000  # gcd(150000, 20011) = 1: every pair distinct
    est = _split_stats(pg_dsn, wide, keys, 2)
    assert est.jobs == 2
    got = skew(SkewConfig(dsn=pg_dsn, table=wide, columns=keys, exact_distinct=True, jobs=1))
    by = {r.stats.columns: r.stats for r in got.ranked}
    for s in est.keys:
        n = exact[s.columns]
        assert not s.distinct_exact and by[s.columns].distinct_exact
        assert by[s.columns].distinct == n, s.columns
        assert abs(s.distinct - n) <= 0.03 * n, (s.columns, s.distinct, n)
        assert np.array_equal(s.registers, by[s.columns].registers), s.columns
    small = {s.columns: s.distinct for s in est.keys}
    # linear counting: exact for a handful, within 1% for hundreds
    assert small[("few",)] == 5 and abs(small[("n",)] - 900) <= 9
    assert {s.columns: s.nulls for s in est.keys}[("n",)] == 20000


def test_sampled_results_are_repeatable(pg_dsn, wide):
    a = _split_stats(pg_dsn, wide, [("id",), ("k",)], 3, sample=40000)
    b = _split_stats(pg_dsn, wide, [("id",), ("k",)], 3, sample=40000)
    assert a.jobs == 1 and a.sample_fraction < 0.5  # a sample is one statement
    for x, y in zip(a.keys, b.keys, strict=True):
        assert np.array_equal(x.buckets, y.buckets) and np.array_equal(x.registers, y.registers)
