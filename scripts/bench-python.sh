#!/usr/bin/env bash
# The Python benchmark of docs/benchmarks.md: PySpark's DStream word count on PySpark
# (from PyPI, local[2]) and the same code on Lockgate (the `lockgate` package, release
# build), over the same generated files, and the Rust built-in job (`lockgate run
# word-count`, release) as the ceiling. Prints one line per engine and the ratios.
#
#   scripts/bench-python.sh [FILES] [LINES_PER_FILE]     (default 8 files of 100,000 lines)
#
# Needs Java 17 for PySpark (apt-get install openjdk-17-jre-headless) and a virtualenv
# under target/bench-venv (made here: pyspark and the lockgate package).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-8}
LINES=${2:-100000}
PYSPARK=${PYSPARK_VERSION:-3.5.3}
VENV=target/bench-venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "pyspark==$PYSPARK" "cloudpickle>=2"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
cargo build --release --quiet -p lockgate --bin lockgate

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Eight words per line out of 1,000, the same files for every engine.
python3 - "$WORK/files" "$FILES" "$LINES" <<'PY'
import os, random, sys
out, files, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out)
rng = random.Random(42)
words = [f"w{i}" for i in range(1000)]
for f in range(files):
    with open(os.path.join(out, f"part-{f:03}.txt"), "w") as fh:
        for _ in range(lines):
            fh.write(" ".join(rng.choice(words) for _ in range(8)) + "\n")
PY
WORDS=$((FILES * LINES * 8))
echo "input: $FILES files, $((FILES * LINES)) lines, $WORDS words; $(nproc) cores"
run() {
    rm -rf "$WORK/in" "$WORK/watched"
    cp -r "$WORK/files" "$WORK/in"
    mkdir "$WORK/watched"
    "$VENV/bin/python" python/bench/wordcount.py "$1" "$WORK/in" "$WORK/watched" "$WORDS" \
        2> "$WORK/$1.log" | tail -1 || { tail -20 "$WORK/$1.log" >&2; exit 1; }
}
PYSPARK_LINE=$(run pyspark)
echo "$PYSPARK_LINE"
LOCKGATE_LINE=$(run lockgate)
echo "$LOCKGATE_LINE"
# The ceiling: the built-in Rust word count over the same files.
rm -rf "$WORK/out" "$WORK/cp"
RUST=$(./target/release/lockgate run word-count --input "$WORK/files" --once --quiet \
    --output "$WORK/out" --no-ui 2>&1 | grep -E '^word-count: ' || true)
echo "rust built-in: $RUST"
python3 - "$PYSPARK_LINE" "$LOCKGATE_LINE" <<'PY'
import json, sys
p, l = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert p["distinct"] == l["distinct"], (p, l)
print(f"lockgate / pyspark: {l['words_per_s'] / p['words_per_s']:.1f}x")
PY
