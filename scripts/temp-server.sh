# temp-server.sh — sourced by the contract scripts: `start_server BIN` runs BIN on a
# fresh database in its own temp dir on a free port with a write key, and sets
# $url, $key, $work; `stop_server` ends it and removes the dir (also on EXIT).
# Rate limiting is off: the scripts fire thousands of requests on purpose.

start_server() {
  work=$(mktemp -d)
  DATABASE_PATH=$work/d.db HOST=127.0.0.1 PORT=0 RATE_LIMIT_PER_MINUTE=0 SHUTDOWN_DRAIN_SECONDS=0
  export DATABASE_PATH HOST PORT RATE_LIMIT_PER_MINUTE SHUTDOWN_DRAIN_SECONDS
  key=$("$1" apikey create --name contract 2>/dev/null)
  "$1" 2>"$work/log" &
  server_pid=$!
  trap stop_server EXIT
  for _ in $(seq 200); do grep -q 'listening on' "$work/log" && break; sleep 0.05; done
  url=http://$(grep -o '"addr":"[^"]*"' "$work/log" | head -1 | cut -d'"' -f4)
  [[ $url != http:// ]] || { echo "the server did not start:" >&2; cat "$work/log" >&2; return 1; }
}

# The server logged a 5xx: a failure whatever the client saw.
server_logged_5xx() { grep -q '"status":5[0-9][0-9]' "$work/log"; }

stop_server() {
  if [[ -n ${server_pid:-} ]]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; fi
  server_pid=""
  [[ -n ${work:-} ]] && rm -rf "$work"
  work=""
}
