#!/usr/bin/env bash
# Run a command (pytest) with a throwaway PostgreSQL server up, and stop the server after,
# whatever the command's outcome. If the server cannot start, the command still runs and
# the database tests skip, saying why.
set -uo pipefail
cd "$(dirname "$0")/.."
if scripts/postgres.sh start; then
    trap 'scripts/postgres.sh stop' EXIT INT TERM
    ATELIER_TEST_PG_DSN=$(cat .pg/dsn)
    export ATELIER_TEST_PG_DSN
else
    echo "test.sh: PostgreSQL could not be started; database tests will be skipped" >&2
    export ATELIER_TEST_PG_SKIP="PostgreSQL could not be started by scripts/postgres.sh (see above)"
fi
"$@"
