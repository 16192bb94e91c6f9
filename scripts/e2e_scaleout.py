#!/usr/bin/env python3
"""e2e_scaleout.py — the phases of scripts/e2e-scaleout.sh (SPEC §10, issue #14): three
instances of the release binary on one PostgreSQL database, HAProxy in front. Run it
through e2e-scaleout.sh, which starts the cluster and HAProxy, passes their places in
the environment and cleans up after; this file starts, kills and restarts the instances
(their pids in $WORK/pids/ for the shell's trap) and drives every request through
HAProxy. Python 3 standard library only.

Phases, each with its figures in the transcript:
  0. the three instances start at once on an empty database: one migration, all UP
  1. 30 agents claim and complete 3 000 tasks; one instance is killed with SIGKILL at
     a third: every task is acknowledged to exactly one agent and ends completed, and
     after HAProxy marks the dead instance DOWN no request fails
  2. rolling restart (SIGTERM, wait for exit 0, start, wait UP) of all three under a
     client loop of creates and reads: 0 failed requests
  3. PostgreSQL stopped (`pg_ctl stop -m fast`) for 2 s and started again under the
     same loop: the service answers 503 with Retry-After while the database is away
     (at least one such answer must be seen), nothing but 503s fail, none once it is
     back, no instance exits, every acknowledged write is there afterwards
  a follower of GET /projects/{id}/events?after= runs through all phases; at the end
  its ids equal the full list: every event once, none missing, in order.
Exit 1 on any violation (all are listed), 0 otherwise.
"""
import collections, http.client, json, os, signal, socket, subprocess, sys, threading, time

E = os.environ
BIN = os.path.abspath(E["BIN"])
WORK = E["WORK"]
PORTS = [int(p) for p in E["APP_PORTS"].split()]
HAP_PORT = int(E["HAPROXY_PORT"])
HAP_SOCK = E["HAPROXY_SOCK"]
# The backend of packaging/examples/haproxy.cfg that e2e-scaleout.sh runs.
BACKEND = "dashboard_cluster"
DATABASE_URL = E["DATABASE_URL"]
PG_CTL = E["PG_CTL"]
PGDATA = E["PGDATA"]
# The server's options of the first start (port, socket directory): a start after a
# stop does not remember them, as a restart does.
PG_OPTS = E["PG_OPTS"]
PG_LOG = E["PG_LOG"]
AGENTS = int(E.get("AGENTS", "30"))
TASKS = int(E.get("TASKS", "3000"))
LEASE = 10  # seconds; a claim whose answer was lost in the SIGKILL comes back after it
DRAIN = 2  # SHUTDOWN_DRAIN_SECONDS: above HAProxy's fall 2 x inter 500ms

T0 = time.monotonic()
violations = []


def now():
    return time.monotonic() - T0


def say(msg):
    print(f"scaleout: [{now():6.1f}s] {msg}", flush=True)


def check(ok, msg):
    if ok:
        say(f"ok   {msg}")
    else:
        say(f"FAIL {msg}")
        violations.append(msg)
    return ok


# ---- HTTP through HAProxy (or straight to an instance) ----

class Client:
    """One keep-alive connection; `call` returns (status, headers, body) or raises
    OSError / http.client.HTTPException (the connection is then dropped)."""

    def __init__(self, port=HAP_PORT, key=None, timeout=15):
        self.port, self.key, self.timeout, self.conn = port, key, timeout, None

    def call(self, method, path, body=None, extra=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = dict(extra or {})
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if r.will_close:
                self.close()
            return r.status, hdrs, payload
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def must(self, method, path, body=None, want=(200, 201), tries=50):
        """For set-up and final reads: retried while the service is busy or away."""
        last = None
        for _ in range(tries):
            try:
                st, h, b = self.call(method, path, body)
                if st in want:
                    return json.loads(b) if b else None
                last = f"{st} {b[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.2)
        raise SystemExit(f"scaleout: {method} {path} kept failing: {last}")


# ---- HAProxy's view, from its stats socket ----

def hap(cmd):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(HAP_SOCK)
    s.sendall(cmd.encode() + b"\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()


def server_states():
    """{server name: True if UP} of the backend (srv_op_state 2 = running)."""
    states = {}
    for line in hap(f"show servers state {BACKEND}").splitlines():
        f = line.split()
        if len(f) > 5 and f[1] == BACKEND:
            states[f[3]] = f[5] == "2"
    return states


def wait_state(name, up, timeout=30):
    """Seconds until HAProxy shows `name` UP (or DOWN); None if it never did."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if server_states().get(name) == up:
            return time.monotonic() - t
        time.sleep(0.02)
    return None


# ---- the instances ----

class Instance:
    def __init__(self, n, port):
        self.n, self.port, self.name, self.proc = n, port, f"app{n}", None
        self.dir = os.path.join(WORK, self.name)
        os.makedirs(self.dir, exist_ok=True)

    def start(self):
        env = {
            "PATH": E.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": DATABASE_URL,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "SHUTDOWN_DRAIN_SECONDS": str(DRAIN),
            "SHUTDOWN_TIMEOUT_SECONDS": "10",
            "RATE_LIMIT_PER_MINUTE": "0",
            "TRUSTED_PROXIES": "127.0.0.1",
            "LOG_LEVEL": "info",
        }
        log = open(os.path.join(WORK, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen([BIN, "serve"], env=env, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log)
        log.close()
        with open(os.path.join(WORK, "pids", self.name), "w") as f:
            f.write(str(self.proc.pid))

    def ready(self, timeout=30):
        c = Client(self.port, timeout=2)
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            if self.proc.poll() is not None:
                return False
            try:
                if c.call("GET", "/health/ready")[0] == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
        return False

    def reaped(self):
        try:
            os.unlink(os.path.join(WORK, "pids", self.name))
        except FileNotFoundError:
            pass


# ---- load: failures are recorded with their time ----

class Record:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []  # (time, what)
        self.statuses = collections.Counter()
        self.created = []  # acknowledged creates
        self.unavailable_without_retry_after = 0
        self.proxy_503 = 0

    def fail(self, what):
        with self.lock:
            self.failures.append((now(), what))

    def sent(self, st, h, body):
        with self.lock:
            self.statuses[st] += 1
            if 200 <= st < 300:
                self.ok += 1
                return True
            self.failures.append((now(), str(st)))
            if st == 503:
                if b'"unavailable"' in body:  # the service's own: must say when to retry
                    if "retry-after" not in h:
                        self.unavailable_without_retry_after += 1
                else:
                    self.proxy_503 += 1  # HAProxy: no server UP
        return False


def agent(i, project, key, rec, claims, done, deadline):
    c = Client(key=key)
    me = f"agent-{i}"
    while time.monotonic() < deadline:
        with rec.lock:
            if len(done) >= TASKS:
                return
        try:
            st, h, b = c.call("POST", f"/projects/{project}/tasks/claim", {"agent": me, "lease_seconds": LEASE})
        except (OSError, http.client.HTTPException) as e:
            rec.fail(f"claim {type(e).__name__}")
            time.sleep(0.05)
            continue
        if st == 204:
            rec.sent(st, h, b)
            time.sleep(0.1)  # nothing claimable now: a lost claim's lease has yet to expire
            continue
        if not rec.sent(st, h, b):
            time.sleep(0.05)
            continue
        claimed = json.loads(b)
        tid, token = claimed["id"], claimed["lease_token"]
        with rec.lock:
            claims[tid].append(me)
        # Completing with the lease token (SPEC §5a) is retried until it is
        # acknowledged, under one Idempotency-Key: a complete whose answer was lost may
        # have committed, and its repeat replays that answer instead of lease_lost.
        idem = {"Idempotency-Key": f"complete-{tid}-{me}-{token[:8]}"}
        while time.monotonic() < deadline:
            try:
                st, h, b = c.call("POST", f"/tasks/{tid}/complete",
                                  {"lease_token": token, "result": {"by": me}}, idem)
            except (OSError, http.client.HTTPException) as e:
                rec.fail(f"complete {type(e).__name__}")
                time.sleep(0.05)
                continue
            if rec.sent(st, h, b):
                with rec.lock:
                    done[tid] = done.get(tid, 0) + 1
                break
            time.sleep(0.05)


def looper(i, project, key, rec, stop):
    """Creates a task, reads it back, reads the project's stats; until `stop`."""
    c = Client(key=key)
    n = 0
    while not stop.is_set():
        n += 1
        try:
            st, h, b = c.call("POST", f"/projects/{project}/tasks", {"title": f"loop-{i}-{n}", "priority": 1})
            if rec.sent(st, h, b):
                tid = json.loads(b)["id"]
                with rec.lock:
                    rec.created.append(tid)
                st, h, b = c.call("GET", f"/tasks/{tid}")
                rec.sent(st, h, b)
            st, h, b = c.call("GET", f"/projects/{project}/stats")
            rec.sent(st, h, b)
        except (OSError, http.client.HTTPException) as e:
            rec.fail(type(e).__name__)
        time.sleep(0.01)


def follower(project, key, stop, out):
    """Follows the feed with ?after= through HAProxy until `stop`, then catches up."""
    c = Client(key=key)
    after, ids, errors, served = 0, [], collections.Counter(), collections.Counter()
    while True:
        stopping = stop.is_set()
        try:
            st, h, b = c.call("GET", f"/projects/{project}/events?after={after}&limit=500")
        except (OSError, http.client.HTTPException) as e:
            errors[type(e).__name__] += 1
            time.sleep(0.05)
            continue
        if st != 200:
            errors[st] += 1
            time.sleep(0.05)
            continue
        served[h.get("x-served-by", "?")] += 1
        items = json.loads(b)["items"]
        ids.extend(e["id"] for e in items)
        if items:
            after = items[-1]["id"]
        elif stopping:
            break
        else:
            time.sleep(0.05)
    out.update(ids=ids, errors=errors, served=served)


def run_loop(project, key, threads=6):
    rec, stop = Record(), threading.Event()
    ts = [threading.Thread(target=looper, args=(i, project, key, rec, stop), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    return rec, stop, ts


# How long PostgreSQL stays stopped in phase 3.
OUTAGE = 2.0
# Longest the service may keep answering 503 after PostgreSQL is back: the pool's
# reconnect backoff (at most 5 s) and a readiness check.
RECOVERY = 6.0


def main():
    os.makedirs(os.path.join(WORK, "pids"), exist_ok=True)
    apps = [Instance(n + 1, p) for n, p in enumerate(PORTS)]

    # ---- 0. three instances start together on an empty database ----
    for a in apps:
        a.start()
    ok = all(a.ready() for a in apps)
    check(ok, f"3 instances started together, ready after {now():.1f} s")
    if not ok:
        return
    logs = "".join(open(os.path.join(WORK, f"{a.name}.log"), errors="replace").read() for a in apps)
    # Each migration applied by exactly one of the three (the advisory lock).
    versions = []
    for line in logs.splitlines():
        if "applied PostgreSQL migration" in line:
            try:
                versions.append(json.loads(line).get("version"))
            except ValueError:
                versions.append(line)
    once = len(versions) == len(set(versions)) and len(versions) > 0
    check(once, f"the schema was migrated once (advisory lock): versions applied across the three {versions}")
    key = subprocess.run([BIN, "apikey", "create", "--name", "e2e-scaleout", "--role", "write"], check=True,
                         capture_output=True, text=True, cwd=WORK,
                         env={"PATH": E.get("PATH", ""), "DATABASE_URL": DATABASE_URL}).stdout.strip()
    t = time.monotonic()
    while time.monotonic() - t < 20 and not all(server_states().get(a.name) for a in apps):
        time.sleep(0.05)
    states = server_states()
    check(all(states.get(a.name) for a in apps), f"HAProxy shows all three UP: {states}")
    admin = Client(key=key)
    project = admin.must("POST", "/projects", {"name": "scale-out"})["id"]

    feed, feed_stop = {}, threading.Event()
    fthread = threading.Thread(target=follower, args=(project, key, feed_stop, feed), daemon=True)
    fthread.start()

    # ---- 1. 30 agents, 3 000 tasks, SIGKILL of one instance at a third ----
    t = time.monotonic()
    for k in range(0, TASKS, 1000):
        admin.must("POST", f"/projects/{project}/tasks",
                   [{"title": f"task-{k + j}", "priority": j % 5} for j in range(min(1000, TASKS - k))])
    say(f"created {TASKS} tasks in {time.monotonic() - t:.1f} s (bulk, 1000 a request)")
    rec, claims, done = Record(), collections.defaultdict(list), {}
    deadline = time.monotonic() + 90
    t1 = time.monotonic()
    ts = [threading.Thread(target=agent, args=(i, project, key, rec, claims, done, deadline), daemon=True)
          for i in range(AGENTS)]
    for th in ts:
        th.start()
    while time.monotonic() < deadline:
        with rec.lock:
            if len(done) >= TASKS // 3:
                break
        time.sleep(0.01)
    victim = apps[1]
    victim.proc.kill()
    t_kill = now()
    victim.proc.wait()
    victim.reaped()
    with rec.lock:
        at_kill = len(done)
    down_after = wait_state(victim.name, False, timeout=10)
    t_down = now()
    check(down_after is not None and down_after < 3,
          f"SIGKILL of {victim.name} at {at_kill} completed: HAProxy marked it DOWN after {down_after or 0:.2f} s")
    for th in ts:
        th.join()
    dur = time.monotonic() - t1
    acked = [tid for tid, who in claims.items()]
    twice = {tid: who for tid, who in claims.items() if len(who) != 1}
    fails = list(rec.failures)
    early = [f for f in fails if f[0] < t_kill]
    late = [f for f in fails if f[0] > t_down + 0.5]
    say(f"agents: {AGENTS} agents, {len(done)} tasks completed in {dur:.1f} s, {rec.statuses[200]} answers 200, "
        f"{rec.statuses[204]} claims 204 (waiting for a lost claim's lease), claims per agent "
        f"{min(collections.Counter(w[0] for w in claims.values()).values())}-"
        f"{max(collections.Counter(w[0] for w in claims.values()).values())}")
    check(len(done) == TASKS, f"every one of the {TASKS} tasks acknowledged completed ({len(done)})")
    check(len(acked) == TASKS and not twice,
          f"each task claimed by exactly one agent: {len(acked)} tasks acknowledged to an agent, "
          f"{len(twice)} to more than one {dict(list(twice.items())[:3])}")
    check(not early and not late,
          f"failed requests: {len(early)} before the kill, {len(fails) - len(early) - len(late)} in flight at the kill "
          f"({dict(collections.Counter(w for _, w in fails))}), {len(late)} after HAProxy marked {victim.name} DOWN "
          f"{(early + late)[:3]}")
    victim.start()
    check(victim.ready() and wait_state(victim.name, True) is not None, f"{victim.name} restarted and UP again")

    # ---- 2. rolling restart of all three under a client loop ----
    rec2, stop2, ts2 = run_loop(project, key)
    time.sleep(1)
    t2 = time.monotonic()
    for a in apps:
        ts0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        down = wait_state(a.name, False, timeout=DRAIN + 5)
        try:
            rc = a.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        a.reaped()
        exited = time.monotonic() - ts0
        a.start()
        up = a.ready() and wait_state(a.name, True)
        back = time.monotonic() - ts0
        check(rc == 0 and down is not None and down < DRAIN and up is not None,
              f"{a.name}: SIGTERM -> DOWN in HAProxy after {down or 0:.2f} s (drain {DRAIN} s), exit {rc} after "
              f"{exited:.2f} s, started, UP again after {back:.2f} s")
    time.sleep(1)
    stop2.set()
    for th in ts2:
        th.join()
    n2 = sum(rec2.statuses.values()) + len([f for f in rec2.failures if not f[1].isdigit()])
    check(not rec2.failures,
          f"rolling restart in {time.monotonic() - t2:.1f} s: {n2} requests from 6 clients, "
          f"{len(rec2.failures)} failed {rec2.failures[:5]}")

    # ---- 3. PostgreSQL restarted under the loop ----
    pids = [a.proc.pid for a in apps]
    rec3, stop3, ts3 = run_loop(project, key)
    time.sleep(1.5)
    t_pg = now()
    # Away long enough that the clients surely meet the outage (a bare restart can
    # pass between two requests).
    pg = ["runuser", "-u", "postgres", "--", PG_CTL, "-D", PGDATA, "-l", PG_LOG, "-w"]
    r = subprocess.run(pg + ["-m", "fast", "stop"], capture_output=True, text=True)
    time.sleep(OUTAGE)
    r2 = subprocess.run(pg + ["-o", PG_OPTS, "start"], capture_output=True, text=True)
    t_pg_back = now()
    check(r.returncode == 0 and r2.returncode == 0,
          f"PostgreSQL stopped, away {OUTAGE:.0f} s, started: back after {t_pg_back - t_pg:.2f} s "
          f"{r.stderr.strip()} {r2.stderr.strip()}")
    t = time.monotonic()
    while time.monotonic() - t < 30 and not all(server_states().get(a.name) for a in apps):
        time.sleep(0.05)
    t_all_up = now()
    # The pool reconnects with a backoff of at most 5 s: failures must end within
    # RECOVERY of PostgreSQL being back, whether or not HAProxy saw the instances DOWN
    # (a short restart can pass between two cached readiness checks).
    time.sleep(max(3.0, t_pg_back + RECOVERY + 2.0 - now()))
    stop3.set()
    for th in ts3:
        th.join()
    f3 = list(rec3.failures)
    non503 = [f for f in f3 if f[1] != "503"]
    after = [f for f in f3 if f[0] > max(t_all_up + 0.5, t_pg_back + RECOVERY)]
    first = f"{f3[0][0] - t_pg:+.2f}" if f3 else "-"
    last = f"{f3[-1][0] - t_pg:+.2f}" if f3 else "-"
    say(f"database restart: {sum(rec3.statuses.values())} answers, {rec3.ok} 2xx, {rec3.statuses[503]} 503 "
        f"({rec3.statuses[503] - rec3.proxy_503} from the service, {rec3.proxy_503} from HAProxy with no server UP), "
        f"first at {first} s, last at {last} s after the restart began; all UP again {t_all_up - t_pg_back:.2f} s "
        f"after PostgreSQL was back")
    check(not non503, f"during the outage every failure was a 503: {len(non503)} others {non503[:5]}")
    service_503 = rec3.statuses[503] - rec3.proxy_503
    check(service_503 > 0, f"the service itself answered 503 while the database was away ({service_503})")
    check(rec3.unavailable_without_retry_after == 0,
          f"the service's 503s carry Retry-After ({rec3.unavailable_without_retry_after} without)")
    recovered = f"{f3[-1][0] - t_pg_back:.2f} s" if f3 else "at once"
    check(not after, f"full recovery {recovered} after PostgreSQL was back: {len(after)} failures later than "
          f"{RECOVERY:.0f} s after it {after[:5]}")
    alive = [a.proc.poll() is None and a.proc.pid == p for a, p in zip(apps, pids)]
    check(all(alive), f"no instance exited during the database restart: {alive}")

    # ---- the end: the follower, and every acknowledged write ----
    feed_stop.set()
    fthread.join(timeout=60)
    full, after_id = [], 0
    while True:
        page = admin.must("GET", f"/projects/{project}/events?after={after_id}&limit=500")["items"]
        if not page:
            break
        full.extend(e["id"] for e in page)
        after_id = page[-1]["id"]
    ids = feed.get("ids", [])
    dups = len(ids) - len(set(ids))
    missing = len(set(full) - set(ids))
    check(ids == full, f"events follower across the instances: {len(ids)} events seen, {len(full)} in the full "
          f"list, {dups} twice, {missing} missing, order {'same' if ids == full else 'DIFFERENT'}; "
          f"pages served by {dict(sorted(feed.get('served', {}).items()))}, errors retried {dict(feed.get('errors', {}))}")
    tasks, cursor = {}, None
    while True:
        q = f"/projects/{project}/tasks?limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = admin.must("GET", q)
        for tk in page["items"]:
            tasks[tk["id"]] = tk["status"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    lost_done = [tid for tid in done if tasks.get(tid) != "completed"]
    lost_created = [tid for tid in rec2.created + rec3.created if tid not in tasks]
    check(not lost_done and not lost_created,
          f"no acknowledged write lost: {len(done)} completions all completed, {len(rec2.created) + len(rec3.created)} "
          f"creates (rolling restart {len(rec2.created)}, database restart {len(rec3.created)}) all present "
          f"({len(lost_done)} + {len(lost_created)} missing)")
    panics = sum(open(os.path.join(WORK, f"{a.name}.log"), errors="replace").read().count("panic") for a in apps)
    check(panics == 0, f"no panic in the instances' logs ({panics})")

    # A clean stop: exit 0 from each.
    for a in apps:
        a.proc.send_signal(signal.SIGTERM)
    rcs = []
    for a in apps:
        try:
            rcs.append(a.proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            rcs.append(None)
        a.reaped()
    check(rcs == [0, 0, 0], f"SIGTERM at the end: exit codes {rcs}")


if __name__ == "__main__":
    try:
        main()
    except SystemExit as e:
        if e.code not in (None, 0):
            print(e.code, file=sys.stderr)
            violations.append(str(e.code))
    print(f"scaleout: {'FAIL' if violations else 'ok'} after {now():.1f} s, "
          f"{len(violations)} violation(s)", flush=True)
    for v in violations:
        print(f"scaleout:   - {v}", flush=True)
    sys.exit(1 if violations else 0)
