#!/usr/bin/env bash
# A throwaway S3-compatible object store for tests and demos: moto in server mode (PyPI
# `moto[server]`, pure Python), which honours S3's conditional writes (If-None-Match: *,
# If-Match), installed on first use into $LOCKGATE_TOOLS (default ~/.cache/lockgate/tools).
#
#   scripts/s3.sh start    # prints the endpoint http://127.0.0.1:PORT on its last line
#   scripts/s3.sh stop     # kills it (memory storage: its buckets are gone)
#   scripts/s3.sh pause    # freezes it (SIGSTOP): requests hang, as in an outage
#   scripts/s3.sh resume   # lets it go on (SIGCONT)
#
# LOCKGATE_S3_DIR chooses where the server's pid, port and log live (default:
# $TMPDIR/lockgate-s3), so several can run side by side. It listens on 127.0.0.1 only,
# on a free port. Any access key works; the bucket `lockgate` is created at start
# (LOCKGATE_S3_BUCKET names another).
set -euo pipefail

DIR=${LOCKGATE_S3_DIR:-${TMPDIR:-/tmp}/lockgate-s3}
TOOLS=${LOCKGATE_TOOLS:-$HOME/.cache/lockgate/tools}
BUCKET=${LOCKGATE_S3_BUCKET:-lockgate}
VENV=$TOOLS/moto
PACKAGE='moto[server]==5.2.6'

ensure_installed() {
    if [ -f "$VENV/.installed" ]; then return; fi
    mkdir -p "$TOOLS"
    # Tests start servers in parallel: one installs, the others wait for it.
    exec 9>"$TOOLS/.moto.lock"
    flock 9
    if [ ! -f "$VENV/.installed" ]; then
        echo "installing the moto S3 server ($PACKAGE from PyPI) into $VENV..." >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PACKAGE" >&2
        touch "$VENV/.installed"
    fi
    flock -u 9
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() {
    [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null
}

# Creates the bucket (a PUT on it); succeeds once the server answers.
make_bucket() {
    python3 - "$1" "$BUCKET" <<'PY'
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/{sys.argv[2]}", method="PUT")
try:
    urllib.request.urlopen(req, timeout=1).read()
except Exception as e:
    if "BucketAlreadyOwnedByYou" not in str(getattr(e, "read", lambda: b"")()):
        sys.exit(1)
PY
}

start() {
    ensure_installed
    if running && [ -f "$DIR/port" ]; then
        echo "http://127.0.0.1:$(cat "$DIR/port")"
        return
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    local port
    port=$(free_port)
    echo "$port" >"$DIR/port"
    nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$DIR/server.log" 2>&1 &
    echo $! >"$DIR/pid"
    for _ in $(seq 1 200); do
        if make_bucket "$port" 2>/dev/null; then
            echo "http://127.0.0.1:$port"
            return
        fi
        if ! running; then break; fi
        sleep 0.1
    done
    echo "the moto S3 server did not start on 127.0.0.1:$port; its log:" >&2
    cat "$DIR/server.log" >&2
    exit 1
}

stop() {
    if running; then
        local pid
        pid=$(cat "$DIR/pid")
        kill -CONT "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -rf "$DIR"
}

signal() {
    running || { echo "no S3 server running (in $DIR)" >&2; exit 1; }
    kill "$1" "$(cat "$DIR/pid")"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    pause) signal -STOP ;;
    resume) signal -CONT ;;
    *) echo "usage: $0 start|stop|pause|resume" >&2; exit 2 ;;
esac
