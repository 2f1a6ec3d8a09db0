# PostgreSQL for scripts/servers: a cluster of its own in $SERVERS_DIR/postgres, listening on
# 127.0.0.1:${ODOMETER_TEST_PG_PORT:-55432} only, superuser `odometer` (password `odometer`: a
# throwaway test cluster), fsync off (its data is disposable). Exports
# ODOMETER_TEST_POSTGRES_URL, the URL of its `postgres` database: tests create and drop their
# own databases through it.
# shellcheck shell=bash

register_server postgres

PG_PORT="${ODOMETER_TEST_PG_PORT:-55432}"
PG_DIR="$SERVERS_DIR/postgres"
PG_DATA="$PG_DIR/data"

postgres_bindir() {
    local initdb
    initdb="$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$initdb" ] && dirname "$initdb"
}

# PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user the
# Debian package creates.
postgres_as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_install() {
    postgres_bindir >/dev/null || apt_install postgresql
    postgres_bindir >/dev/null || die "postgres: no /usr/lib/postgresql/*/bin/initdb after installing"
}

postgres_running() {
    local bin
    bin="$(postgres_bindir)" || return 1
    [ -f "$PG_DATA/postmaster.pid" ] || return 1
    postgres_as_owner "$bin/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1 &&
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
}

postgres_start() {
    local bin
    bin="$(postgres_bindir)"
    mkdir -p "$PG_DIR"
    [ "$(id -u)" != 0 ] || chown postgres: "$PG_DIR"
    chmod 700 "$PG_DIR"
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -w "$PG_DIR"; then
        die "postgres: the postgres user cannot write $PG_DIR (a parent directory is closed to it): set ODOMETER_TEST_SERVERS_DIR to a directory under /tmp"
    fi
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        rm -rf "$PG_DATA"
        echo odometer >"$PG_DIR/password"
        [ "$(id -u)" != 0 ] || chown postgres: "$PG_DIR/password"
        postgres_as_owner "$bin/initdb" -D "$PG_DATA" -U odometer --pwfile="$PG_DIR/password" \
            --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 \
            >"$PG_DIR/initdb.log" 2>&1 || {
            cat "$PG_DIR/initdb.log" >&2
            die "postgres: initdb failed"
        }
        rm -f "$PG_DIR/password"
        # Tests run in parallel, each with its own database and a small pool.
        cat >>"$PG_DATA/postgresql.conf" <<CONF
# scripts/servers: a disposable test cluster
max_connections = 400
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    fi
    postgres_as_owner "$bin/pg_ctl" start -w -t 60 -D "$PG_DATA" -l "$PG_DIR/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_DIR" \
        >/dev/null || {
        tail -n 20 "$PG_DIR/server.log" >&2
        die "postgres: did not start (is port $PG_PORT taken?)"
    }
    wait_until 30 postgres "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ||
        die "postgres: not answering on 127.0.0.1:$PG_PORT (see $PG_DIR/server.log)"
}

postgres_stop() {
    postgres_as_owner "$(postgres_bindir)/pg_ctl" stop -w -m fast -D "$PG_DATA" >/dev/null
}

postgres_env() {
    echo "export ODOMETER_TEST_POSTGRES_URL=postgres://odometer:odometer@127.0.0.1:$PG_PORT/postgres"
}
