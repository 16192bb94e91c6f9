#!/usr/bin/env bash
# contract-fuzz.sh [MAX_EXAMPLES] — schemathesis against the served /openapi.json with a
# write key, every operation, every check: no 5xx, every response conforms to its
# schema (status codes, content types, headers). Installs schemathesis into a venv
# under target/ on first use. Exit non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-25}
venv=target/schemathesis-venv
[[ -x $venv/bin/schemathesis ]] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
cargo build -q
BIN=target/debug/dashboard-backend
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export DATABASE_PATH=$work/d.db HOST=127.0.0.1 PORT=0 RATE_LIMIT_PER_MINUTE=0 SHUTDOWN_DRAIN_SECONDS=0
key=$("$BIN" apikey create --name contract 2>/dev/null)
"$BIN" 2>"$work/log" &
pid=$!
for _ in $(seq 200); do grep -q 'listening on' "$work/log" && break; sleep 0.05; done
url=http://$(grep -o '"addr":"[^"]*"' "$work/log" | head -1 | cut -d'"' -f4)
# Some data to find: a project with a task.
curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"name":"contract"}' "$url/projects" >/dev/null
curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"title":"t"}' "$url/projects/1/tasks" >/dev/null
"$venv/bin/schemathesis" run "$url/openapi.json" -H "Authorization: Bearer $key" \
  --max-examples "$max" -c all --seed 1 >"$work/st.txt" 2>&1 || status=$?
grep -E '^(___|- ST|\[[0-9]|    curl)' "$work/st.txt" | cut -c1-300 | head -80 || true
grep -iE "operations|selected" "$work/st.txt" | cut -c1-200 || true
tail -6 "$work/st.txt" | cut -c1-200
if grep -q "\"status\":5[0-9][0-9]" "$work/log"; then echo "contract-fuzz: the server logged a 5xx" >&2; exit 1; fi
exit "${status:-0}"
