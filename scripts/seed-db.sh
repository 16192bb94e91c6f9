#!/usr/bin/env bash
# seed-db.sh DB N [POOL] — fill DB (created and migrated by the binary) with one project
# of N tasks by a direct SQLite load of the product's own schema: fast enough for
# 1 000 000 tasks in well under a minute, for benchmarks and start-up measurements.
# Mix: 60% pending, 20% completed, 10% in_progress, 10% blocked; priorities 0-9;
# every task labelled. With POOL, a second project holds POOL pending tasks to claim
# (the same pool at every N, so claim rates compare and never run dry).
# Env: BIN (default target/release/dashboard-backend).
set -euo pipefail
cd "$(dirname "$0")/.."
db=${1:?usage: seed-db.sh DB N}
n=${2:?usage: seed-db.sh DB N [POOL]}
pool=${3:-0}
BIN=${BIN:-target/release/dashboard-backend}
command -v sqlite3 >/dev/null || { echo "seed-db: sqlite3 not found (apt-get install sqlite3)" >&2; exit 69; }
[[ -x $BIN ]] || cargo build --release -q
DATABASE_PATH=$db "$BIN" migrate >/dev/null
t0=$EPOCHREALTIME
now=$(($(date +%s) * 1000))
sqlite3 "$db" >/dev/null <<SQL
PRAGMA journal_mode=WAL;
PRAGMA synchronous=OFF;
BEGIN;
INSERT INTO projects (name, description, status, version, created_at, updated_at)
  VALUES ('seeded', 'seed-db.sh', 'active', 1, $now, $now);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $n),
     p(pid) AS (SELECT max(id) FROM projects)
INSERT INTO tasks (project_id, title, description, status, priority, assignee, labels, metadata,
                   version, created_at, updated_at, started_at, completed_at)
SELECT pid, 'seeded task ' || x, 'pre-filled by seed-db.sh',
       CASE WHEN x % 10 < 6 THEN 'pending' WHEN x % 10 < 8 THEN 'completed'
            WHEN x % 10 = 8 THEN 'in_progress' ELSE 'blocked' END,
       x % 10, CASE WHEN x % 10 = 8 THEN 'agent-' || (x % 50) END,
       '["seed"]', '{"seq":' || x || '}', 1, $now - ($n - x), $now - ($n - x),
       CASE WHEN x % 10 = 8 THEN $now END, CASE WHEN x % 10 IN (6, 7) THEN $now END
FROM c, p;
INSERT INTO task_labels (project_id, label, task_id)
  SELECT project_id, 'seed', id FROM tasks WHERE project_id = (SELECT max(id) FROM projects);
INSERT INTO projects (name, description, status, version, created_at, updated_at)
  SELECT 'claim pool', 'seed-db.sh', 'active', 1, $now, $now WHERE $pool > 0;
WITH RECURSIVE c(x) AS (SELECT 1 WHERE $pool > 0 UNION ALL SELECT x + 1 FROM c WHERE x < $pool),
     p(pid) AS (SELECT max(id) FROM projects)
INSERT INTO tasks (project_id, title, status, priority, created_at, updated_at)
SELECT pid, 'claim me ' || x, 'pending', x % 10, $now, $now FROM c, p;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
awk -v a="$t0" -v b="$EPOCHREALTIME" -v n="$n" -v p="$pool" 'BEGIN { printf "seed-db: %d tasks (+%d to claim) in %.1f s\n", n, p, b - a }' >&2
