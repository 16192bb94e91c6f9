#!/usr/bin/env python3
"""retention_load.py URL PROJECT_ID SECONDS THREADS [RATE] — a constant create / claim / finish
load for scripts/retention-soak.sh (issue #20): each thread creates a task (two labels,
a 120-byte description), claims one, and finishes it (3 in 4 completed, the rest
failed or cancelled), on one keep-alive connection; with RATE, at most RATE tasks a second in all (paced,
so the load stays constant however busy the machine is). Every 30 s it prints one line:
`t ops creates/s p99_create_ms p99_claim_ms errors`, then exits after SECONDS."""
import http.client
import json
import sys
import threading
import time

url, pid, seconds, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rate = float(sys.argv[5]) if len(sys.argv) > 5 and float(sys.argv[5]) > 0 else 0.0
host, port = url.split("//")[1].split(":")
lock = threading.Lock()
stats = {"creates": 0, "errors": 0, "create": [], "claim": []}
stop = time.monotonic() + seconds


def call(conn, method, path, body, extra=None):
    t = time.monotonic()
    headers = {"Content-Type": "application/json", **(extra or {})}
    conn.request(method, path, body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, data, (time.monotonic() - t) * 1000


def worker(n):
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    i = 0
    desc = "x" * 120
    every = threads / rate if rate else 0.0
    due = time.monotonic()
    while time.monotonic() < stop:
        if every:
            due += every
            ahead = due - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            elif ahead < -1:
                due = time.monotonic()  # fell behind: no burst to catch up
        i += 1
        try:
            s, _, ms = call(conn, "POST", f"/projects/{pid}/tasks",
                            {"title": f"t{n}-{i}", "description": desc, "labels": ["soak", f"w{n}"]})
            with lock:
                stats["create"].append(ms)
                stats["creates"] += 1
                stats["errors"] += s != 201
            s, data, ms = call(conn, "POST", f"/projects/{pid}/tasks/claim",
                               {"agent": f"a{n}", "lease_seconds": 60})
            with lock:
                stats["claim"].append(ms)
                stats["errors"] += s not in (200, 204)
            if s != 200:
                continue
            claimed = json.loads(data)
            tid, token = claimed["id"], claimed["lease_token"]
            to = ["completed", "completed", "completed", "failed" if i % 8 else "cancelled"][i % 4]
            # The holder finishes its task: its token passes the live lease (SPEC §5a).
            s, _, _ = call(conn, "PATCH", f"/tasks/{tid}", {"status": to, "result": {"ok": True}},
                           {"Lease-Token": token})
            with lock:
                stats["errors"] += s != 200
        except Exception:  # a reset connection: count it, reconnect
            with lock:
                stats["errors"] += 1
            conn = http.client.HTTPConnection(host, int(port), timeout=30)


def p99(xs):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


for n in range(threads):
    threading.Thread(target=worker, args=(n,), daemon=True).start()
start = last = time.monotonic()
while time.monotonic() < stop:
    time.sleep(min(30, max(0.1, stop - time.monotonic())))
    with lock:
        creates, errors = stats["creates"], stats["errors"]
        cr, cl = p99(stats["create"]), p99(stats["claim"])
        stats.update(creates=0, errors=0, create=[], claim=[])
    now = time.monotonic()
    print(f"{now - start:.0f} {creates / (now - last):.0f} {cr:.1f} {cl:.1f} {errors}", flush=True)
    last = now
