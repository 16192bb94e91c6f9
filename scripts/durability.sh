#!/usr/bin/env bash
# durability.sh [ROUNDS] — the kill -9 durability proof (scripts/durability.py) on the
# release build: 100 rounds by default; CI runs fewer.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
exec python3 scripts/durability.py "${1:-100}"
