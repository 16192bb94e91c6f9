#!/usr/bin/env bash
# startup-time.sh [N] — milliseconds from spawn to READY=1 (on a notify socket this
# script binds, as systemd would) and to the first 200 from /health/ready, on an empty
# database and, when N > 0, on one seeded with N tasks. Median of RUNS (5) starts.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-0}
BIN=${BIN:-target/release/dashboard-backend}
RUNS=${RUNS:-5}
[[ -x $BIN ]] || cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
measure() { # db label
  python3 - "$BIN" "$1" "$2" "$RUNS" <<'PY'
import os, socket, subprocess, sys, time, statistics
binary, db, label, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ready, served = [], []
for i in range(runs):
    path = os.path.join(os.path.dirname(db), f"notify-{i}.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(path); s.settimeout(30)
    probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
    env = dict(os.environ, DATABASE_PATH=db, PORT=str(port), HOST="127.0.0.1", NOTIFY_SOCKET=path,
               LOG_LEVEL="warn", SHUTDOWN_DRAIN_SECONDS="0")
    t0 = time.perf_counter()
    p = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
    while b"READY=1" not in s.recv(4096): pass
    ready.append((time.perf_counter() - t0) * 1000)
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"GET /health/ready HTTP/1.0\r\n\r\n")
            ok = c.recv(64)[9:12] == b"200"; c.close()
            if ok: break
        except OSError: time.sleep(0.001)
    served.append((time.perf_counter() - t0) * 1000)
    p.terminate(); p.wait(); s.close(); os.unlink(path)
print(f"{label}: spawn->READY=1 median {statistics.median(ready):.1f} ms (min {min(ready):.1f}), "
      f"spawn->first 200 median {statistics.median(served):.1f} ms over {runs} starts")
PY
}
DATABASE_PATH=$work/empty.db "$BIN" migrate >/dev/null
measure "$work/empty.db" "empty database"
if ((n > 0)); then
  scripts/seed-db.sh "$work/big.db" "$n"
  measure "$work/big.db" "$n tasks"
fi
