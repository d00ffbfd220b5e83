#!/usr/bin/env bash
# The crash suite (tests/crash.rs: lockgate-dev's SIGKILL torture of every pipeline, run
# on this build's lockgate, plus the receiver WAL's crash and graceful-stop regression
# tests) run N times in a row with a CPU hog
# beside it, the way a busy CI machine runs it. Stops at the first failure and prints the seed
# to reproduce it. Not part of CI (it takes a while); run it before calling an
# exactly-once change done.
#
#   scripts/stress.sh [RUNS] [HOGS]     # defaults: 50 runs, 1 busy loop (of 2 cores)
#
# Each run uses fresh checkpoint directories and seeds; the summary gives the runs that
# passed, the time each took and the total.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-50}
HOGS=${2:-1}
export CARGO_TERM_COLOR=never

echo "== building the crash suite (debug, as CI runs it)"
cargo test --locked --test crash --no-run
cargo test --locked -p lockgate-core --test receiver_wal --no-run

hogs=()
cleanup() {
    for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
for _ in $(seq "$HOGS"); do
    (while :; do :; done) &
    hogs+=($!)
done
echo "== $RUNS runs with $HOGS CPU hogs beside them"

log=$(mktemp -t lockgate-stress.XXXXXX)
start=$(date +%s)
passed=0
for i in $(seq "$RUNS"); do
    t0=$(date +%s)
    if ! cargo test --locked --test crash -- --test-threads 1 >"$log" 2>&1 \
        || ! cargo test --locked -p lockgate-core --test receiver_wal >>"$log" 2>&1; then
        echo "run $i FAILED after $passed passing runs; its output:"
        grep -E "reproduce:|panicked|FAILED|error" "$log" | head -40 || true
        echo "(full output: $log)"
        exit 1
    fi
    passed=$((passed + 1))
    echo "run $i passed in $(( $(date +%s) - t0 )) s"
done
rm -f "$log"
echo "stress: $passed of $RUNS runs passed with $HOGS CPU hogs in $(( $(date +%s) - start )) s"
