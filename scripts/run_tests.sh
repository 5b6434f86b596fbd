#!/usr/bin/env bash
# Lint and test in the project's .venv with every cache and settings folder redirected to a temporary
# directory, so that no test writes into the user's home or touches the network.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HOME="$tmp/home" TORCH_HOME="$tmp/torch" XDG_CACHE_HOME="$tmp/cache" YOLO_CONFIG_DIR="$tmp/yolo" \
       MPLCONFIGDIR="$tmp/mpl" YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$HOME"
echo "== ruff"
"$BIN/ruff" check .
echo "== pytest"
"$BIN/python" -m pytest -q -p no:cacheprovider "$@"
