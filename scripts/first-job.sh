#!/usr/bin/env bash
# Builds and runs the README's "first job in a new project" as a user would: a new Cargo
# project outside the workspace whose Cargo.toml and src/main.rs are the README's, with
# path dependencies on this checkout. It shares the workspace's Cargo.lock and target
# directory, so the dependencies compiled for the test suite are not compiled again.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 - "$repo/README.md" "$dir" "$repo" <<'PY'
import os, re, sys
readme, out, repo = sys.argv[1:]
text = open(readme, encoding="utf-8").read()
for name in ("Cargo.toml", "src/main.rs"):
    m = re.search(r"<!-- first-job: " + re.escape(name) + r" -->\n```\w+\n(.*?)```", text, re.S)
    if not m:
        sys.exit(f"README.md has no first-job block for {name}")
    body = m.group(1).replace("../lockgate/", repo + "/")
    path = os.path.join(out, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w", encoding="utf-8").write(body)
PY
# A workspace of its own (not a member of an enclosing one), locked to the checkout's
# versions.
printf '\n[workspace]\n' >>"$dir/Cargo.toml"
cp "$repo/Cargo.lock" "$dir/Cargo.lock"
out="$(cd "$dir" && CARGO_TARGET_DIR="$repo/target" cargo run --quiet 2>&1)" || {
    echo "$out"
    echo "first-job: the README's first job failed to build or run" >&2
    exit 1
}
echo "$out" | tail -n 20
# Both outputs counted `to` over the two batches: 2, then 4.
for want in "(to,4)" "to = 4"; do
    grep -qF -- "$want" <<<"$out" || {
        echo "first-job: the output lacks \`$want\`" >&2
        exit 1
    }
done
echo "first-job: the README's first job builds and runs"
