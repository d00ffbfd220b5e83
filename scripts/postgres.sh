#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and examples (Debian's PostgreSQL packages,
# installed on first use).
#
#   scripts/postgres.sh start   # prints the connection URL on its last line
#   scripts/postgres.sh stop    # stops it and deletes its data
#   scripts/postgres.sh pause   # stops it, keeping its data and port (fault tests)
#   scripts/postgres.sh resume  # starts a paused server again on the same port
#
# LOCKGATE_PG_DIR chooses where the server lives (default: $TMPDIR/lockgate-postgres), so
# several servers can run side by side. The server listens on 127.0.0.1 only, on a free
# port, with trust authentication for user `postgres`.
set -euo pipefail

DIR=${LOCKGATE_PG_DIR:-${TMPDIR:-/tmp}/lockgate-postgres}
DATA=$DIR/data

bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir)
        if [ -x "$d/initdb" ]; then echo "$d"; return; fi
    fi
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then echo "$d"; return; fi
    done
    return 1
}

ensure_installed() {
    if ! bindir >/dev/null; then
        echo "installing PostgreSQL (Debian packages)..." >&2
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
    fi
}

# Runs a server binary, as user postgres when we are root (pg_ctl refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    ensure_installed
    local bin port
    bin=$(bindir)
    if [ -f "$DIR/port" ] && as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        echo "postgres://postgres@127.0.0.1:$(cat "$DIR/port")/postgres"
        return
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
    as_pg "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    free_port >"$DIR/port"
    run_server
    echo "postgres://postgres@127.0.0.1:$(cat "$DIR/port")/postgres"
}

run_server() {
    local bin port
    bin=$(bindir)
    port=$(cat "$DIR/port")
    as_pg "$bin/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$DIR" start >&2 \
        || { cat "$DIR/server.log" >&2; exit 1; }
}

pause() {
    as_pg "$(bindir)/pg_ctl" -D "$DATA" -m immediate -w stop >&2
}

stop() {
    local bin
    if [ -d "$DATA" ] && bin=$(bindir); then
        as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true
    fi
    rm -rf "$DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    pause) pause ;;
    resume) run_server ;;
    *) echo "usage: $0 start|stop|pause|resume" >&2; exit 2 ;;
esac
