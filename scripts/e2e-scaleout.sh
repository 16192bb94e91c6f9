#!/usr/bin/env bash
# e2e-scaleout.sh — scale-out on PostgreSQL end to end (SPEC §10, issue #14): a
# throwaway PostgreSQL 15 cluster (../shared/TESTING.md §g) with a least-privilege role
# that owns its database, three instances of the release binary on it, HAProxy in
# front: packaging/examples/haproxy.cfg itself, its three-instance backend (check
# interval 500 ms; the edits are printed). Then scripts/e2e_scaleout.py drives everything through
# HAProxy: 30 agents claim 3 000 tasks while one instance is killed with SIGKILL, a
# rolling restart under a client loop, PostgreSQL stopped for 2 s under it, and an events
# follower across all of it. Prints a transcript with the figures; exits non-zero on
# any violation. Everything it starts is stopped on exit (trap). About a minute.
# BIN picks the binary (default: the release build, built if missing); PG_BINDIR the
# PostgreSQL server binaries (default /usr/lib/postgresql/15/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/dashboard-backend}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
fail() { printf 'scaleout: FAIL %s\n' "$*" >&2; exit 1; }
[[ -x $BIN ]] || cargo build --release -q
command -v haproxy >/dev/null || fail "haproxy is not installed (apt-get install haproxy)"
[[ -x $PG_BINDIR/initdb ]] || fail "no PostgreSQL server binaries in $PG_BINDIR (apt-get install postgresql)"
[[ $(id -u) == 0 ]] || fail "run as root: the cluster runs as the postgres user (runuser)"

work=$(mktemp -d /tmp/e2e-scaleout.XXXXXX)
chmod 0711 "$work"
mkdir -p "$work/pids" "$work/pg"
chown postgres: "$work/pg"
hap_pid=""
passed=no # set at the very end: anything else keeps the logs
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  set +e
  # Only what this run started: the instances by the pids their starter wrote (and
  # only while that pid is still our binary), HAProxy by its pid, our postmaster.
  for f in "$work"/pids/*; do
    [[ -e $f ]] || continue
    p=$(cat "$f")
    [[ $(readlink "/proc/$p/exe" 2>/dev/null) == *dashboard-backend* ]] && kill -9 "$p" 2>/dev/null
  done
  [[ -n $hap_pid ]] && kill "$hap_pid" 2>/dev/null && wait "$hap_pid" 2>/dev/null
  if [[ -f $work/pg/data/postmaster.pid ]]; then
    as_pg "$PG_BINDIR/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 ||
      kill -9 "$(head -1 "$work/pg/data/postmaster.pid")" 2>/dev/null
  fi
  if [[ $passed != yes ]]; then
    mkdir -p target/e2e-scaleout && cp "$work"/*.log "$work"/pg/*.log target/e2e-scaleout/ 2>/dev/null
    echo "scaleout: logs kept in target/e2e-scaleout/ (instances, HAProxy, PostgreSQL)" >&2
  fi
  rm -rf "$work"
  return $rc
}
trap cleanup EXIT

read -r pg_port hap_port p1 p2 p3 < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# ---- PostgreSQL: superuser over the socket only; the service's role over TCP, by password ----
t=$(date +%s%N)
as_pg "$PG_BINDIR/initdb" -D "$work/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
pg_opts="-k $work/pg -c listen_addresses=127.0.0.1 -p $pg_port"
as_pg "$PG_BINDIR/pg_ctl" -D "$work/pg/data" -l "$work/pg/postgres.log" -w -o "$pg_opts" start >/dev/null
# What README "Scale out" tells an operator to run: a login role that is no superuser
# and owns one database (and, on PostgreSQL 15, that database's public schema).
as_pg "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$work/pg" -p "$pg_port" -d postgres <<'SQL'
CREATE ROLE dashboard LOGIN PASSWORD 'e2e-secret' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE dashboard OWNER dashboard;
REVOKE ALL ON DATABASE dashboard FROM PUBLIC;
SQL
echo "scaleout: PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port," \
  "role dashboard (no superuser) owns database dashboard ($((($(date +%s%N) - t) / 1000000)) ms)"

# ---- HAProxy: packaging/examples/haproxy.cfg itself, its backend dashboard_cluster ----
# The file operators copy, with only what this box needs changed: the stats socket
# for the script instead of syslog, the frontend's port, the cluster backend as the
# default, its checks every 500 ms instead of 1 s (a shorter run), the three servers
# here, and a header naming the instance that answered (for the transcript).
example=packaging/examples/haproxy.cfg
grep -q '^backend dashboard_cluster' "$example" || fail "$example has no backend dashboard_cluster"
sed -e "s|^    log /dev/log local0\$|    stats socket $work/haproxy.sock mode 600 level admin|" \
  -e "s|^    bind :80\$|    bind 127.0.0.1:$hap_port|" \
  -e 's|^    default_backend dashboard_backend$|    default_backend dashboard_cluster|' \
  -e '/^backend dashboard_cluster/,$ s|^    default-server inter 1s |    default-server inter 500ms |' \
  -e '/^backend dashboard_cluster/,$ s|^\(    http-request disable-l7-retry if METH_POST\)$|\1\n    http-response set-header X-Served-By %[srv_name]|' \
  -e "s|^    server app1 10.0.0.11:3000 check\$|    server app1 127.0.0.1:$p1 check|" \
  -e "s|^    server app2 10.0.0.12:3000 check\$|    server app2 127.0.0.1:$p2 check|" \
  -e "s|^    server app3 10.0.0.13:3000 check\$|    server app3 127.0.0.1:$p3 check|" \
  "$example" >"$work/haproxy.cfg"
# Every substitution must have hit: a changed example file fails here, not later.
for want in "stats socket $work/haproxy.sock" "bind 127.0.0.1:$hap_port" "default_backend dashboard_cluster" \
  "inter 500ms" "X-Served-By" "127.0.0.1:$p1 check" "127.0.0.1:$p2 check" "127.0.0.1:$p3 check"; do
  grep -qF "$want" "$work/haproxy.cfg" || fail "could not adapt $example: no '$want' after the edits"
done
diff -u "$example" "$work/haproxy.cfg" | sed -n 's/^[-+]    /  &/p' || true
haproxy -c -q -f "$work/haproxy.cfg" || fail "haproxy rejects the test configuration"
haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
hap_pid=$!
for _ in $(seq 100); do [[ -S $work/haproxy.sock ]] && break; sleep 0.05; done
[[ -S $work/haproxy.sock ]] || fail "HAProxy did not start: $(cat "$work/haproxy.log")"
echo "scaleout: HAProxy $(haproxy -v | awk 'NR==1{print $3}') on 127.0.0.1:$hap_port -> app1 :$p1, app2 :$p2, app3 :$p3"

export BIN WORK=$work APP_PORTS="$p1 $p2 $p3" HAPROXY_PORT=$hap_port HAPROXY_SOCK=$work/haproxy.sock \
  DATABASE_URL="postgres://dashboard:e2e-secret@127.0.0.1:$pg_port/dashboard?sslmode=disable" \
  PG_CTL=$PG_BINDIR/pg_ctl PGDATA=$work/pg/data PG_LOG=$work/pg/postgres.log PG_OPTS="$pg_opts"
python3 scripts/e2e_scaleout.py

# ---- backup on PostgreSQL (README "Scale out"): pg_dump by `backup`, then the README's
# pg_restore, as the service's role, into a new database it owns ----
t=$(date +%s%N)
mkdir -p "$work/state"
dump=$(DATABASE_PATH=$work/state/dashboard.db "$BIN" backup --dir "$work/backups" 2>"$work/backup.log")
[[ $dump == */dashboard-*.dump && -s $dump ]] || fail "backup did not write a dump ($dump)"
sql() { as_pg "$PG_BINDIR/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h "$work/pg" -p "$pg_port" "$@"; }
sql -d postgres -c 'CREATE DATABASE restored OWNER dashboard'
PGPASSWORD=e2e-secret "$PG_BINDIR/pg_restore" --clean --if-exists --no-owner -h 127.0.0.1 -p "$pg_port" \
  -U dashboard -d restored "$dump" || fail "pg_restore of $dump"
count="SELECT (SELECT count(*) FROM tasks) || ' tasks, ' || (SELECT count(*) FROM events) || ' events'"
[[ $(sql -d restored -c "$count") == "$(sql -d dashboard -c "$count")" ]] ||
  fail "restored database differs: $(sql -d restored -c "$count") vs $(sql -d dashboard -c "$count")"
echo "scaleout: ok   backup: pg_dump $(($(stat -c %s "$dump") / 1024)) KiB, pg_restore as role dashboard into a new" \
  "database: $(sql -d restored -c "$count"), as in the source ($((($(date +%s%N) - t) / 1000000)) ms)"
passed=yes
echo "scaleout: passed, $SECONDS s in all"
