#!/usr/bin/env bash
# bench-scale.sh [N] — the read, list and claim scenarios and the start-up time on a
# database of N tasks (default 1 000 000) next to the same on 10 000, to show they do
# not degrade with size. Databases are loaded directly (scripts/seed-db.sh). Claims
# come from a second project of CLAIM_POOL pending tasks (default 300 000), the same
# at both sizes, so neither run drains it and both claim from a pool of equal depth
# inside a database of 10 000 or N tasks. Then the counts of issue #19 at N
# (scripts/bench-counts.py: stats, /metrics, GET /stats, /health under scrapers).
# Env: DURATION (10) WARMUP (2) CONNECTIONS (32), as in ../shared/bench/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
shared=${SHARED:-../shared}
cargo build --release -q
BIN=$PWD/target/release/dashboard-backend
out=target/bench/scale-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out"
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

run_size() { # tasks
  local size=$1 db=$work/db-$1/dashboard.db port
  mkdir -p "$(dirname "$db")"
  BIN=$BIN scripts/seed-db.sh "$db" "$size" "${CLAIM_POOL:-300000}"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  DATABASE_PATH=$db PORT=$port HOST=127.0.0.1 AUTH_DISABLED=true RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn \
    "$BIN" 2>"$out/server-$size.log" &
  pid=$!
  until curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do sleep 0.02; done
  echo "== $size tasks"
  # Project 1 holds ids 1..size; project 2 is the claim pool.
  PROJECT=1 CLAIM_PROJECT=2 ID_MIN=1 ID_MAX=$size LABEL=$size RESULTS=$out/results.jsonl \
    "$shared/bench/bench.sh" "http://127.0.0.1:$port" get_task list_tasks claim
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
: >"$out/results.jsonl"
run_size 10000
run_size "$n"
scripts/startup-time.sh "$n" | tee "$out/startup.txt"
jq -r --arg big "$n" -s '
  (map(select(.server == "10000")) | INDEX(.scenario)) as $small |
  map(select(.server == $big)) | .[] |
  "| \(.scenario) | \($small[.scenario].rps | floor) | \(.rps | floor) | \((.rps / $small[.scenario].rps * 100 | floor))% |"' \
  "$out/results.jsonl" | { echo "| scenario | 10k req/s | ${n} req/s | ratio |"; echo "|---|---:|---:|---:|"; cat; } | tee "$out/scale.md"
python3 scripts/bench-counts.py "$n" | tee "$out/counts.txt"
echo "bench-scale: $out"
