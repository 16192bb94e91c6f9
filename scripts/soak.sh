#!/usr/bin/env bash
# soak.sh [MINUTES] — the `mixed` scenario of ../shared/bench for MINUTES (default 10)
# against the release binary, in 30-second slices: after each slice it prints req/s,
# p99, errors and the server's RSS, so growth shows as a trend, not one number.
# Passes (exit 0) when no request failed and RSS after the first minute (warm-up)
# grew by no more than 10 % by the end. Output also in target/bench/soak-<time>.txt.
#   scripts/soak.sh          # 10 minutes, as issue #7 asks
#   scripts/soak.sh 1        # a quick look
#   DATABASE_URL=postgres://… scripts/soak.sh 30   # on PostgreSQL (an empty database)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
shared=${SHARED:-../shared}
slice=30
slices=$((minutes * 60 / slice))
((slices >= 3)) || slices=3
command -v wrk >/dev/null || { echo "soak: wrk not found (apt-get install -y wrk)" >&2; exit 69; }
cargo build --release -q
bin=$PWD/target/release/dashboard-backend
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
env -i PATH="$PATH" PORT="$port" HOST=127.0.0.1 DATABASE_PATH="$work/db.sqlite" AUTH_DISABLED=true \
  ${DATABASE_URL:+DATABASE_URL="$DATABASE_URL"} \
  RATE_LIMIT_PER_MINUTE=0 LOG_LEVEL=warn "$bin" 2>"$work/server.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fsS -o /dev/null "$url/health/ready" 2>/dev/null && break; sleep 0.1; done
eval "export $("$shared/bench/seed.sh" "$url" 10000 20000 | tail -1)"
rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
# What of the RSS is SQLite's heap (its page caches fill as the database grows), and
# how many threads hold stacks: "-" where the engine runs elsewhere (PostgreSQL).
dbmem() {
  curl -fsS "$url/metrics" | awk '/^db_memory_bytes/ { m = $2 } END { if (m) printf "%.1f", m / 1048576; else printf "-" }'
}
threads() { awk '/^Threads/ { print $2 }' "/proc/$pid/status"; }
mkdir -p target/bench
out=target/bench/soak-$(date -u +%Y%m%d-%H%M%S).txt
{
  backend=sqlite; [[ ${DATABASE_URL:-} == postgres* ]] && backend=postgres
  echo "soak: mixed on $backend for $((slices * slice)) s in ${slice} s slices, commit $(git rev-parse --short HEAD), $(nproc) cores"
  printf '%6s %9s %9s %8s %7s %9s %9s %8s\n' t_s req/s p99_ms non2xx errors rss_mib db_mib threads
  printf '%6d %9s %9s %8s %7s %9s %9s %8s\n' 0 - - - - "$(rss)" "$(dbmem)" "$(threads)"
} | tee "$out"
errors=0 warm="" last=""
for i in $(seq "$slices"); do
  line=$(DURATION=$slice WARMUP=0 "$shared/bench/bench.sh" "$url" mixed | awk '$1 == "mixed"')
  read -r _ rps _ p99 non2xx errs _ <<<"$line"
  errors=$((errors + non2xx + errs))
  last=$(rss)
  ((i == 60 / slice)) && warm=$last
  printf '%6d %9s %9s %8s %7s %9s %9s %8s\n' $((i * slice)) "$rps" "$p99" "$non2xx" "$errs" "$last" \
    "$(dbmem)" "$(threads)" | tee -a "$out"
done
peak=$(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
verdict=$(awk -v w="$warm" -v l="$last" 'BEGIN { g = (l - w) / w * 100; printf "%+.1f", g; exit (g > 10) }') && flat=1 || flat=0
echo "soak: RSS after warm-up ${warm} MiB, at the end ${last} MiB (${verdict} %), peak ${peak} MiB; failed requests: ${errors}" | tee -a "$out"
((errors == 0 && flat == 1)) || { echo "soak: FAIL" | tee -a "$out"; exit 1; }
echo "soak: ok ($out)"
