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
    print(f"#{name}={default}")
    print()
