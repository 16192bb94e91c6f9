#!/usr/bin/env bash
# smoke.sh — the README walk-through against a real server: create a key, a project
# and tasks, claim one, heartbeat, complete it, read stats and events. Exits non-zero
# on the first unexpected answer. Uses the debug build unless BIN is set.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug/dashboard-backend}
[[ -x $BIN ]] || cargo build -q
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export DATABASE_PATH=$work/data/dashboard.db PORT=0 HOST=127.0.0.1 SHUTDOWN_DRAIN_SECONDS=0
"$BIN" 2>"$work/log" &
pid=$!
for _ in $(seq 200); do grep -q 'listening on' "$work/log" && break; sleep 0.05; done
port=$(grep -o '"addr":"[^"]*"' "$work/log" | head -1 | sed 's/.*://; s/"//')
url=http://127.0.0.1:$port
key=$("$BIN" apikey create --name smoke --role write 2>/dev/null)
api() { curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@"; }
check() { [[ $1 == "$2" ]] || { echo "smoke: expected $2, got $1" >&2; exit 1; }; }

check "$(curl -fsS "$url/health/ready" | jq -r .status)" ready
project=$(api -d '{"name":"demo"}' "$url/projects" | jq .id)
api -d '[{"title":"write docs","priority":2},{"title":"ship","priority":9}]' "$url/projects/$project/tasks" >/dev/null
task=$(api -d '{"agent":"agent-1","lease_seconds":60}' "$url/projects/$project/tasks/claim")
check "$(jq -r .title <<<"$task")" ship
id=$(jq .id <<<"$task")
token=$(jq -r .lease_token <<<"$task")
check "$(api -d "{\"lease_token\":\"$token\"}" "$url/tasks/$id/heartbeat" | jq -r .assignee)" agent-1
check "$(api -d "{\"lease_token\":\"$token\",\"result\":{\"ok\":true}}" "$url/tasks/$id/complete" | jq -r .status)" completed
check "$(api "$url/projects/$project/stats" | jq .by_status.completed)" 1
check "$(api "$url/projects/$project/events" | jq -r '[.items[].type] | join(",")')" created,created,created,claimed,completed
kill -TERM "$pid"
wait "$pid"
pid=""
echo "smoke: ok (walk-through passed, clean exit)"
