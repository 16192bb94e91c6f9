#!/usr/bin/env python3
"""A minimal agent for dashboard-backend's work queue (README "Writing an agent").

    DASHBOARD_URL=http://127.0.0.1:3000 DASHBOARD_KEY=db_... PROJECT=1 python3 examples/agent.py

Claims a task, heartbeats while it works, then completes it (or fails it, to be
retried after a backoff). Every POST carries an Idempotency-Key, so a request
retried after a network error is answered once, not executed twice. Standard
library only.
"""
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

URL = os.environ.get("DASHBOARD_URL", "http://127.0.0.1:3000")
KEY = os.environ.get("DASHBOARD_KEY", "")
PROJECT = int(os.environ.get("PROJECT", "1"))
AGENT = os.environ.get("AGENT", f"{socket.gethostname()}-{os.getpid()}")
LEASE = 60  # seconds; heartbeat every LEASE / 3


class LeaseLost(Exception):
    """Someone else owns the task now: stop working on it, do not complete it."""


def post(path, body, key=None, retries=5):
    """POST with an Idempotency-Key; retries network errors and 503 with the same key."""
    key = key or str(uuid.uuid4())
    data = json.dumps(body).encode()
    for attempt in range(retries):
        req = urllib.request.Request(URL + path, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("Idempotency-Key", key)
        if KEY:
            req.add_header("Authorization", f"Bearer {KEY}")
        try:
            with urllib.request.urlopen(req, timeout=LEASE + 10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            err = json.loads(e.read() or b"{}").get("error", {})
            if e.code == 409 and err.get("code") == "lease_lost":
                raise LeaseLost(err.get("message"))
            if e.code in (429, 503) and attempt + 1 < retries:
                time.sleep(int(e.headers.get("Retry-After", "1")))
                continue
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt + 1 == retries:
                raise
            time.sleep(2**attempt)  # same key: a retry cannot run the request twice


def heartbeat(task_id, token, stop):
    while not stop.wait(LEASE / 3):
        try:
            post(f"/tasks/{task_id}/heartbeat", {"lease_token": token, "lease_seconds": LEASE})
        except LeaseLost:
            return  # the worker notices when it completes


def work(task):
    """Replace with the real work. Raise to fail the attempt."""
    time.sleep(1)
    return {"done_by": AGENT, "title": task["title"]}


def main():
    while True:
        # Long poll: the server answers as soon as a task is claimable (or 204 after 30 s).
        status, task = post(
            f"/projects/{PROJECT}/tasks/claim",
            {"agent": AGENT, "lease_seconds": LEASE, "wait_seconds": 30},
        )
        if status == 204:
            continue
        token = task["lease_token"]  # only in this answer: keep it
        stop = threading.Event()
        threading.Thread(target=heartbeat, args=(task["id"], token, stop), daemon=True).start()
        try:
            result = work(task)
            post(f"/tasks/{task['id']}/complete", {"lease_token": token, "result": result})
            print(f"completed {task['id']} (attempt {task['attempt']})", flush=True)
        except LeaseLost as e:
            print(f"lost {task['id']}: {e}; another agent has it", file=sys.stderr)
        except Exception as e:  # the attempt failed: retried after a backoff
            try:
                post(f"/tasks/{task['id']}/fail",
                     {"lease_token": token, "error": {"message": str(e)}, "retry": True})
            except LeaseLost:
                pass
        finally:
            stop.set()


if __name__ == "__main__":
    main()
