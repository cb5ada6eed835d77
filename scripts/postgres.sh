#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the test run (the dws suite's tests).
#
#   scripts/postgres.sh start   install the Debian package if needed, initdb into a temp dir,
#                               start on 127.0.0.1:<free port>, create role+database,
#                               write the DSN to .pg/dsn
#   scripts/postgres.sh stop    stop the server and delete its data directory
#   scripts/postgres.sh env     print `export ATELIER_TEST_PG_DSN=...`
#
# The server refuses to run as root, so as root everything runs as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.pg

find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    if [ -f "$STATE/dsn" ]; then stop || true; fi
    local bin
    if ! bin=$(find_bin); then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "postgres.sh: installing the Debian postgresql package" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 \
                || { apt-get update -q >/dev/null 2>&1 && \
                     DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
        fi
        bin=$(find_bin) || { echo "postgres.sh: no PostgreSQL server (initdb) found and it could not be installed" >&2; return 1; }
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home postgres
    fi
    local dir port pw
    dir=$(mktemp -d /tmp/atelier-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    pw=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
    mkdir -p "$STATE"
    echo "$dir" > "$STATE/dir"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50 -c shared_buffers=256MB" \
        start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
    as_pg "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE atelier_test LOGIN PASSWORD '$pw'" \
        -c "CREATE DATABASE atelier_test OWNER atelier_test" >/dev/null
    echo "postgresql://atelier_test:$pw@127.0.0.1:$port/atelier_test" > "$STATE/dsn"
    echo "$bin" > "$STATE/bin"
    echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)" >&2
}

stop() {
    [ -f "$STATE/dir" ] || return 0
    local dir bin
    dir=$(cat "$STATE/dir")
    bin=$(cat "$STATE/bin" 2>/dev/null || find_bin || true)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    case "$dir" in /tmp/atelier-pg.*) rm -rf "$dir" ;; esac
    rm -rf "$STATE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) [ -f "$STATE/dsn" ] && echo "export ATELIER_TEST_PG_DSN=$(cat "$STATE/dsn")" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 64 ;;
esac
