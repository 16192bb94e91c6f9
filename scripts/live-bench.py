#!/usr/bin/env python3
"""Live at scale (issue #16, SPEC §9): what 1 000 waiting claims and 200 open event
streams cost everyone else.

Starts the release binary (or BIN) on a fresh SQLite database with MAX_CONNECTIONS
and MAX_STREAMS at their defaults, then measures, first idle and then with 1 000
long-poll claims (wait_seconds=60) parked on one project and 200 event streams open
on another:
  - GET /health p99 over 2 000 sequential requests on one keep-alive connection;
  - GET /tasks/{id} throughput with wrk (2 threads, 8 connections, 5 s);
and, with the waiters and streams in place and nothing else happening, the server's
CPU use over 10 s (from /proc/<pid>/stat).

Before the waiters are parked, WAKEUPS (20) rounds of one claim waiting on an empty
project and a task created 200 ms later: the time from sending the create to the
waiter's answer.

Last, SIGTERM with all of them open: every waiter must be answered 204 and every
stream end within the drain (SHUTDOWN_DRAIN_SECONDS=1), and the server exit 0
within the drain plus 2 s (an idle keep-alive connection notices the closed
listener at its next 1 s tick).

Targets: every wake-up < 50 ms; /health p99 < 5 ms; get_task within 20 % of idle;
idle CPU ~0 % (< 2 %); the SIGTERM bounds above.
Exit 1 when a target is missed.

--ci (what .ci/run runs, ~1.5 min, 3 at most): the same targets, measured so that
a noisy shared machine does not decide the verdict. Throughput is ROUNDS (4)
interleaved pairs of 3 s runs, idle then loaded (the waiters and streams opened
before and closed after each loaded run, and the idle run only once their
connection threads are gone), judged by the median of the pairs' loaded/idle
ratios (a pair shares the machine's mood of the moment); a missed
target (wake-ups, throughput, /health p99, CPU) is measured once more and judged
by the second measurement only.

Figures on the 2-CPU dev VM (shared, load ~7; release build; run to run noise of
±15 % on throughput):
  idle:   /health p99 0.47-4.70 ms; get_task 19 900-23 900 req/s
  loaded: /health p99 1.00-3.67 ms; get_task -9.6 % / -17.7 % vs idle;
          CPU with 1 000 waiters + 200 streams parked 0.6-1.3 %, waiters alone 0.1 %
  SIGTERM with all of them open: exit 0 after 2.2 s (SHUTDOWN_DRAIN_SECONDS=1)
Before widening the futex hash (src/live/mod.rs) get_task lost 20-45 %.
2026-12-02 (MAX_CONNECTIONS and MAX_STREAMS at their defaults, load 4-6 from a
build beside it): wake-ups median 2.3-5.5 ms, max 4.6-31.4 ms; loaded /health p99
0.19-1.26 ms; idle CPU with them parked 0.5-0.9 %; SIGTERM: 1 000 × 204 and 200
streams ended within 0.04-0.10 s, exit 0 after 2.18-2.47 s. get_task loaded vs
idle, one 3 s pair at a time: -35 % to +40 % (so one by-hand pair of 5 s runs
said -22.0 % once); the --ci medians of 4-5 pairs: -13.1 % to +22.2 %.

    scripts/live-bench.py            (builds the release binary first)
    BIN=target/release/dashboard-backend scripts/live-bench.py --ci
"""
import http.client
import json
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAITERS = int(os.environ.get("WAITERS", "1000"))
STREAMS = int(os.environ.get("STREAMS", "200"))
WAKEUPS = int(os.environ.get("WAKEUPS", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
CI = "--ci" in sys.argv[1:]
DRAIN = 1.0
# Exit may come this long after the drain: when the listener closes, an idle
# keep-alive connection (this script's own, a load balancer's) notices at its next
# tick (1 s at most); then the workers leave, ~1 200 connection threads end and the
# WAL is checkpointed (~0.3 s). Measured: 1.3-1.45 s.
EXIT_MARGIN = 2.0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def log(msg):
    print(f"live-bench: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twice(measure, ok, what):
    """Measures; under --ci, a missed target is measured once more and the second
    result is the verdict (a noisy machine may spoil one measurement, not two)."""
    got = measure()
    if CI and not ok(got):
        log(f"{what}: target missed ({got}); measuring once more")
        got = measure()
    return got


def main():
    binary = os.environ.get("BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target/release/dashboard-backend")
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("live-bench: wrk missing (apt-get install wrk)", file=sys.stderr)
        return 69
    # 1 200 held sockets and more on this side too.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    work = tempfile.mkdtemp(prefix="live-bench-")
    port = free_port()
    env = {"PATH": os.environ["PATH"], "DATABASE_PATH": os.path.join(work, "dashboard.db"),
           "PORT": str(port), "HOST": "127.0.0.1", "AUTH_DISABLED": "true",
           "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warn", "SHUTDOWN_DRAIN_SECONDS": str(int(DRAIN))}
    # MAX_CONNECTIONS and MAX_STREAMS stay at their defaults: the load must fit them.
    # The server's warnings and errors (LOG_LEVEL=warn), kept for a failed run.
    server_log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen([binary], env=env, stderr=server_log)
    log(f"server log: {server_log.name}")
    held = []
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

        def call(method, path, body=None):
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data else {}
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # Seen once after the 11 s CPU measurement, not reproduced since: an
                # idle keep-alive connection closed under the request. Only GETs are
                # sent again (RFC 9112 §9.3.1), and it is said so.
                if method != "GET":
                    raise
                log(f"the keep-alive connection was closed under GET {path} ({e!r}); sending it again")
                c.close()
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)

        def threads():
            with open(f"/proc/{proc.pid}/status") as f:
                return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))

        base_threads = threads()

        def settle():
            """Waits for the connection threads of closed connections to end (an idle
            one lingers 5 s in tiny_http's pool): an idle run must not measure the
            aftermath of the loaded one."""
            deadline = time.time() + 15
            while threads() > base_threads + 16 and time.time() < deadline:
                time.sleep(0.2)

        _, streamed = call("POST", "/projects", {"name": "streamed"})
        _, waited = call("POST", "/projects", {"name": "waited-on"})
        _, task = call("POST", f"/projects/{streamed['id']}/tasks", {"title": "read me"})
        tid = task["id"]

        def gauges():
            _, m = call("GET", "/metrics/json")
            return m["metrics"]["claim_waiters"], m["metrics"]["http_streams_open"]

        def await_gauges(want, limit):
            deadline = time.time() + limit
            while gauges() != want:
                assert time.time() < deadline, f"gauges {gauges()}, expected {want}"
                time.sleep(0.05)

        def health_p99():
            lat = []
            for _ in range(2000):
                t = time.perf_counter()
                st, _ = call("GET", "/health")
                lat.append(time.perf_counter() - t)
                assert st == 200
            return pct(lat, 0.99) * 1000, pct(lat, 0.5) * 1000

        def get_task_rps(seconds):
            out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", f"http://127.0.0.1:{port}/tasks/{tid}"],
                                 capture_output=True, text=True, check=True).stdout
            m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            assert not non2xx, out
            return float(m.group(1))

        def cpu_seconds():
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        body = json.dumps({"agent": "bench", "wait_seconds": 60}).encode()
        claim = (f"POST /projects/{waited['id']}/tasks/claim HTTP/1.1\r\nHost: b\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        stream = f"GET /projects/{streamed['id']}/events/stream HTTP/1.1\r\nHost: b\r\n\r\n".encode()

        def open_load():
            """Parks WAITERS claims and opens STREAMS streams: (waiter sockets, stream sockets)."""
            ws, ss = [], []
            for _ in range(WAITERS):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(claim)
                ws.append(s)
            for _ in range(STREAMS):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(stream)
                ss.append(s)
            held.extend(ws + ss)
            await_gauges((WAITERS, STREAMS), 30)
            return ws, ss

        def close_load(load):
            for s in load[0] + load[1]:
                s.close()
                held.remove(s)
            # Hang-ups are noticed within a second (a stream's tick, the waiters' re-check).
            await_gauges((0, 0), 15)

        idle_p99, idle_p50 = health_p99()
        log(f"idle: /health p50 {idle_p50:.2f} ms p99 {idle_p99:.2f} ms")

        # Wake-up: a claim waiting on an empty project gets the task created 200 ms
        # later; the lag runs from sending the create to the waiter's answer.
        _, woken = call("POST", "/projects", {"name": "woken"})
        wbody = json.dumps({"agent": "woken", "wait_seconds": 10}).encode()
        wclaim = (f"POST /projects/{woken['id']}/tasks/claim HTTP/1.1\r\nHost: b\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(wbody)}\r\n\r\n").encode() + wbody

        def wakeups():
            lags = []
            for i in range(WAKEUPS):
                s = socket.create_connection(("127.0.0.1", port))
                s.settimeout(15)
                s.sendall(wclaim)
                await_gauges((1, 0), 10)
                time.sleep(0.2)
                t = time.perf_counter()
                st, _ = call("POST", f"/projects/{woken['id']}/tasks", {"title": f"wake {i}"})
                assert st == 201
                answer = s.recv(65536)
                lags.append((time.perf_counter() - t) * 1000)
                s.close()
                assert answer.startswith(b"HTTP/1.1 200") and b"wake " in answer, answer[:200]
            late = sum(1 for x in lags if x >= 50)
            log(f"wake-up of a waiting claim, {WAKEUPS} rounds: median {pct(lags, 0.5):.1f} ms, "
                f"max {max(lags):.1f} ms, {late} at or over 50 ms")
            return late

        late = twice(wakeups, lambda n: n == 0, "wake-ups")

        def throughput_set():
            """(idle req/s, loaded req/s): one run each by hand; under --ci the medians
            of ROUNDS interleaved pairs."""
            if not CI:
                idle = get_task_rps(5)
                log(f"idle: get_task {idle:.0f} req/s")
                return idle, None
            idles, loadeds, ratios = [], [], []
            for r in range(ROUNDS):
                settle()
                idles.append(get_task_rps(3))
                load = open_load()
                loadeds.append(get_task_rps(3))
                close_load(load)
                ratios.append(loadeds[-1] / idles[-1])
                log(f"round {r + 1}: get_task idle {idles[-1]:.0f}, loaded {loadeds[-1]:.0f} req/s "
                    f"({(ratios[-1] - 1) * 100:+.1f} %)")
            idle, ratio = statistics.median(idles), statistics.median(ratios)
            log(f"get_task: idle median {idle:.0f} req/s; loaded vs idle, median of the rounds {(ratio - 1) * 100:+.1f} %")
            # Loaded as the idle median times the median ratio: what the verdict compares.
            return idle, idle * ratio

        if CI:
            idle_rps, busy_rps = twice(throughput_set, lambda g: g[1] >= g[0] * 0.8, "get_task throughput")
        else:
            idle_rps, _ = throughput_set()

        open_load()
        log(f"{WAITERS} claims waiting, {STREAMS} streams open")

        def idle_cpu():
            time.sleep(1)
            c0, t0 = cpu_seconds(), time.time()
            time.sleep(10)
            return (cpu_seconds() - c0) / (time.time() - t0) * 100

        cpu = twice(idle_cpu, lambda x: x < 2, "idle CPU")
        busy_p99, busy_p50 = twice(health_p99, lambda g: g[0] < 5, "/health p99")
        if not CI:
            busy_rps = get_task_rps(5)
        assert gauges() == (WAITERS, STREAMS), "waiters or streams were lost during the run"
        log(f"loaded: /health p50 {busy_p50:.2f} ms p99 {busy_p99:.2f} ms; get_task {busy_rps:.0f} req/s "
            f"({(busy_rps / idle_rps - 1) * 100:+.1f} % vs idle); idle CPU with them parked {cpu:.2f} %")
        ok = True
        if late:
            log("FAIL a waiter answered 50 ms or more after its task's creation"); ok = False
        if busy_p99 >= 5:
            log("FAIL /health p99 >= 5 ms"); ok = False
        if busy_rps < idle_rps * 0.8:
            log("FAIL get_task more than 20 % below idle"); ok = False
        if cpu >= 2:
            log("FAIL CPU with idle waiters >= 2 %"); ok = False
        return 0 if sigterm(proc, held) and ok else 1
    finally:
        for s in held:
            s.close()
        if proc.poll() is None:
            proc.kill()


def sigterm(proc, socks):
    """SIGTERM with every waiter and stream open: each waiter gets 204 and each stream
    ends within the drain; the process exits 0 within the drain plus EXIT_MARGIN."""
    sel = selectors.DefaultSelector()
    got = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        got[s] = b""
    t = time.time()
    proc.terminate()
    open_left, last_end = len(socks), None
    while open_left and time.time() - t < DRAIN + EXIT_MARGIN + 5:
        for key, _ in sel.select(timeout=0.5):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                got[key.fileobj] += data
            else:
                # As an HTTP client does at the end of a `Connection: close` reply (a
                # socket left open would hold its server thread in the lingering read,
                # up to 2 s, and the exit with it).
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_left -= 1
                last_end = time.time() - t
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    exited = time.time() - t
    heads = [got[s][:12] for s in socks]
    answered = sum(1 for h in heads if h == b"HTTP/1.1 204")
    streamed = sum(1 for h in heads if h == b"HTTP/1.1 200")
    log(f"SIGTERM with all of them open: {answered} waiters answered 204, {streamed} streams, "
        f"{open_left} connections still open; the last closed after {last_end or 0:.2f} s; "
        f"exit {code} after {exited:.2f} s (drain {DRAIN:.0f} s)")
    ok = True
    if open_left or answered != WAITERS or streamed != STREAMS:
        log("FAIL not every waiter was answered 204 and every stream ended"); ok = False
    elif last_end > DRAIN:
        log(f"FAIL a waiter or stream outlived the drain ({last_end:.2f} s)"); ok = False
    if code != 0 or exited > DRAIN + EXIT_MARGIN:
        log(f"FAIL exit {code} after {exited:.2f} s: expected 0 within {DRAIN + EXIT_MARGIN:.1f} s"); ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
