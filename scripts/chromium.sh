#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test if it is missing, and prints the path
# of the executable on its last line.
set -euo pipefail
for c in chromium chromium-browser; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; exit 0; fi
done
echo "installing chromium (Debian package)..." >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
command -v chromium
