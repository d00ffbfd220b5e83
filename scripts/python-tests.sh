#!/usr/bin/env bash
# Builds and installs the Python package (`pip install ./python`) into a virtualenv
# under target/, with the workspace's dev profile so it reuses the crates the Rust
# tests compiled, then runs its pytest suite (python/tests).
#
#   scripts/python-tests.sh [pytest args...]
#
# Needs python3 (3.9 or later) with venv; pip fetches maturin, pytest, cloudpickle and
# confluent-kafka (the Kafka tests' producer) and pyarrow (foreachBatch's tables) from PyPI
# (cached in ~/.cache/pip).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/python-venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.16,<2" "pytest>=7" "cloudpickle>=2" \
    "confluent-kafka>=2" "pyarrow"
# maturin passes these to cargo when pip builds the wheel.
MATURIN_PEP517_ARGS="--profile dev" "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps ./python
# From the tests' directory, so that `import lockgate` is the installed package (with
# its native module), not the sources beside it.
cd python/tests
exec "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
