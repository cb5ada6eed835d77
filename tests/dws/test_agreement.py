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


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_database_and_file_agree_exactly(pg_dsn, mixed, fmt):
    table, d = mixed
    from atelier.dws.skew import parse_keys

    keys = parse_keys(KEYS)
    db = skew(SkewConfig(dsn=pg_dsn, table=table, columns=keys, nodes=6))
    types = {"code": "bpchar"}
    if fmt == "csv":
        types["tstz"] = "timestamptz"
    off = skew(SkewConfig(file=str(d / f"mixed.{fmt}"), columns=keys, nodes=6, types=types))
    a, b = _by_key(db), _by_key(off)
    assert set(a) == set(b) and len(a) == len(keys)
    for k in a:
        assert np.array_equal(a[k].buckets, b[k].buckets), k
        assert np.array_equal(a[k].per_node, b[k].per_node), k
        assert (a[k].nulls, a[k].distinct) == (b[k].nulls, b[k].distinct), k
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
