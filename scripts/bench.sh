#!/usr/bin/env bash
# bench.sh — build the release binary and run ../shared/bench/compare.sh against it:
# the Node peer, this binary and nginx, one after another in one run, side by side.
# Then the queue's own scenarios (scripts/bench-queue.sh: claim, batch_claim, cycle) on
# the same backend. The table (with date, commit and machine) is left in
# target/bench/<time>/table.md.
#   scripts/bench.sh                 # default settings (10 s scenarios), SQLite
#   scripts/bench.sh --postgres      # the same, this binary on PostgreSQL: a throwaway
#                                    # cluster (synchronous_commit=on, fsync on) on this box
#   scripts/bench.sh --smoke         # 2 s scenarios: CI checks the harness still works
# Needs: wrk, nginx, curl, jq, node (the peer installs with npm ci on first use);
# --postgres also the PostgreSQL server binaries (PG_BINDIR) and root (runuser).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
postgres=no
for arg in "$@"; do
  case $arg in
    --smoke) export DURATION=${DURATION:-2} WARMUP=${WARMUP:-1} N=${N:-2000} ;;
    --postgres) postgres=yes ;;
    *) echo "bench: unknown option $arg (--smoke, --postgres)" >&2; exit 64 ;;
  esac
done
cargo build --release -q
# (Not `$([[ … ]] && echo -pg)`: on SQLite that substitution fails, and under set -e
# so does the assignment, ending the script without a word.)
suffix=""
[[ $postgres == yes ]] && suffix=-pg
out=target/bench/$(date -u +%Y%m%d-%H%M%S)$suffix
mkdir -p "$out"

if [[ $postgres == yes ]]; then
  source scripts/pg-temp.sh
  start_pg # compare.sh starts the binary with `env …`, which keeps DATABASE_URL
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+dirty')"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
  echo "settings: DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} CONNECTIONS=${CONNECTIONS:-32} N=${N:-10000}"
  echo "backend: $([[ $postgres == yes ]] && echo "PostgreSQL (same box, synchronous_commit=on)" || echo "SQLite (synchronous=FULL)")"
  echo
} >"$out/header.md"
BIN=$PWD/target/release/dashboard-backend OUT=$PWD/$out "$shared/bench/compare.sh" >"$out/run.log" 2>&1 || {
  tail -30 "$out/run.log" >&2
  echo "bench: compare.sh failed; see $out/run.log" >&2
  exit 1
}
# The queue's own scenarios (claim, batch claim, cycles): the peer has no leases to
# complete with, so they run on this binary alone, on the same backend.
queue=()
[[ $postgres == yes ]] && { stop_pg; unset DATABASE_URL; queue=(--postgres); }
BIN=$PWD/target/release/dashboard-backend scripts/bench-queue.sh "${queue[@]}" >"$out/queue.log" 2>&1 || {
  tail -30 "$out/queue.log" >&2
  echo "bench: bench-queue.sh failed; see $out/queue.log" >&2
  exit 1
}
{ cat "$out/header.md" "$out/compare.md"; echo; grep -v '^bench-queue:' "$out/queue.log"; } >"$out/table.md"
cat "$out/table.md"
echo "bench: $out/table.md"
