#!/usr/bin/env python3
"""A hostile run against the real binary (issue #13, SPEC §5b).

Starts the server on a temporary database and, all at once: 600 idle and half-sent
connections, 5 clients that pipeline GET /openapi.json and never read, 5 slow readers
of /openapi.json, 200 absurd Content-Length values, and 2 000 connections opened with
`Connection: close` and abandoned. Meanwhile another client measures GET /health, and
the server's RSS is sampled. Afterwards the process must be alive and serve a write.

    scripts/hostile-run.py                         # release build, targets checked
    scripts/hostile-run.py --memory-limit 64       # inside a 64 MiB memory cgroup
    scripts/hostile-run.py --bin target/debug/dashboard-backend --no-latency

Exit 0 when every check holds; the figures go to stdout either way.
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cgroup_enter(pid, mib):
    """Puts pid in a fresh memory cgroup limited to mib MiB (v1 or v2); the path."""
    limit = str(mib * 1024 * 1024)
    name = f"dashboard-hostile-{os.getpid()}"
    v1 = "/sys/fs/cgroup/memory"
    if os.path.isdir(v1):
        path = os.path.join(v1, name)
        os.mkdir(path)
        open(os.path.join(path, "memory.limit_in_bytes"), "w").write(limit)
    else:
        base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
        path = os.path.join(base, name)
        os.mkdir(path)
        open(os.path.join(path, "memory.max"), "w").write(limit)
    open(os.path.join(path, "cgroup.procs"), "w").write(str(pid))
    return path


def cgroup_failcnt(path):
    f = os.path.join(path, "memory.failcnt")
    if os.path.exists(f):
        return int(open(f).read())
    events = open(os.path.join(path, "memory.events")).read().split()
    return int(events[events.index("max") + 1])


def start(binary, env_extra):
    d = tempfile.mkdtemp(prefix="hostile-")
    db = os.path.join(d, "dashboard.db")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_PATH": db}
    key = subprocess.run([binary, "apikey", "create", "--name", "hostile", "--role", "write"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    env.update({"PORT": "0", "HOST": "127.0.0.1", "LOG_LEVEL": "warn", "SHUTDOWN_DRAIN_SECONDS": "0"})
    env.update(env_extra)
    env["LOG_LEVEL"] = "info"
    proc = subprocess.Popen([binary], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    addr = None
    deadline = time.time() + 20
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if str(msg.get("msg", "")).startswith("listening on"):
            addr = msg["addr"]
            break
    if addr is None:
        proc.kill()
        sys.exit("hostile-run: the server did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    host, port = addr.rsplit(":", 1)
    return proc, (host, int(port)), key


def request(addr, raw, timeout=5.0):
    s = socket.create_connection(addr, timeout=timeout)
    try:
        s.sendall(raw)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                if len(body) >= length:
                    break
        return int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else None
    finally:
        s.close()


class Attack:
    def __init__(self, addr, stop):
        self.addr, self.stop, self.held, self.errors = addr, stop, [], 0
        self.lock = threading.Lock()

    def hold(self, s):
        with self.lock:
            self.held.append(s)

    def idle_and_half_sent(self, n):
        for i in range(n):
            try:
                s = socket.create_connection(self.addr, timeout=5)
                if i % 2:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                self.hold(s)
            except OSError:
                self.errors += 1

    def pipeliner(self):
        burst = b"GET /openapi.json HTTP/1.1\r\n\r\n" * 200
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(1)
            s.connect(self.addr)
            self.hold(s)
            while not self.stop.is_set():
                try:
                    s.sendall(burst)
                except socket.timeout:
                    time.sleep(0.2)
        except OSError:
            pass

    def slow_reader(self):
        while not self.stop.is_set():
            try:
                s = socket.create_connection(self.addr, timeout=5)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(b"GET /openapi.json HTTP/1.1\r\n\r\n")
                while not self.stop.is_set():
                    if not s.recv(16):
                        break
                    time.sleep(0.5)
                s.close()
            except OSError:
                time.sleep(0.1)

    def absurd_lengths(self, n):
        rng = random.Random(13)
        for i in range(n):
            length = rng.choice(["1000000000000", "999999999999999", "9999999999999999999",
                                 str(rng.randrange(10**6, 10**19))])
            path = rng.choice(["/health", "/projects", "/openapi.json"])
            try:
                request(self.addr, f"GET {path} HTTP/1.1\r\nContent-Length: {length}\r\n\r\n".encode(), 10)
            except OSError:
                self.errors += 1

    def abandoned(self, n):
        for _ in range(n):
            try:
                s = socket.create_connection(self.addr, timeout=5)
                s.sendall(b"GET /openapi.json HTTP/1.1\r\nConnection: close\r\n\r\n")
                s.close()
            except OSError:
                self.errors += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/dashboard-backend"))
    ap.add_argument("--memory-limit", type=int, metavar="MIB", help="run inside a memory cgroup")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the measured window")
    ap.add_argument("--no-latency", action="store_true", help="do not check the /health p99 target")
    args = ap.parse_args()

    proc, addr, key = start(args.bin, {"MAX_CONNECTIONS": "4096", "READ_TIMEOUT_SECONDS": "10"})
    cg = cgroup_enter(proc.pid, args.memory_limit) if args.memory_limit else None
    stop = threading.Event()
    attack = Attack(addr, stop)
    rss_peak = [rss_kib(proc.pid)]

    def sample():
        while not stop.is_set():
            try:
                rss_peak[0] = max(rss_peak[0], rss_kib(proc.pid))
            except OSError:
                return
            time.sleep(0.1)

    jobs = [threading.Thread(target=sample)]
    jobs += [threading.Thread(target=attack.idle_and_half_sent, args=(300,)) for _ in range(2)]
    jobs += [threading.Thread(target=attack.pipeliner) for _ in range(5)]
    jobs += [threading.Thread(target=attack.slow_reader) for _ in range(5)]
    jobs += [threading.Thread(target=attack.absurd_lengths, args=(50,)) for _ in range(4)]
    jobs += [threading.Thread(target=attack.abandoned, args=(500,)) for _ in range(4)]
    for j in jobs:
        j.daemon = True
        j.start()
    time.sleep(1.0)
    print(f"hostile-run: attack running against {addr[0]}:{addr[1]} (pid {proc.pid})", flush=True)
    latencies, failures = [], 0
    until = time.time() + args.seconds
    last = time.time()
    while time.time() < until:
        t = time.perf_counter()
        try:
            status = request(addr, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 5)
            if status not in (200,):
                failures += 1
        except OSError:
            failures += 1
        latencies.append((time.perf_counter() - t) * 1000)
        if sys.stdout.isatty() and time.time() - last > 1:
            last = time.time()
            print(f"\r  {len(latencies)} probes, RSS {rss_peak[0] / 1024:.1f} MiB", end="", flush=True)
        time.sleep(0.02)
    if sys.stdout.isatty():
        print()
    alive_during = proc.poll() is None
    stop.set()
    for s in attack.held:
        try:
            s.close()
        except OSError:
            pass
    time.sleep(0.5)
    write = None
    if proc.poll() is None:
        body = b'{"name":"after the storm"}'
        write = request(addr, b"POST /projects HTTP/1.1\r\nAuthorization: Bearer " + key.encode()
                        + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body, 10)
    alive = proc.poll() is None
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("inf")
    p50 = latencies[len(latencies) // 2] if latencies else float("inf")
    fails = cgroup_failcnt(cg) if cg else None
    print(f"hostile-run: /health probes {len(latencies)}, failed {failures}, "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1] if latencies else 0:.2f} ms")
    print(f"hostile-run: RSS peak {rss_peak[0] / 1024:.1f} MiB"
          + (f", memory cgroup {args.memory_limit} MiB, limit hits {fails}" if cg else ""))
    print(f"hostile-run: alive during {alive_during}, alive after {alive}, write after -> {write}")
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    if cg:
        time.sleep(0.2)
        try:
            os.rmdir(cg)
        except OSError:
            pass
    ok = alive and write == 201 and failures == 0 and rss_peak[0] < 128 * 1024
    if not args.no_latency:
        ok = ok and p99 < 50.0
    print("hostile-run: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
