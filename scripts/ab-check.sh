#!/usr/bin/env bash
# ab-check.sh [BIN] — Apache Bench over HTTP/1.0 against a temporary server, with
# and without keep-alive (-k): every one of 2 000 requests must complete, none fail
# (issue #18 item 1: HTTP/1.0 keep-alive used to hang `ab -k` at 0 of 2 000).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/dashboard-backend}
command -v ab >/dev/null || { echo "ab-check: ab missing (apt-get install apache2-utils)" >&2; exit 69; }
# shellcheck source=scripts/temp-server.sh
. scripts/temp-server.sh
start_server "$bin"
fail=0
for mode in "" "-k"; do
  out=$(timeout 120 ab $mode -n 2000 -c 50 -s 10 "$url/health/ready" 2>&1) || true
  complete=$(awk '/^Complete requests:/ {print $3}' <<<"$out")
  failed=$(awk '/^Failed requests:/ {print $3}' <<<"$out")
  keepalive=$(awk '/^Keep-Alive requests:/ {print $3}' <<<"$out")
  echo "ab-check: ab ${mode:-(no -k)} -n 2000 -c 50: complete ${complete:-0}, failed ${failed:-?}${keepalive:+, keep-alive $keepalive}"
  [[ ${complete:-0} == 2000 && ${failed:-1} == 0 ]] || fail=1
done
if server_logged_5xx; then echo "ab-check: the server logged a 5xx" >&2; fail=1; fi
exit $fail
