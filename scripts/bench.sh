#!/usr/bin/env bash
# bench.sh — build the release binary and run ../shared/bench/compare.sh against it:
# the Node peer, this binary and nginx, one after another in one run, side by side.
# The table (with date, commit and machine) is left in target/bench/<time>/table.md.
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
out=target/bench/$(date -u +%Y%m%d-%H%M%S)$([[ $postgres == yes ]] && echo -pg)
mkdir -p "$out"

if [[ $postgres == yes ]]; then
  PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
  [[ -x $PG_BINDIR/initdb ]] || { echo "bench: no PostgreSQL in $PG_BINDIR" >&2; exit 69; }
  [[ $(id -u) == 0 ]] || { echo "bench: --postgres runs as root (the cluster runs as postgres)" >&2; exit 77; }
  pg=$(mktemp -d /tmp/bench-pg.XXXXXX)
  chmod 0711 "$pg" && chown postgres: "$pg"
  pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg() { runuser -u postgres -- "$@"; }
  stop_pg() {
    as_pg "$PG_BINDIR/pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pg"
  }
  trap stop_pg EXIT
  as_pg "$PG_BINDIR/initdb" -D "$pg/data" -U postgres --auth-local=trust --auth-host=trust \
    -E UTF8 --locale=C.UTF-8 >/dev/null
  # Durable as the SQLite side is (synchronous=FULL): fsync and synchronous_commit on,
  # the defaults; memory sized for a small dedicated box.
  as_pg "$PG_BINDIR/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w \
    -o "-k $pg -c listen_addresses=127.0.0.1 -p $pg_port -c shared_buffers=256MB -c max_connections=200" \
    start >/dev/null
  as_pg "$PG_BINDIR/psql" -X -q -h "$pg" -p "$pg_port" -d postgres -c 'CREATE DATABASE bench' >/dev/null
  # compare.sh starts the binary with `env …`, which keeps this variable.
  export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/bench?sslmode=disable"
  echo "bench: PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"
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
cat "$out/header.md" "$out/compare.md" >"$out/table.md"
cat "$out/table.md"
echo "bench: $out/table.md"
