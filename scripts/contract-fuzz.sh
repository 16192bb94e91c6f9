#!/usr/bin/env bash
# contract-fuzz.sh [MAX_EXAMPLES] [SEED...] — schemathesis against the served
# /openapi.json with a write key: every operation, every check, every phase
# (examples, coverage, fuzzing, and stateful, which follows the document's links
# create → get → claim → complete). No 5xx; every response conforms to its schema
# (status codes, content types, headers); schema-valid input is accepted and invalid
# input refused. Each seed runs against a fresh server and database. The one declared
# refusal a schema cannot express (a cursor this server never issued) is dropped by
# scripts/schemathesis_hooks.py; schemathesis.toml says which statuses count as
# accepting or refusing. Installs a pinned schemathesis into a venv under target/.
# Exit non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-25}
shift || true
seeds=("$@")
((${#seeds[@]})) || seeds=(1)
SCHEMATHESIS=schemathesis==4.32.5
venv=target/schemathesis-venv
if [[ $("$venv/bin/schemathesis" --version 2>/dev/null) != *" ${SCHEMATHESIS#*==}" ]]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "$SCHEMATHESIS"
fi
cargo build -q
BIN=target/debug/dashboard-backend
. scripts/temp-server.sh
export SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py
failed=()
for seed in "${seeds[@]}"; do
  start_server "$BIN"
  # Some data to find: a project with a task.
  curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"name":"contract"}' "$url/projects" >/dev/null
  curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"title":"t"}' "$url/projects/1/tasks" >/dev/null
  status=0
  "$venv/bin/schemathesis" run "$url/openapi.json" -H "Authorization: Bearer $key" \
    --phases examples,coverage,fuzzing,stateful --max-examples "$max" -c all --seed "$seed" \
    >"$work/st.txt" 2>&1 || status=$?
  echo "== seed $seed: exit $status"
  mkdir -p target/contract-fuzz && cp "$work/st.txt" "target/contract-fuzz/seed-$seed.txt"
  grep -E '^(___|- ST|\[[0-9]|    curl)' "$work/st.txt" | cut -c1-300 | head -80 || true
  grep -E 'API Links:|Filtered:|generated,' "$work/st.txt" | cut -c1-200 || true
  tail -2 "$work/st.txt" | cut -c1-200
  if server_logged_5xx; then echo "contract-fuzz: the server logged a 5xx" >&2; status=1; fi
  ((status == 0)) || failed+=("$seed")
  stop_server
done
if ((${#failed[@]})); then
  echo "contract-fuzz: failures with seed(s) ${failed[*]} (full reports: target/contract-fuzz/)" >&2
  exit 1
fi
echo "contract-fuzz: ${#seeds[@]} seed(s), 0 failures"
