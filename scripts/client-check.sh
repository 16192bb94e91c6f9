#!/usr/bin/env bash
# client-check.sh — generates a Python client from the served /openapi.json with a
# pinned openapi-python-client and runs the README walk-through through it
# (scripts/client_workflow.py): a document that a generator cannot turn into a
# working client fails here (issue #18). Installs into a venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
GENERATOR=openapi-python-client==0.29.1
venv=target/client-venv
if [[ $("$venv/bin/openapi-python-client" --version 2>/dev/null) != *" ${GENERATOR#*==}" ]]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "$GENERATOR"
fi
cargo build -q
. scripts/temp-server.sh
start_server target/debug/dashboard-backend
# The generator runs ruff on its output; it lives in the venv.
PATH=$PWD/$venv/bin:$PATH "$venv/bin/openapi-python-client" generate --url "$url/openapi.json" \
  --meta none --output-path "$work/dashboard_backend_client" >"$work/gen.txt" 2>&1 ||
  { cat "$work/gen.txt" >&2; exit 1; }
if grep -qi "warning" "$work/gen.txt"; then
  echo "client-check: the generator warned:" >&2; cat "$work/gen.txt" >&2; exit 1
fi
"$venv/bin/python" scripts/client_workflow.py "$url" "$key" "$work"
if server_logged_5xx; then echo "client-check: the server logged a 5xx" >&2; exit 1; fi
