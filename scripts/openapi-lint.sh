#!/usr/bin/env bash
# openapi-lint.sh — Redocly lint of src/openapi.json as redocly.yaml configures it,
# with a pinned CLI through npx. Fails on any error or warning: each rule decision is
# written down in redocly.yaml, nothing is waved through here (issue #18 item 5).
set -euo pipefail
cd "$(dirname "$0")/.."
REDOCLY=@redocly/cli@2.77.0
command -v npx >/dev/null || { echo "openapi-lint: needs node and npm (npx) on PATH" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Exit status 1 means "problems found"; the totals below say which, so read them.
npx --yes "$REDOCLY" lint --config redocly.yaml --format=json >"$out" 2>/dev/null || true
totals=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["totals"]; print(t["errors"], t["warnings"])' "$out") ||
  { echo "openapi-lint: redocly gave no report" >&2; exit 1; }
read -r errors warnings <<<"$totals"
echo "openapi-lint: $REDOCLY: $errors errors, $warnings warnings"
if ((errors + warnings > 0)); then
  npx --yes "$REDOCLY" lint --config redocly.yaml --format=codeframe 2>/dev/null | tail -n 60 || true
  exit 1
fi
