#!/usr/bin/env python3
"""durability.py [ROUNDS] — kill -9 the server at random moments under 8 concurrent
writers, ROUNDS times (default 100), and after each kill check that every write that
got a 2xx is in the database and that PRAGMA integrity_check says ok.

Writers create tasks (single and bulk of 5) and patch them; an acknowledged create
must exist afterwards, an acknowledged patch must have left its priority. Exit 1 on
the first lost write or corruption. BIN picks the binary (default: release build).
"""
import json, os, random, signal, socket, sqlite3, subprocess, sys, tempfile, threading, time
import http.client

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target/release/dashboard-backend"))
WRITERS = 8


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def start(db, port):
    env = dict(os.environ, DATABASE_PATH=db, PORT=str(port), HOST="127.0.0.1", AUTH_DISABLED="true",
               RATE_LIMIT_PER_MINUTE="0", LOG_LEVEL="warn", SHUTDOWN_DRAIN_SECONDS="0")
    p = subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health/ready")
            if c.getresponse().status == 200:
                return p
        except OSError:
            time.sleep(0.01)
    raise SystemExit("durability: server did not become ready")


def writer(port, pid, n, acked, patched, stop):
    """patched[tid] = (last acknowledged priority, priorities sent since without an answer)"""
    rnd = random.Random(n)
    conn = None
    mine = []
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            r = rnd.random()
            if r < 0.6:
                title = f"w{n}-{i}"
                body = json.dumps({"title": title, "priority": 1})
            elif r < 0.8:
                title = [f"w{n}-{i}-{k}" for k in range(5)]
                body = json.dumps([{"title": t, "priority": 1} for t in title])
            else:
                if not mine:
                    continue
                # Only this writer patches its own tasks, so the last answer is final.
                tid = rnd.choice(mine[-200:])
                prio = rnd.randint(2, 1000)
                last, unsure = patched.get(tid, (1, set()))
                patched[tid] = (last, unsure | {prio})
                conn.request("PATCH", f"/tasks/{tid}", json.dumps({"priority": prio}),
                             {"Content-Type": "application/json"})
                res = conn.getresponse(); res.read()
                if res.status == 200:
                    patched[tid] = (prio, set())
                continue
            conn.request("POST", f"/projects/{pid}/tasks", body, {"Content-Type": "application/json"})
            res = conn.getresponse()
            data = res.read()
            if res.status == 201:
                doc = json.loads(data)
                for t in doc.get("items", [doc]):
                    acked[t["title"]] = t["id"]
                    mine.append(t["id"])
        except (OSError, http.client.HTTPException, ValueError):
            conn = None
            time.sleep(0.005)


def verify(db, acked, patched, rnd_no):
    c = sqlite3.connect(db)
    ok = c.execute("PRAGMA integrity_check").fetchone()[0]
    if ok != "ok":
        raise SystemExit(f"durability: round {rnd_no}: integrity_check says {ok}")
    have = dict(c.execute("SELECT title, id FROM tasks"))
    lost = [t for t, i in acked.items() if have.get(t) != i]
    if lost:
        raise SystemExit(f"durability: round {rnd_no}: {len(lost)} acknowledged creates lost, e.g. {lost[:3]}")
    prios = dict(c.execute("SELECT id, priority FROM tasks"))
    # A patch that was answered 200 must be there, unless a later one (sent, never
    # answered) may have landed after it.
    lost = [t for t, (last, unsure) in patched.items() if prios.get(t) != last and prios.get(t) not in unsure]
    if lost:
        detail = [(t, prios.get(t), patched[t]) for t in lost[:3]]
        raise SystemExit(f"durability: round {rnd_no}: {len(lost)} acknowledged patches lost: (id, in db, (acked, unsure)) {detail}")
    c.close()
    return len(patched)


def main():
    if not os.access(BIN, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="durability-")
    db = os.path.join(work, "d.db")
    port = free_port()
    p = start(db, port)
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", "/projects", json.dumps({"name": "durability"}), {"Content-Type": "application/json"})
    pid = json.loads(c.getresponse().read())["id"]
    total = 0
    patches = 0
    for rnd_no in range(1, ROUNDS + 1):
        acked, patched, stop = {}, {}, threading.Event()
        threads = [threading.Thread(target=writer, args=(port, pid, n, acked, patched, stop)) for n in range(WRITERS)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.2, 1.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        stop.set()
        for t in threads:
            t.join()
        patches += verify(db, acked, patched, rnd_no)
        total += len(acked)
        if sys.stderr.isatty():
            print(f"\rround {rnd_no}/{ROUNDS}: {total} acknowledged creates checked", end="", file=sys.stderr)
        p = start(db, port)
    p.terminate(); p.wait()
    print(f"\ndurability: {ROUNDS} kill -9 rounds: {total} acknowledged creates and the "
          f"patches of {patches} tasks all present, integrity_check ok every round")


if __name__ == "__main__":
    main()
