#!/usr/bin/env python3
"""gen-man.py BIN > dashboard-backend.8 — the man page, generated from `BIN --help`
and `BIN --version` so that it cannot drift from the binary it ships with. Only the
sections --help has no room for (files, signals, see also) are written here."""
import re
import subprocess
import sys

binary = sys.argv[1]
help_text = subprocess.run([binary, "--help"], check=True, capture_output=True, text=True).stdout
version = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True).stdout.split()[-1]
date = subprocess.run(["date", "-u", "-d", "@" + sys.argv[2] if len(sys.argv) > 2 else "now", "+%Y-%m-%d"],
                      check=True, capture_output=True, text=True).stdout.strip()


def esc(s: str) -> str:
    """Plain text to roff: backslashes, hyphens, and no control character first."""
    s = s.replace("\\", "\\e").replace("-", "\\-").replace("\u2014", "\\(em")
    return "\\&" + s if s[:1] in (".", "'") else s


lines = help_text.splitlines()
summary = lines[0].split("\u2014", 1)[1].strip() if "\u2014" in lines[0] else lines[0]
sections, current = {}, None
for line in lines[1:]:
    m = re.match(r"^([A-Z][A-Z ]+)(\s*\(.*\))?:\s*(.*)$", line)
    if m:
        current = m.group(1).strip()
        sections[current] = [m.group(3)] if m.group(3) else []
    elif current and line.strip():
        sections[current].append(line)

out = []
w = out.append
w(f'.TH DASHBOARD\\-BACKEND 8 "{date}" "dashboard\\-backend {version}" "System Administration"')
w(".SH NAME")
w(f"dashboard\\-backend \\- {esc(summary)}")
w(".SH SYNOPSIS")
usage = sections.get("USAGE", [])
for u in usage:
    cmd = re.split(r"\s{2,}", u.strip(), maxsplit=1)[0]
    w(".br")
    w(f".B {esc(cmd)}")
w(".SH DESCRIPTION")
w("One statically linked server for the task and project API of a multi\\-agent system,")
w("with its database (SQLite, WAL) embedded. It is meant to run under systemd")
w("(Type=notify, watchdog, socket activation) behind a load balancer that checks")
w(".BR /health/ready .")
w(".SH COMMANDS")
for u in usage:
    parts = re.split(r"\s{2,}", u.strip(), maxsplit=1)
    w(".TP")
    w(f".B {esc(parts[0])}")
    w(esc(parts[1]) if len(parts) > 1 else "")
w(".SH ENVIRONMENT")
w("Every setting is an environment variable, or the command\\-line flag of the same name")
w("in lower case with dashes (\\fB\\-\\-database\\-path\\fR for \\fBDATABASE_PATH\\fR). A bad value")
w("stops start\\-up with one sentence and exit status 78. Under systemd they are read")
w("from the package's environment file (see FILES).")
for v in sections.get("CONFIGURATION", []):
    parts = re.split(r"\s{2,}", v.strip(), maxsplit=1)
    w(".TP")
    w(f".B {esc(parts[0])}")
    w(esc(parts[1]) if len(parts) > 1 else "")
w(".SH DATA LIFECYCLE")
w("A background thread prunes finished tasks (completed, failed, cancelled) older than")
w("\\fBTASK_RETENTION\\fR, with their events and labels, and events older than")
w("\\fBEVENT_RETENTION\\fR, in batches of a few hundred rows so requests never wait")
w("behind it; pending, in\\-progress and blocked tasks are never pruned. Each run is")
w("logged with its counts and counted in \\fBtasks_pruned_total\\fR and")
w("\\fBevents_pruned_total\\fR. SQLite reuses the freed pages (\\fBdb_free_pages\\fR), so")
w("under a steady load the file stops growing after one retention window; it does")
w("not shrink by itself: \\fBdashboard\\-backend db vacuum\\fR (service stopped) gives the")
w("space back. On PostgreSQL autovacuum reclaims it (\\fBdb_dead_tuples\\fR).")
w(".SH SIGNALS")
w(".TP\n.B SIGTERM, SIGINT")
w("Report not ready for SHUTDOWN_DRAIN_SECONDS, stop accepting, finish in\\-flight requests")
w("within SHUTDOWN_TIMEOUT_SECONDS, checkpoint the WAL, exit 0.")
w(".TP\n.B SIGHUP")
w("Reopen ACCESS_LOG (for logrotate) and re\\-read LOG_LEVEL from ENV_FILE.")
w(".SH EXIT STATUS")
for e in sections.get("EXIT CODES", []):
    w(esc(e.strip()))
w(".SH FILES")
for path, what in [
    ("/etc/default/dashboard\\-backend, /etc/sysconfig/dashboard\\-backend",
     "the environment file (Debian, RPM systems); every variable above, commented out"),
    ("/var/lib/dashboard/dashboard.db", "the database (with \\-wal and \\-shm beside it)"),
    ("/var/backups/dashboard/", "nightly backups, written by dashboard\\-backend\\-backup.timer"),
    ("/var/log/dashboard\\-backend/access.log", "the access log, rotated by /etc/logrotate.d/dashboard\\-backend"),
    ("/usr/share/doc/dashboard\\-backend/examples/", "HAProxy, Prometheus and Grafana configuration"),
]:
    w(f".TP\n.I {path}\n{what}")
w(".SH SEE ALSO")
w(".BR systemctl (1),")
w(".BR journalctl (1),")
w(".BR systemd.service (5),")
w(".BR logrotate (8),")
w(".BR haproxy (1)")
print("\n".join(out))
