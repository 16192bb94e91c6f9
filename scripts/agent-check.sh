#!/usr/bin/env bash
# agent-check.sh [BIN] — runs examples/agent.py (the README's "Writing an agent")
# against a fresh server: three agents, 30 tasks of which some fail once; every task
# must end completed, none twice. Exit non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/dashboard-backend}
source scripts/temp-server.sh
start_server "$bin"
H=(-H "Authorization: Bearer $key" -H 'Content-Type: application/json')
curl -sf "${H[@]}" -d '{"name":"agents","retry_backoff_seconds":0}' "$url/projects" >/dev/null
tasks=$(python3 -c 'import json; print(json.dumps([{"title": f"t{i}", "metadata": {"flaky": i % 5 == 0}} for i in range(30)]))')
curl -sf "${H[@]}" -d "$tasks" "$url/projects/1/tasks" >/dev/null
# The example's work(): fail the first attempt of a flaky task, so retries are exercised.
cat >"$work/run.py" <<'PY'
import runpy, sys
agent = runpy.run_path("examples/agent.py", run_name="agent")
def work(task):
    if task["metadata"].get("flaky") and task["attempt"] == 1:
        raise RuntimeError("flaky first attempt")
    return {"title": task["title"]}
agent["work"] = work
agent["main"].__globals__["work"] = work
agent["main"]()
PY
pids=()
for i in 1 2 3; do
  DASHBOARD_URL=$url DASHBOARD_KEY=$key PROJECT=1 AGENT=agent-$i timeout 60 python3 "$work/run.py" \
    >"$work/agent-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 120); do
  done_n=$(curl -sf "${H[@]}" "$url/projects/1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["by_status"]["completed"])')
  [[ $done_n == 30 ]] && break
  sleep 0.5
done
kill "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" 2>/dev/null || true
completions=$(cat "$work"/agent-*.log | grep -c '^completed ' || true)
retried=$(curl -sf "${H[@]}" "$url/projects/1/events?limit=500" | python3 -c 'import json,sys; print(sum(e["type"] == "retried" for e in json.load(sys.stdin)["items"]))')
echo "agent-check: $done_n/30 completed, $completions completions logged, $retried retried"
[[ $done_n == 30 && $completions == 30 && $retried == 6 ]] || { tail -5 "$work"/agent-*.log; exit 1; }
! server_logged_5xx || { echo "the server answered a 5xx" >&2; exit 1; }
