#!/usr/bin/env bash
# Layering check (issue #14): calls go one way,
#   main → cli → server → http → router → api → store → model,
# with leaf modules anyone may import at the bottom. For each top-level module
# (src/<m>.rs and src/<m>/**) this collects the `crate::<x>` paths it names, outside
# comments and #[cfg(test)] modules/files (tests may reach anywhere), and fails,
# naming file:line, when a module imports one declared above it. On success it
# prints the dependency table. A new top-level module must be placed in LAYERS.
# It also fails when any file under src/ outside src/store/ names rusqlite (comments
# and tests included, like `grep -rn rusqlite src | grep -v '^src/store/'`): SQLite,
# its administration included, stays inside its backend (issue #14).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys

# Top to bottom. A module may import only modules listed after it.
LAYERS = [
    ("main",      "the binary: argv → cli::run → exit code"),
    ("cli",       "argv → command; per-command errors → exit codes"),
    ("server",    "serve: open store, bind, workers, signals, drain"),
    ("watchdog",  "systemd watchdog: probes the listener and the writer"),
    ("sweeper",   "background lease sweeps over the store"),
    ("pruner",    "background retention pruning over the store (SPEC §5c)"),
    ("restore",   "restore command (SQLite file swap)"),
    ("http",      "workers, pipeline, App (the server's state), CORS, rate limit"),
    ("router",    "route table: method + template → handler, access"),
    ("api",       "handlers: Call (store, actor, params, request) → Response"),
    ("live",      "parked claims and event streams, answered off the workers (SPEC §9)"),
    ("wire",      "Request, Response, Method, path Params: what router and api share"),
    ("lifecycle", "server phase and in-flight count"),
    ("validate",  "request body validation"),
    ("error",     "ApiError, the error envelope; From<StoreError>"),
    ("health",    "health checks cached around the store"),
    ("backup",    "backup command, file naming, retention, record"),
    ("logging",   "log setup, access log"),
    ("config",    "environment/flags → Config"),
    ("store",     "the Store interface and its SQLite/PostgreSQL backends"),
    ("model",     "domain types"),
    # Leaves: import no layer above, anyone may import them.
    ("metrics",   "leaf: counters and histograms, route/method as plain values"),
    ("changes",   "leaf: committed changes announced by the store to a listener"),
    ("sys",       "leaf: process metrics, sockets, limits"),
    ("cache",     "leaf: small TTL cache"),
    ("net",       "leaf: addresses and CIDRs"),
    ("auth",      "leaf: key generation, hashing, constant-time compare"),
    ("systemd",   "leaf: sd_notify messages, start-timeout extension"),
    ("exit",      "leaf: sysexits codes"),
    ("clock",     "leaf: time"),
]
RANK = {m: i for i, (m, _) in enumerate(LAYERS)}

# Upward imports left in files that were being rewritten on another branch when this
# check came in: printed as warnings, not failures. Delete each entry with its fix
# (here `use crate::http::response::Response` → `use crate::wire::Response`); an entry
# that no longer matches anything fails the check, so the list cannot go stale.
PENDING = set()

def is_test_file(path):
    b = os.path.basename(path)
    return b == "tests.rs" or b.endswith("_tests.rs")

def code_lines(path):
    """(line number, text) outside comments and #[cfg(test)] items."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i, n = 0, len(lines)
    while i < n:
        s = lines[i].strip()
        if s.startswith("#[cfg(test)]"):
            # Skip the next item: a one-line `mod x;` or a braced block.
            j = i + 1
            while j < n and lines[j].strip().startswith("#["):
                j += 1
            depth, started = 0, False
            while j < n:
                t = re.sub(r"//.*", "", lines[j])
                depth += t.count("{") - t.count("}")
                started = started or "{" in t
                if (started and depth <= 0) or (not started and t.rstrip().endswith(";")):
                    break
                j += 1
            i = j + 1
            continue
        yield i + 1, re.sub(r"//.*", "", lines[i])
        i += 1

# `crate::x`, or `dashboard_backend::x` in the binary (main.rs uses the library).
PATH = re.compile(r"(?<![\w$])(?:crate|dashboard_backend)::(\{[^}]*\}?|\w+)")

def imports(path):
    text = list(code_lines(path))
    joined = "\n".join(t for _, t in text)
    # Grouped imports may span lines: resolve each `crate::{…}` to its members.
    for no, t in text:
        for m in PATH.finditer(t):
            g = m.group(1)
            if g.startswith("{"):
                start = sum(len(x) + 1 for _, x in text[: [k for k, _ in text].index(no)]) + m.start()
                body = joined[start:].split("{", 1)[1].split("}", 1)[0]
                for name in re.findall(r"(?:^|,)\s*(\w+)", body):
                    yield no, name
            else:
                yield no, g

def module_of(rel):
    parts = rel.split("/")
    return parts[0][:-3] if len(parts) == 1 else parts[0]

errors, warnings, table, unknown, pending_seen = [], [], {}, set(), set()
for root, _, files in os.walk("src"):
    for f in sorted(files):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        rel = os.path.relpath(path, "src")
        mod = module_of(rel)
        if mod == "lib" or is_test_file(path):
            continue
        if mod not in RANK:
            unknown.add(mod)
            continue
        for no, dep in imports(path):
            if dep in ("self", "super") or dep == mod:
                continue
            if dep not in RANK:
                unknown.add(dep)
                continue
            table.setdefault(mod, set()).add(dep)
            if RANK[dep] < RANK[mod]:
                msg = f"{path}:{no}: {mod} imports {dep}, which is above it"
                if (path, dep) in PENDING:
                    pending_seen.add((path, dep))
                    warnings.append(msg + " (pending, see PENDING)")
                else:
                    errors.append(msg)
for path, dep in sorted(PENDING - pending_seen):
    errors.append(f"{path}: no longer imports {dep} upward; remove it from PENDING")
# The SQLite engine's types stay in the store: backup, restore and the CLI go through
# store::sqlite::{admin, maintenance, migrate}.
for root, _, files in os.walk("src"):
    for f in sorted(files):
        path = os.path.join(root, f)
        if path.startswith(os.path.join("src", "store") + os.sep):
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            for no, line in enumerate(fh, 1):
                if "rusqlite" in line:
                    errors.append(f"{path}:{no}: names rusqlite outside src/store/ (use store::sqlite::{{admin, maintenance, migrate}})")
for w in warnings:
    print("layering-check: warning: " + w, file=sys.stderr)
for u in sorted(unknown):
    errors.append(f"src/{u}: module not placed in LAYERS of scripts/layering-check.sh")
if errors:
    print("layering-check: upward imports or rusqlite outside src/store/ (order: " + " → ".join(m for m, _ in LAYERS) + ")", file=sys.stderr)
    for e in errors:
        print("  " + e, file=sys.stderr)
    sys.exit(1)
print("layering-check: ok — each module imports only modules below it; rusqlite only in src/store/")
print(f"  {'module':<10} imports")
for m, what in LAYERS:
    deps = sorted(table.get(m, ()), key=lambda d: RANK[d])
    print(f"  {m:<10} {', '.join(deps) or '-'}")
PY
