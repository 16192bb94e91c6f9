#!/usr/bin/env python3
"""Counts at scale (issue #19): stats, /metrics and /health on a big database.

Seeds one project of N tasks (scripts/seed-db.sh, default 1 000 000) and 100 projects
of 10 000, starts the release binary with LOG_LEVEL=debug and an ACCESS_LOG, then:
1 000 x GET /projects/1/stats, 1 000 x GET /metrics, 1 000 x GET /stats (server time
from the access log's duration_ms), and GET /health timed by a client while 8 others
scrape /metrics in a loop (wrk, so the scrapers are not Python threads).

    scripts/bench-counts.py [N]
    DATABASE_URL=postgres://… scripts/bench-counts.py [N]   # PostgreSQL (an empty database)

On PostgreSQL the same data is loaded with psql (PG_BINDIR, default
/usr/lib/postgresql/15/bin) into the schema the binary's `migrate` made.
"""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/dashboard-backend")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def seed_sqlite(db, n):
    env = dict(os.environ, BIN=BIN)
    subprocess.run([os.path.join(ROOT, "scripts/seed-db.sh"), db, str(n)], check=True, env=env)
    now = int(time.time() * 1000)
    sql = f"""PRAGMA synchronous=OFF; BEGIN;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100)
INSERT INTO projects (name, created_at, updated_at) SELECT 'p' || x, {now}, {now} FROM c;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000)
INSERT INTO tasks (project_id, title, status, priority, created_at, updated_at, completed_at)
SELECT p.id, 't' || x, CASE WHEN x % 4 = 0 THEN 'completed' ELSE 'pending' END, x % 10,
       {now} - x, {now} - x, CASE WHEN x % 4 = 0 THEN {now} - x END
FROM c, projects p WHERE p.id > 1;
COMMIT;"""
    t = time.time()
    subprocess.run(["sqlite3", db], input=sql, text=True, check=True)
    print(f"bench-counts: +100 projects x 10 000 tasks in {time.time() - t:.1f} s", flush=True)


def seed_postgres(url, n):
    """The mix of seed-db.sh (one project of n) and the 100 projects of 10 000, loaded
    in one transaction; the count triggers fill the counters as for any insert."""
    psql = os.path.join(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"), "psql")
    subprocess.run([BIN, "migrate"], env=dict(os.environ, DATABASE_URL=url), check=True,
                   stdout=subprocess.DEVNULL)
    now = int(time.time() * 1000)
    sql = f"""\\set ON_ERROR_STOP on
BEGIN;
INSERT INTO projects (name, description, created_at, updated_at)
  VALUES ('seeded', 'bench-counts.py', {now}, {now});
INSERT INTO tasks (project_id, title, description, status, priority, assignee, labels, metadata,
                   created_at, updated_at, started_at, completed_at)
SELECT 1, 'seeded task ' || x, 'pre-filled by bench-counts.py',
       CASE WHEN x % 10 < 6 THEN 'pending' WHEN x % 10 < 8 THEN 'completed'
            WHEN x % 10 = 8 THEN 'in_progress' ELSE 'blocked' END,
       x % 10, CASE WHEN x % 10 = 8 THEN 'agent-' || (x % 50) END,
       '["seed"]', '{{"seq":' || x || '}}', {now} - ({n} - x), {now} - ({n} - x),
       CASE WHEN x % 10 = 8 THEN {now} END, CASE WHEN x % 10 IN (6, 7) THEN {now} END
FROM generate_series(1, {n}) AS x;
INSERT INTO task_labels (project_id, label, task_id) SELECT 1, 'seed', id FROM tasks;
INSERT INTO projects (name, created_at, updated_at)
  SELECT 'p' || x, {now}, {now} FROM generate_series(1, 100) AS x;
INSERT INTO tasks (project_id, title, status, priority, created_at, updated_at, completed_at)
SELECT p.id, 't' || x, CASE WHEN x % 4 = 0 THEN 'completed' ELSE 'pending' END, x % 10,
       {now} - x, {now} - x, CASE WHEN x % 4 = 0 THEN {now} - x END
FROM generate_series(1, 10000) AS x, projects p WHERE p.id > 1;
COMMIT;
VACUUM ANALYZE;
"""
    t = time.time()
    subprocess.run([psql, "-X", "-q", url], input=sql, text=True, check=True)
    print(f"bench-counts: {n} + 100 x 10 000 tasks loaded into PostgreSQL in {time.time() - t:.1f} s",
          flush=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    if not shutil.which("wrk"):
        sys.exit("bench-counts: wrk is needed for the scrapers (apt-get install wrk)")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-counts-")
    db = os.path.join(work, "dashboard.db")
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        seed_postgres(url, n)
    else:
        seed_sqlite(db, n)
    access = os.path.join(work, "access.log")
    port = 18000 + os.getpid() % 1000
    env = {"PATH": os.environ["PATH"], "DATABASE_PATH": db, "PORT": str(port), "HOST": "127.0.0.1",
           "AUTH_DISABLED": "true", "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "debug",
           "ACCESS_LOG": access}
    if url.startswith("postgres"):
        env["DATABASE_URL"] = url
    proc = subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def get(path):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            return r.status

        for path in ["/projects/1/stats", "/metrics", "/stats"]:
            for _ in range(1000):
                assert get(path) == 200, path
        # Eight scrapers in one compiled client (wrk), not eight Python threads: their
        # GIL would time the client, not the server.
        scrapers = subprocess.Popen(
            ["wrk", "-t2", "-c8", "-d600s", f"http://127.0.0.1:{port}/metrics"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        health = []
        for _ in range(1000):
            t0 = time.perf_counter()
            assert get("/health") == 200
            health.append((time.perf_counter() - t0) * 1000)
        scrapers.terminate()
        scrapers.wait()
        time.sleep(0.5)
        # The first 1 000 of each route are the sequential phase; later /metrics
        # lines are the scrapers'.
        by_route = {}
        with open(access) as f:
            for line in f:
                e = json.loads(line)
                by_route.setdefault(e["route"], []).append(e["duration_ms"])
        print(f"bench-counts: {n} tasks in project 1, 100 projects of 10 000, {'postgres' if url.startswith('postgres') else 'sqlite'}")
        print("| request | count | server p50 ms | server p99 ms |")
        print("|---|---:|---:|---:|")
        for route in ["/projects/{id}/stats", "/metrics", "/stats"]:
            d = by_route.get(route, [])[:1000]
            print(f"| GET {route} | {len(d)} | {pct(d, 0.5):.3f} | {pct(d, 0.99):.3f} |")
        scraped = by_route.get("/metrics", [])[1000:]
        print(f"| GET /metrics (8 scrapers at once) | {len(scraped)} | {pct(scraped, 0.5):.3f} | {pct(scraped, 0.99):.3f} |")
        served = by_route.get("/health", [])
        print(f"| GET /health during the scrapes (server) | {len(served)} | {pct(served, 0.5):.3f} | {pct(served, 0.99):.3f} |")
        print(f"| GET /health during the scrapes (client, end to end) | {len(health)} | {pct(health, 0.5):.3f} | {pct(health, 0.99):.3f} |")
    finally:
        proc.terminate()
        proc.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
