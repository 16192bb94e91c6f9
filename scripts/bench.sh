#!/usr/bin/env bash
# bench.sh — build the release binary and run ../shared/bench/compare.sh against it:
# the Node peer, this binary and nginx, one after another in one run, side by side.
# The table (with date, commit and machine) is left in target/bench/<time>/compare.md.
#   scripts/bench.sh                 # default settings (10 s scenarios)
#   scripts/bench.sh --smoke         # 2 s scenarios: CI checks the harness still works
# Needs: wrk, nginx, curl, jq, node (the peer installs with npm ci on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
if [[ ${1:-} == --smoke ]]; then
  export DURATION=${DURATION:-2} WARMUP=${WARMUP:-1} N=${N:-2000}
fi
cargo build --release -q
out=target/bench/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+dirty')"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
  echo "settings: DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} CONNECTIONS=${CONNECTIONS:-32} N=${N:-10000}"
  echo
} >"$out/header.md"
BIN=$PWD/target/release/dashboard-backend OUT=$PWD/$out "$shared/bench/compare.sh" >"$out/run.log" 2>&1 || {
  tail -30 "$out/run.log" >&2
  echo "bench: compare.sh failed; see $out/run.log" >&2
  exit 1
}
cat "$out/header.md" "$out/compare.md" >"$out/table.md"
cat "$out/table.md"
echo "bench: $out/table.md"
