#!/usr/bin/env bash
# bench-queue.sh [--postgres] [--smoke] — the queue's own scenarios against the release
# binary, with wrk (issues #15, #17):
#   claim        single claims from a pre-filled project        → tasks claimed/s
#   batch_claim  claims of `limit: 50`                           → tasks claimed/s
#   cycle        create → claim (lease token) → complete, 64 agents → cycles/s
# SQLite (synchronous=FULL) by default; --postgres on a throwaway cluster on this box
# (scripts/pg-temp.sh). The table goes to stdout and target/bench/queue-<time>.md.
# Env: DURATION (s, 10) WARMUP (s, 2) CONNECTIONS (64) THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=sqlite
for arg in "$@"; do
  case $arg in
    --postgres) backend=postgres ;;
    --smoke) export DURATION=${DURATION:-2} WARMUP=${WARMUP:-1} ;;
    *) echo "bench-queue: unknown option $arg (--postgres, --smoke)" >&2; exit 64 ;;
  esac
done
DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} CONNECTIONS=${CONNECTIONS:-64} THREADS=${THREADS:-2}
command -v wrk >/dev/null || { echo "bench-queue: wrk not found (apt-get install wrk)" >&2; exit 69; }
[[ -n ${BIN:-} ]] || { cargo build --release -q; BIN=target/release/dashboard-backend; }
[[ $backend == postgres ]] && { source scripts/pg-temp.sh; start_pg; }
work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
  [[ $backend == postgres ]] && stop_pg
  return 0
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
DATABASE_PATH=$work/d.db HOST=127.0.0.1 PORT=$port AUTH_DISABLED=true RATE_LIMIT_PER_MINUTE=0 \
  LOG_LEVEL=warn SHUTDOWN_DRAIN_SECONDS=0 "$BIN" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 200); do curl -sf "$url/health/ready" >/dev/null && break; sleep 0.05; done
curl -sf "$url/health/ready" >/dev/null || { cat "$work/server.log" >&2; exit 1; }

post() { curl -sf -H 'Content-Type: application/json' -d "$2" "$url$1"; }
project() { post /projects "{\"name\":\"$1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
# fill PROJECT N: N pending tasks in bulk creates of 1 000.
fill() {
  local body
  body=$(python3 -c 'import json; print(json.dumps([{"title": f"q{i}", "priority": i % 5} for i in range(1000)]))')
  for ((i = 0; i < $2; i += 1000)); do post "/projects/$1/tasks" "$body" >/dev/null; done
}
run() { # lua project [env…]
  cat scripts/bench/common.lua "scripts/bench/$1.lua" >"$work/$1.lua"
  local args=(-t "$THREADS" -c "$CONNECTIONS" --timeout 5s -s "$work/$1.lua" "$url")
  ((WARMUP > 0)) && env PROJECT="$2" "${@:3}" wrk "${args[@]}" -d "${WARMUP}s" >/dev/null 2>&1
  env PROJECT="$2" "${@:3}" wrk "${args[@]}" -d "${DURATION}s" 2>&1 | grep -m1 '^BENCH ' | cut -c7-
}
field() { grep -o "\"$1\":[0-9.]*" <<<"$2" | cut -d: -f2; }

declare -A pool=([claim]=$((DURATION + WARMUP)) [batch_claim]=$((DURATION + WARMUP)))
out=target/bench/queue-$(date -u +%Y%m%d-%H%M%S)-$backend.md
mkdir -p target/bench
{
  echo "queue scenarios, $backend$([[ $backend == sqlite ]] && echo " (synchronous=FULL)" || echo " (same box, synchronous_commit=on)")," \
    "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty), $(nproc) cores," \
    "${DURATION} s after ${WARMUP} s warm-up, $CONNECTIONS connections"
  echo
  echo "| scenario | req/s | p50 ms | p99 ms | tasks claimed/s | cycles/s | errors | notes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
} >"$out"
for sc in claim batch_claim cycle; do
  pid=$(project "$sc")
  case $sc in
    claim) fill "$pid" $((pool[claim] * 25000)) ;;         # claims ≤ 25 000/s
    batch_claim) fill "$pid" $((pool[batch_claim] * 50000)) ;; # ≤ 50 000 tasks/s
  esac
  case $sc in
    claim) line=$(run claim "$pid") ;;
    batch_claim) line=$(run claim "$pid" LIMIT=50) ;;
    cycle) line=$(run cycle "$pid") ;;
  esac
  [[ -n $line ]] || { echo "bench-queue: $sc produced no result" >&2; exit 1; }
  note=""
  (($(field empty "$line") > 0)) && note="pool ran dry: $(field empty "$line") empty claims"
  (($(field lost "$line") > 0)) && note+=" $(field lost "$line") lease_lost"
  printf '| %s | %.0f | %.2f | %.2f | %.0f | %s | %d | %s |\n' "$sc" "$(field rps "$line")" \
    "$(field p50_ms "$line")" "$(field p99_ms "$line")" "$(field claimed_per_s "$line")" \
    "$([[ $sc == cycle ]] && printf '%.0f' "$(field completed_per_s "$line")" || echo -)" \
    "$(field errors "$line")" "$note" >>"$out"
done
cat "$out"
echo "bench-queue: $out"
if grep -q '"status":5[0-9][0-9]' "$work/server.log"; then
  echo "bench-queue: the server answered 5xx:" >&2
  grep '"status":5[0-9][0-9]' "$work/server.log" | grep -o '"cause":"[^"]*"\|"msg":"[^"]*"' | sort | uniq -c | sort -rn | head -5 >&2
  exit 1
fi
