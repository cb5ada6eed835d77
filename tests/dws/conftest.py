"""The live PostgreSQL server that scripts/test.sh starts (`make test`).

The DSN comes from ATELIER_TEST_PG_DSN or .pg/dsn (written by scripts/postgres.sh).
Database tests skip only when no server could be started, and say why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dsn() -> str | None:
    if os.environ.get("ATELIER_TEST_PG_DSN"):
        return os.environ["ATELIER_TEST_PG_DSN"]
    f = ROOT / ".pg" / "dsn"
    return f.read_text().strip() if f.exists() else None


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = _dsn()
    if not dsn:
        why = os.environ.get(
            "ATELIER_TEST_PG_SKIP",
            "no server: run `make test` or `scripts/postgres.sh start` first",
        )
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=5):
            pass
    except Exception as e:  # the server is gone: skip, saying why
        pytest.skip(f"PostgreSQL tests skipped: cannot connect: {e}")
    return dsn


@pytest.fixture(scope="session")
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema of our own per xdist worker, so parallel workers never collide.

    The worker name comes from the environment xdist sets (PYTEST_XDIST_WORKER), not from
    its `worker_id` fixture, so the suite also runs with `-p no:xdist`.
    """
    import psycopg
    from psycopg import sql

    name = f"t_{os.environ.get('PYTEST_XDIST_WORKER', 'master')}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_conn(pg_dsn: str):
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn
