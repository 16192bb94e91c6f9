#!/usr/bin/env bash
# e2e-systemd.sh — the units under a real systemd (../shared/tools/systemd-lab.sh,
# nspawn). Installs the static binary (scripts/build-static.sh), units, sysusers and tmpfiles by hand (the
# .deb/.rpm packaging is not built yet) and proves: active only after READY with
# /health/ready answering; our STATUS line; systemd-analyze verify clean; watchdog
# restart after SIGSTOP; reload reopens the access log; the backup service leaves a
# verified backup and the metric moves; socket activation and a restart under a
# request loop that fails no request; the security exposure score.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LAB:-../shared/tools/systemd-lab.sh}
# The static binary: the lab has none of our libraries.
BIN=${BIN:-target/static/dashboard-backend}
[[ -x $BIN ]] || scripts/build-static.sh
pass() { printf 'e2e: ok   %s\n' "$*"; }
fail() { printf 'e2e: FAIL %s\n' "$*" >&2; exit 1; }
trap '"$L" down >/dev/null 2>&1 || true' EXIT
"$L" up >/dev/null
"$L" copy "$BIN" /usr/bin/dashboard-backend
for f in dashboard-backend.service dashboard-backend.socket dashboard-backend-backup.service dashboard-backend-backup.timer; do
  "$L" copy "systemd/$f" /etc/systemd/system/
done
"$L" copy systemd/dashboard-backend.sysusers /usr/lib/sysusers.d/dashboard-backend.conf
"$L" copy systemd/dashboard-backend.tmpfiles /usr/lib/tmpfiles.d/dashboard-backend.conf
"$L" exec systemd-sysusers
"$L" exec systemd-tmpfiles --create
"$L" exec systemctl daemon-reload
units=(/etc/systemd/system/dashboard-backend.service /etc/systemd/system/dashboard-backend.socket
  /etc/systemd/system/dashboard-backend-backup.service /etc/systemd/system/dashboard-backend-backup.timer)
"$L" exec systemd-analyze verify "${units[@]}" || fail "systemd-analyze verify"
pass "systemd-analyze verify"

"$L" exec systemctl start dashboard-backend.service # returns once READY=1 arrived
[[ $("$L" exec systemctl is-active dashboard-backend.service) == active ]] || fail "service not active"
[[ $("$L" net curl -fsS http://127.0.0.1:3000/health/ready) == *'"ready"'* ]] || fail "/health/ready"
pass "active after READY=1, /health/ready answers at once"
"$L" exec systemctl status dashboard-backend.service --no-pager | grep -q 'Status: "listening on' || fail "STATUS line"
pass "systemctl status shows our STATUS line"

"$L" net curl -fsS -o /dev/null http://127.0.0.1:3000/projects -H 'Authorization: Bearer x' || true
"$L" exec mv /var/log/dashboard-backend/access.log /var/log/dashboard-backend/access.log.1
"$L" exec systemctl reload dashboard-backend.service
"$L" net curl -s -o /dev/null http://127.0.0.1:3000/projects || true
"$L" exec test -s /var/log/dashboard-backend/access.log || fail "reload did not reopen the access log"
pass "systemctl reload reopens the access log"

before=$("$L" net curl -fsS http://127.0.0.1:3000/metrics | awk '/^backup_last_success_timestamp_seconds/ { print $2 }')
"$L" exec systemctl start dashboard-backend-backup.service || fail "backup service"
file=$("$L" exec sh -c 'ls /var/backups/dashboard/dashboard-*.db.gz | tail -1')
"$L" exec sh -c "gzip -dc $file > /tmp/check.db" # restore verifies integrity; here: it is SQLite
"$L" exec sh -c 'head -c 16 /tmp/check.db | grep -q "SQLite format 3"' || fail "backup is not a database"
after=$("$L" net curl -fsS http://127.0.0.1:3000/metrics | awk '/^backup_last_success_timestamp_seconds/ { print $2 }')
[[ $after != "$before" && $after != 0 ]] || fail "backup metric did not move ($before -> $after)"
pass "backup service left $file; backup_last_success_timestamp_seconds $before -> $after"
"$L" exec systemctl list-timers dashboard-backend-backup.timer --all --no-pager >/dev/null

"$L" exec sh -c 'kill -STOP "$(systemctl show -p MainPID --value dashboard-backend.service)"'
for _ in $(seq 60); do
  [[ $("$L" exec systemctl show -p NRestarts --value dashboard-backend.service) == 1 ]] && break
  sleep 0.5
done
[[ $("$L" exec systemctl show -p NRestarts --value dashboard-backend.service) == 1 ]] || fail "watchdog restart"
for _ in $(seq 50); do "$L" net curl -fsS http://127.0.0.1:3000/health/ready >/dev/null 2>&1 && break; sleep 0.2; done
"$L" net curl -fsS http://127.0.0.1:3000/health/ready >/dev/null || fail "not serving after the restart"
pass "kill -STOP: watchdog restarted it (NRestarts=1) and it serves again"

"$L" exec systemctl stop dashboard-backend.service
"$L" exec systemctl start dashboard-backend.socket
"$L" net curl -fsS http://127.0.0.1:3000/health/ready >/dev/null || fail "socket activation"
pass "socket activation starts the service on the first connection"
# A steady request loop across a restart: the kernel holds connections meanwhile.
"$L" net sh -c 'fails=0; n=0; end=$(($(date +%s) + 4)); while [ $(date +%s) -lt $end ]; do
    n=$((n + 1)); curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:3000/health/live || fails=$((fails + 1)); done
    echo "$n $fails"' >/tmp/e2e-loop.txt &
loop=$!
sleep 1
"$L" exec systemctl restart dashboard-backend.service
wait "$loop"
read -r n fails </tmp/e2e-loop.txt
((fails == 0 && n > 20)) || fail "restart under load: $fails of $n requests failed"
pass "systemctl restart under a request loop: $n requests, 0 failed"

score=$("$L" exec systemd-analyze security dashboard-backend.service --no-pager | awk '/Overall exposure level/ { print $(NF-2) }')
pass "systemd-analyze security: exposure $score"
