"""A repeatable hostile-input sweep of `atelier dws` (docs/reliability.md, section dws).

Each case runs `python -m atelier dws ...` in a subprocess against the test server and is
*clean* when it does what it should: exit 0 with the expected text, or exit 2 with one
`atelier: error:` line containing the expected text; anything else (a traceback, another
exit code, several lines, a hang past 60 s, wrong output) is a *failure*.

    PYTHONPATH=src scripts/test.sh .venv/bin/python -m tests.dws.sweep
    PYTHONPATH=/other/checkout/src ... -m tests.dws.sweep     # the same sweep on other code

Not a pytest module (no test_ prefix): the same cases, and more, are tests in
test_hostile.py, test_constraints.py and test_identifiers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

S = "sweep_dws"
SETUP = [
    "DROP SCHEMA IF EXISTS {s} CASCADE",
    'DROP SCHEMA IF EXISTS "Sch ema" CASCADE',
    "CREATE SCHEMA {s}",
    'CREATE SCHEMA "Sch ema"',
    'CREATE TABLE "Sch ema"."We""ird; Tab" (st int4, id int4 PRIMARY KEY)',
    'INSERT INTO "Sch ema"."We""ird; Tab" SELECT g % 3, g FROM generate_series(1, 3000) g',
    'CREATE TABLE {s}."dotted.name" (st int4, id int8)',
    'INSERT INTO {s}."dotted.name" SELECT g % 3, g FROM generate_series(1, 20000) g',
    'CREATE TABLE {s}."a b;c" (st int4)',
    'INSERT INTO {s}."a b;c" SELECT g % 2 FROM generate_series(1, 2000) g',
    "CREATE TABLE {s}.secret (st int4)",
    "INSERT INTO {s}.secret SELECT g % 3 FROM generate_series(1, 2000) g",
    "REVOKE ALL ON {s}.secret FROM CURRENT_USER",
    "CREATE TABLE {s}.pk (id int8 PRIMARY KEY, payload text)",
    "INSERT INTO {s}.pk SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    "CREATE VIEW {s}.v AS SELECT 1 AS x",
    "CREATE TABLE {s}.parted (st int4, d date) PARTITION BY RANGE (d)",
    "CREATE TABLE {s}.parted_a PARTITION OF {s}.parted FOR VALUES FROM ('2000-01-01') "
    "TO ('2100-01-01')",
    "INSERT INTO {s}.parted SELECT g % 2, DATE '2020-01-01' FROM generate_series(1, 500) g",
    "CREATE DOMAIN {s}.posint AS int4 CHECK (VALUE > 0)",
    "CREATE TABLE {s}.dom (k {s}.posint)",
    "INSERT INTO {s}.dom SELECT 1 + g % 2 FROM generate_series(1, 500) g",
    "CREATE TABLE {s}.odd_types (f float8, j jsonb, a int4[], u uuid)",
    "INSERT INTO {s}.odd_types VALUES (1.5, '{{}}', '{{1}}', gen_random_uuid())",
    "CREATE TABLE {s}.big AS SELECT g % 5 AS k, md5(g::text) AS t "
    "FROM generate_series(1, 300000) g",
]


def cases(dsn: str, tmp: Path) -> list[tuple[str, list[str], str, str]]:
    """(name, argv after `dws`, "ok"|"err", text expected in stdout / the error line)."""
    (tmp / "bin.sql").write_bytes(b"SELECT 1;\x00\xff")
    (tmp / "latin1.sql").write_bytes(b"SELECT * FROM t WHERE c = '\xe9'")
    (tmp / "long.sql").write_text("a" * 30000 + ' "' + "b" * 30000)
    (tmp / "evil.sql").write_text(f"DROP TABLE {S}.pk; SELECT * FROM t WHERE id = 1;")
    (tmp / "bad.csv").write_text("a,b\n1,x\n2,y\nx1,z\n")
    (tmp / "big.csv").write_text("a,b\n1,x\n3000000000,y\n")
    (tmp / "num.csv").write_text("a\n1.5\nabc\n")
    (tmp / "dup.csv").write_text("a,a\n1,2\n")
    (tmp / "ok.csv").write_text("id,payload\n" + "".join(f"{i},p{i % 997}\n" for i in range(3000)))
    (tmp / "bin.csv").write_bytes(b"a\n\xff\xfe\n")
    (tmp / "empty.csv").write_bytes(b"")
    t = ["--replicate-below", "0"]
    return [
        ("odd quoted name", ["skew", "--dsn", dsn, "--table", '"Sch ema"."We""ird; Tab"'],
         "ok", 'Sch ema"."We""ird; Tab'),
        ("dotted name DDL", ["skew", "--dsn", dsn, "--table", f'{S}."dotted.name"', *t],
         "ok", f'ALTER TABLE {S}."dotted.name" DISTRIBUTE BY HASH(id)'),
        ("semicolon/space name", ["skew", "--dsn", dsn, "--table", f'{S}."a b;c"'], "ok",
         '"a b;c"'),
        ("unquoted odd name", ["skew", "--dsn", dsn, "--table", f"{S}.a b;c"], "err", ""),
        ("unterminated quote", ["skew", "--dsn", dsn, "--table", '"abc'], "err", "quote"),
        ("three parts", ["skew", "--dsn", dsn, "--table", "a.b.c"], "err", "3 parts"),
        ("undecodable --table", ["skew", "--dsn", dsn, "--table", "x.\udcff"], "err", "UTF-8"),
        ("undecodable --schema", ["scan", "--dsn", dsn, "--schema", "\udcff"], "err", "UTF-8"),
        ("scan permission denied", ["scan", "--dsn", dsn, "--schema", S], "ok",
         "skipped sweep_dws.secret: permission denied"),
        ("skew permission denied", ["skew", "--dsn", dsn, "--table", f"{S}.secret"], "err",
         "GRANT SELECT"),
        ("scan odd schema", ["scan", "--dsn", dsn, "--schema", '"Sch ema"', "--threshold", "0"],
         "ok", "We"),
        ("pk forbids payload", ["skew", "--dsn", dsn, "--table", f"{S}.pk", *t, "--columns",
                                "payload"], "ok", "not allowed"),
        ("view as table", ["skew", "--dsn", dsn, "--table", f"{S}.v"], "err", "is a view"),
        ("partitioned table", ["skew", "--dsn", dsn, "--table", f"{S}.parted"], "ok", "500"),
        ("domain column", ["skew", "--dsn", dsn, "--table", f"{S}.dom"], "ok", "k *"),
        ("no distributable type", ["skew", "--dsn", dsn, "--table", f"{S}.odd_types"], "err",
         "no column that can be a distribution key"),
        ("array column asked", ["skew", "--dsn", dsn, "--table", f"{S}.odd_types",
                                "--columns", "a"], "err", "cannot be a distribution key"),
        ("inject --table", ["skew", "--dsn", dsn, "--table", f"x'; DROP TABLE {S}.pk; --"],
         "err", ""),
        ("inject quoted --table", ["skew", "--dsn", dsn, "--table",
                                   f'"{S}"."pk""; DROP TABLE {S}.pk; --"'], "err", "no table"),
        ("inject --columns", ["skew", "--dsn", dsn, "--table", f"{S}.pk", "--columns",
                              f'"id); DROP TABLE {S}.pk; --"'], "err", "no column"),
        ("inject --schema", ["scan", "--dsn", dsn, "--schema", '"x\' OR \'1\'=\'1"'], "err",
         "no such schema"),
        ("inject workload", ["skew", "--dsn", dsn, "--table", f"{S}.pk", "--workload",
                             str(tmp / "evil.sql")], "ok", "filtered to constants"),
        ("missing schema", ["scan", "--dsn", dsn, "--schema", "nope"], "err", "no such schema"),
        ("timeout mid-scan --jobs", ["scan", "--dsn", dsn, "--schema", S, "--jobs", "2",
                                     "--statement-timeout", "0.05"], "ok",
         "skipped sweep_dws.big: a statement ran past --statement-timeout"),
        ("timeout skew --jobs", ["skew", "--dsn", dsn, "--table", f"{S}.big", "--jobs", "2",
                                 "--statement-timeout", "0.05"], "err", "--statement-timeout"),
        ("timeout nan", ["skew", "--file", "x.csv", "--statement-timeout", "nan"], "err",
         "--statement-timeout"),
        ("timeout inf", ["skew", "--file", "x.csv", "--statement-timeout", "inf"], "err",
         "--statement-timeout"),
        ("nodes huge", ["skew", "--file", str(tmp / "ok.csv"), "--nodes", "99999999"], "err",
         "--nodes"),
        ("nodes 4096", ["skew", "--file", str(tmp / "ok.csv"), "--nodes", "4096"], "ok", "4096"),
        ("binary workload", ["skew", "--file", str(tmp / "ok.csv"), "--workload",
                             str(tmp / "bin.sql")], "err", "NUL"),
        ("latin-1 workload", ["skew", "--file", str(tmp / "ok.csv"), "--workload",
                              str(tmp / "latin1.sql")], "err", "not UTF-8"),
        ("60k-char workload token", ["skew", "--file", str(tmp / "ok.csv"), "--workload",
                                     str(tmp / "long.sql")], "ok", "recommendation"),
        ("workload is a folder", ["skew", "--file", str(tmp / "ok.csv"), "--workload",
                                  str(tmp)], "err", "cannot read"),
        ("csv non-integer int4", ["skew", "--file", str(tmp / "bad.csv"), "--type", "a=int4"],
         "err", "line 4, column a: 'x1'"),
        ("csv int4 overflow", ["skew", "--file", str(tmp / "big.csv"), "--type", "a=int4"],
         "err", "line 3, column a"),
        ("csv bad numeric", ["skew", "--file", str(tmp / "num.csv"), "--type", "a=numeric"],
         "err", "line 3, column a: 'abc'"),
        ("csv duplicate header", ["skew", "--file", str(tmp / "dup.csv")], "err", "2 times"),
        ("csv not UTF-8", ["skew", "--file", str(tmp / "bin.csv")], "err", "bytea"),
        ("csv empty", ["skew", "--file", str(tmp / "empty.csv")], "err", "Empty CSV"),
        ("offline --primary-key", ["skew", "--file", str(tmp / "ok.csv"), *t, "--primary-key",
                                   "id", "--columns", "payload"], "ok", "not allowed"),
        ("type alias integer", ["skew", "--file", str(tmp / "ok.csv"), "--type", "id=integer"],
         "ok", "recommendation"),
        ("dsn unreachable", ["skew", "--dsn", "postgresql://u:s3cret@127.0.0.1:1/d",
                             "--table", "t"], "err", "cannot connect"),
        ("dsn unparsable with secret", ["skew", "--dsn", "postgresql://u:s3cret@[::1",
                                        "--table", "t"], "err", "--dsn"),
        ("dsn quoted password", ["skew", "--dsn", "host=127.0.0.1 port=1 password='s3 cret'",
                                 "--table", "t"], "err", "cannot connect"),
        ("dsn bad port", ["skew", "--dsn", "host=127.0.0.1 port=99999", "--table", "t"], "err",
         "port"),
        ("help percent", ["skew", "--help"], "ok", "bucket % N"),
    ]  # fmt: skip


def classify(rc: int, out: str, err: str, want: str, text: str) -> str:
    if "Traceback" in err:
        return "traceback"
    if "s3c" in err or "s3 c" in err:
        return "secret shown"
    if want == "ok":
        if rc != 0:
            return f"exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
        flat = " ".join(out.split())
        return "clean" if " ".join(text.split()) in flat else f"output lacks {text!r}"
    lines = err.strip().splitlines()
    if rc != 2 or len(lines) != 1 or not lines[0].startswith("atelier: error: "):
        return f"exit {rc}, {len(lines)} stderr lines"
    return "clean" if text in lines[0] else f"error lacks {text!r}: {lines[0]}"


def main() -> int:
    dsn = os.environ.get("ATELIER_TEST_PG_DSN") or Path(".pg/dsn").read_text().strip()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in SETUP:
            conn.execute(sql.SQL(stmt).format(s=sql.Identifier(S)))
    env = {**os.environ, "COLUMNS": "200"}
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name, argv, want, text in cases(dsn, Path(d)):
            try:
                p = subprocess.run(
                    [sys.executable, "-m", "atelier", "dws", *argv],
                    capture_output=True, text=True, timeout=60, env=env,
                )  # fmt: skip
                verdict = classify(p.returncode, p.stdout, p.stderr, want, text)
            except subprocess.TimeoutExpired:
                verdict = "hang (> 60 s)"
            results.append((name, verdict))
            print(f"{'ok  ' if verdict == 'clean' else 'FAIL'} {name}: {verdict}", flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{S}.pk"]).fetchone()[0]
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(S)))
        conn.execute('DROP SCHEMA IF EXISTS "Sch ema" CASCADE')
    clean = sum(v == "clean" for _, v in results)
    print(f"tried {len(results)}, clean {clean}, failures {len(results) - clean}; "
          f"injection target table still there: {exists}")  # fmt: skip
    return 0 if clean == len(results) and exists else 1


if __name__ == "__main__":
    raise SystemExit(main())
