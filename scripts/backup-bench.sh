#!/usr/bin/env bash
# backup-bench.sh: how long `backup` takes on a database of 1 000 000 tasks, and how
# long it stalls a concurrent writer (SPEC §7, issue 5).
#
# Seeds the database directly with sqlite3 (the schema comes from the binary's own
# `migrate`), starts the release server, runs WRITERS curl loops that each create one
# task per request (every request stamped with bash's $EPOCHREALTIME, latency from
# curl's time_total), takes a `backup` in the middle, and prints the backup's duration
# and the p50/p99/max write latency inside the backup window and before it.
#
# Usage: scripts/backup-bench.sh [TASKS]      (default 1000000; needs sqlite3, curl, awk)
# Env:   WRITERS (4), BASELINE_SECONDS (5), KEEP=1 keeps the work directory,
#        BACKUP_PREFIX (e.g. "nice -n 10") runs the backup under that command.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
TASKS=${1:-1000000}
WRITERS=${WRITERS:-4}
BASELINE_SECONDS=${BASELINE_SECONDS:-5}
for tool in sqlite3 curl awk; do
  command -v "$tool" >/dev/null || { echo "backup-bench: $tool is required" >&2; exit 69; }
done

step() { printf '== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

cargo build --release --quiet
BIN=$PWD/target/release/dashboard-backend
WORK=$(mktemp -d "${TMPDIR:-/tmp}/backup-bench.XXXXXX")
export DATABASE_PATH=$WORK/data/dashboard.db BACKUP_DIR=$WORK/backups
export LOG_LEVEL=warn SHUTDOWN_DRAIN_SECONDS=0
SERVER_PID=
cleanup() {
  touch "$WORK/stop"
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step "seed $TASKS tasks with sqlite3"
t0=$EPOCHREALTIME
"$BIN" migrate >/dev/null
sqlite3 "$DATABASE_PATH" <<SQL
PRAGMA synchronous=OFF;
BEGIN;
INSERT INTO projects (name, created_at, updated_at) VALUES ('bench', 0, 0);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $TASKS)
INSERT INTO tasks (project_id, title, description, status, priority, labels, metadata,
                   created_at, updated_at)
SELECT 1, 'seeded task ' || i,
       'created by backup-bench.sh so that the backup has a realistic amount of data, row ' || i,
       CASE i % 4 WHEN 0 THEN 'completed' WHEN 1 THEN 'pending'
                  WHEN 2 THEN 'in_progress' ELSE 'failed' END,
       i % 10, '["bench","seed"]', '{"source":"backup-bench","seq":' || i || ',"tier":2}',
       1700000000000 + i, 1700000000000 + i
FROM n;
INSERT INTO task_labels (project_id, label, task_id) SELECT 1, 'bench', id FROM tasks;
INSERT INTO task_labels (project_id, label, task_id) SELECT 1, 'seed', id FROM tasks;
COMMIT;
SQL
db_bytes=$(stat -c %s "$DATABASE_PATH")
echo "seeded in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s: $db_bytes bytes"

step "start the release server"
AUTH_DISABLED=true PORT=0 HOST=127.0.0.1 LOG_LEVEL=info LOG_FORMAT=json \
  "$BIN" serve 2>"$WORK/server.log" &
SERVER_PID=$!
ADDR=
for _ in $(seq 200); do
  ADDR=$(sed -n 's/.*"addr":"\([^"]*\)".*listening on.*/\1/p; s/.*listening on \([0-9.:]*\).*/\1/p' \
    "$WORK/server.log" | awk 'NR == 1')
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "backup-bench: the server did not start" >&2; cat "$WORK/server.log" >&2; exit 69; }
echo "listening on $ADDR"

# One writer: one task per request until the stop file appears (bounded to 15 min).
writer() {
  local out=$1 n=0 t r
  while [ ! -e "$WORK/stop" ] && [ "$SECONDS" -lt 900 ]; do
    n=$((n + 1))
    t=$EPOCHREALTIME
    r=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H 'Content-Type: application/json' \
      -d "{\"title\":\"bench write $n\",\"description\":\"written during backup-bench\",\"labels\":[\"bench\"]}" \
      "http://$ADDR/projects/1/tasks") || r="000 0"
    echo "$t $r" >>"$out"
  done
}

step "$WRITERS writers, ${BASELINE_SECONDS}s baseline, then backup"
w0=$EPOCHREALTIME
for w in $(seq "$WRITERS"); do writer "$WORK/w$w.log" & done
sleep "$BASELINE_SECONDS"
b0=$EPOCHREALTIME
# shellcheck disable=SC2086 # BACKUP_PREFIX is a command line on purpose
backup_file=$(LOG_LEVEL=debug LOG_FORMAT=pretty ${BACKUP_PREFIX:-} "$BIN" backup 2>"$WORK/backup.log") ||
  { echo "backup-bench: backup failed:" >&2; cat "$WORK/backup.log" >&2; exit 1; }
b1=$EPOCHREALTIME
sleep 1
touch "$WORK/stop"
wait $(jobs -p | grep -v "^$SERVER_PID\$") 2>/dev/null || true

# p50/p99/max (ms) and count of 201s whose request started in [from, to).
window() {
  cat "$WORK"/w*.log | awk -v from="$1" -v to="$2" '
    $1 >= from && $1 < to { if ($2 == 201) print $3 * 1000; else bad++ }
    END { if (bad) print "non-201: " bad > "/dev/stderr" }' | sort -n | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "no requests"; exit }
      i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
      i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
      printf "%d writes, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", NR, v[i50], v[i99], v[NR]
    }'
}

step "results"
echo "database:        $db_bytes bytes, $TASKS tasks (+ writes during the run)"
echo "backup file:     $backup_file ($(stat -c %s "$backup_file") bytes)"
echo "backup duration: $(awk -v a="$b0" -v b="$b1" 'BEGIN{printf "%.1f", b-a}') s (wall clock, process start to exit)"
# The baseline skips its first second: the server's first writes warm its caches.
echo "before backup:   $(window "$(awk -v a="$w0" 'BEGIN{printf "%.6f", a + 1}')" "$b0")"
echo "during backup:   $(window "$b0" "$b1")"
echo "backup phases:"
sed -n 's/.*backup: \(snapshot [a-z]*\) seconds=\([0-9.]*\).*/  \1: \2 s/p' "$WORK/backup.log"
echo "slowest writes during the backup (seconds after its start, ms):"
cat "$WORK"/w*.log | awk -v from="$b0" -v to="$b1" '$1 >= from && $1 < to \
  { printf "  +%.1f s  %.1f ms\n", $1 - from, $3 * 1000 }' | sort -k3 -n -r | awk 'NR <= 5'
