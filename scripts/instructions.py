#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: stable on a noisy machine.

    scripts/instructions.py [BIN] [--scenarios health,get_task,...] [--annotate SCENARIO]
                            [--concurrency C]

For each scenario the server runs twice under `valgrind --tool=callgrind` on a fresh
database seeded the same way; the client sends N1 and then N2 requests of that
scenario, one keep-alive connection, one at a time. The difference of the two totals
divided by N2 - N1 is the cost of one request (start-up, seeding and shutdown cancel
out). `--annotate S` keeps the N2 profile of S and prints its top functions
(inclusive), for finding where the time goes. `--concurrency C` splits the requests
over C connections sending at once, so writes reach the writer in group-commit
batches as they do under load (one connection gives batches of one). BIN defaults to a release build with
symbols in target/profile (built here if missing).
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N1, N2 = 200, 1200
TASK = (
    '{"title":"bench task %d","description":"created by the load benchmark to measure '
    'single-task inserts","priority":%d,"labels":["bench","load","wrk"],"metadata":'
    '{"source":"wrk","run":"compare","seq":%d,"tags":{"team":"infra","tier":2}}}'
)
SCENARIOS = {
    "health": lambda i: ("GET", "/health", None),
    "get_task": lambda i: ("GET", "/tasks/%d" % (i % 100 + 1), None),
    "list_tasks": lambda i: ("GET", "/projects/1/tasks?limit=50&status=pending", None),
    "create_task": lambda i: ("POST", "/projects/1/tasks", TASK % (i, i % 10, i)),
    "claim": lambda i: (
        "POST",
        "/projects/2/tasks/claim",
        '{"agent":"agent-%d","lease_seconds":300}' % (i % 128),
    ),
    "patch": lambda i: (
        "PATCH",
        "/tasks/%d" % (i % 100 + 1),
        '{"priority":%d,"metadata":{"touched":%d}}' % (i % 10, i),
    ),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build():
    env = dict(os.environ, CARGO_PROFILE_RELEASE_STRIP="false", CARGO_PROFILE_RELEASE_DEBUG="1")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--target-dir", "target/profile"],
        cwd=ROOT, env=env, check=True,
    )
    return os.path.join(ROOT, "target/profile/release/dashboard-backend")


def request(conn, method, path, body):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit("%s %s -> %d %s" % (method, path, r.status, data[:200]))
    return data


def seed(conn, claim_pool):
    request(conn, "POST", "/projects", '{"name":"p1"}')
    request(conn, "POST", "/projects", '{"name":"p2"}')
    for _ in range(2):  # 100 tasks in project 1, for get/list/patch
        tasks = [json.loads(TASK % (i, i % 10, i)) for i in range(50)]
        request(conn, "POST", "/projects/1/tasks", json.dumps(tasks))
    left = claim_pool
    while left > 0:
        n = min(left, 1000)
        request(conn, "POST", "/projects/2/tasks", json.dumps([{"title": "claim me"}] * n))
        left -= n


def run_once(binary, scenario, n, out_file, concurrency=1):
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = dict(
            os.environ,
            PORT=str(port), HOST="127.0.0.1", DATABASE_PATH=os.path.join(tmp, "db.sqlite"),
            BACKUP_DIR=os.path.join(tmp, "backups"), AUTH_DISABLED="true",
            RATE_LIMIT_PER_MINUTE="0", LOG_LEVEL="warn", WORKERS="2",
        )
        env.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out_file, binary, "serve"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 120
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    request(conn, "GET", "/health/ready", None)
                    break
                except (OSError, http.client.HTTPException):
                    if time.time() > deadline or proc.poll() is not None:
                        raise SystemExit("server under valgrind did not become ready")
                    time.sleep(0.2)
            seed(conn, N2 + 10)
            make = SCENARIOS[scenario]
            conn.close()

            failed = []

            def client(k):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    for i in range(k, n, concurrency):
                        request(c, *make(i))
                    c.close()
                except BaseException as e:  # SystemExit from request() included
                    failed.append(e)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failed:
                raise SystemExit("a client failed: %s" % failed[0])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    with open(out_file) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit("no totals in " + out_file)


def annotate(out_file, top=40):
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", out_file],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = [l for l in text.splitlines() if re.match(r"^\s*[\d,]+ ", l)]
    print("\n".join(lines[:top]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bin", nargs="?")
    ap.add_argument("--scenarios", default="health,get_task,list_tasks,create_task,claim,patch")
    ap.add_argument("--annotate")
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    binary = args.bin or build()
    work = os.path.join(ROOT, "target/profile/callgrind")
    os.makedirs(work, exist_ok=True)
    print("instructions per request (callgrind, %d vs %d requests, %d keep-alive connection(s))"
          % (N1, N2, args.concurrency))
    for s in args.scenarios.split(","):
        totals = []
        for n in (N1, N2):
            out = os.path.join(work, "%s-%d.out" % (s, n))
            totals.append(run_once(binary, s, n, out, args.concurrency))
            if sys.stdout.isatty():
                print("  %s: %d requests done" % (s, n), end="\r", flush=True)
        per = (totals[1] - totals[0]) / (N2 - N1)
        print("%-12s %10.0f" % (s, per), flush=True)
        if s == args.annotate:
            annotate(os.path.join(work, "%s-%d.out" % (s, N2)))


if __name__ == "__main__":
    main()
