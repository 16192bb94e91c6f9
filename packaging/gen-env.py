#!/usr/bin/env python3
"""gen-env.py BIN > env-file — the packaged environment file, generated from the
CONFIGURATION section of `BIN --help` so that it lists every variable the binary
knows, each commented out with its default. The unit already sets the packaged
paths (DATABASE_PATH, BACKUP_DIR, ACCESS_LOG, ENV_FILE); they are shown with those."""
import re
import subprocess
import sys

binary, env_file = sys.argv[1], sys.argv[2]
help_text = subprocess.run([binary, "--help"], check=True, capture_output=True, text=True).stdout
packaged = {
    "DATABASE_PATH": "/var/lib/dashboard/dashboard.db",
    "BACKUP_DIR": "/var/backups/dashboard",
    "ACCESS_LOG": "/var/log/dashboard-backend/access.log",
    "ENV_FILE": env_file,
}
# More than --help's one line, for the settings that need it (README "Scale out").
notes = {
    "DATABASE_URL": """Unset: SQLite at DATABASE_PATH. Set: every instance pointing at the same
database shares it (several behind HAProxy); migrations run at start. Forms:
  postgres://dashboard:PASSWORD@db.example.net:5432/dashboard?sslmode=verify-full&sslrootcert=/etc/dashboard-backend/db-ca.pem
  postgres://dashboard:PASSWORD@10.0.0.5/dashboard?sslmode=require
  postgres://dashboard@localhost/dashboard?host=/var/run/postgresql   (Unix socket)
The password is never printed, but this file is world-readable: keep the URL in a
root-only file instead (examples/postgres.conf, a drop-in for both units, shows
how; it also lets the backup's pg_dump reach the network).""",
    "TASK_RETENTION": """A background pruner deletes completed, failed and cancelled tasks this long
after they finished (cancelled: after their last change), with their events and
labels, in small batches; pending, in-progress and blocked tasks are never
deleted. Forms: 90d, 12h, 30m, 45s; 0 keeps every task. How big the database
gets for a given load and retention: README, "How big will my database get?".""",
    "EVENT_RETENTION": """Activity-feed events older than this are deleted by the same pruner (an
agent reading the feed with after= must keep up within this window). 0 keeps all.""",
}
print(f"""# {env_file}: settings of dashboard-backend (the server and the nightly backup).
# Read by systemd as the units' EnvironmentFile: KEY=VALUE lines, no `export`, no
# shell expansion. Uncomment and change what you need, then
#   systemctl restart dashboard-backend      (LOG_LEVEL alone: systemctl reload)
# Every variable the binary knows is below with its default; `dashboard-backend
# config` prints the effective values and where each came from. man dashboard-backend.
""")
in_config = False
for line in help_text.splitlines():
    if line.startswith("CONFIGURATION"):
        in_config = True
        continue
    if in_config and not line.strip():
        break
    if not in_config:
        continue
    name, desc = re.split(r"\s{2,}", line.strip(), maxsplit=1)
    m = re.search(r"\s*\[default: (.*)\]$", desc)
    default = m.group(1) if m else ""
    desc = desc[: m.start()] if m else desc
    if name in packaged:
        default = packaged[name]
        desc += " (set by the unit)"
    print(f"# {desc}")
    for note in notes.get(name, "").splitlines():
        print(f"# {note}".rstrip())
    print(f"#{name}={default}")
    print()
