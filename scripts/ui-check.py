#!/usr/bin/env python3
"""The dashboard page (SPEC §9, issue #16) in a real browser: Debian's chromium and
chromedriver, driven by Selenium.

    scripts/ui-check.py [--bin target/release/dashboard-backend] [--out target/ui]

Starts the server on a fresh database in a temp dir (ACCESS_LOG on), makes a read key
and a write key with the CLI, creates projects and tasks through the API with the
write key, then in the browser: GET / goes to /ui/; log in with the read key; the
projects and counts shown equal the API's; a task created through the API shows in
the live feed within 2 s without a reload; a task titled `<img src=x onerror=alert(1)>`
is text (no alert, no img element); status filter and paging work; the vitals show
health, request rate and p99; the console shows no errors; no request carries a key
in its URL (the browser's network log, the access log and the server log are
searched for it); a screenshot of each view goes to OUT. Then the same page on a
server with AUTH_DISABLED=true opens without asking for a key.

Exits 1 on any failure. Without chromium, chromedriver or selenium: fails when
CI=true, else prints "skipped" and exits 0.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

XSS = "<img src=x onerror=alert(1)>"
FAILURES = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILURES.append(what)
    return ok


def skip_or_fail(why):
    if os.environ.get("CI") == "true":
        print(f"FAIL {why} (required in CI; .ci/run installs it)", file=sys.stderr)
        sys.exit(1)
    print(f"skipped: {why}")
    sys.exit(0)


class Server:
    """The binary on a temp database, with keys and an access log."""

    def __init__(self, binary, extra_env=None):
        self.dir = tempfile.mkdtemp(prefix="ui-check-")
        self.env = dict(os.environ)
        self.env.update({
            "DATABASE_PATH": os.path.join(self.dir, "d.db"),
            "HOST": "127.0.0.1",
            "PORT": "0",
            "RATE_LIMIT_PER_MINUTE": "0",
            "SHUTDOWN_DRAIN_SECONDS": "0",
            "ACCESS_LOG": os.path.join(self.dir, "access.log"),
            "LOG_FORMAT": "json",
        })
        self.env.update(extra_env or {})
        self.binary = binary
        self.keys = {}
        if "AUTH_DISABLED" not in (extra_env or {}):
            for role in ("read", "write"):
                out = subprocess.run([binary, "apikey", "create", "--name", f"ui-check-{role}", "--role", role],
                                     env=self.env, capture_output=True, text=True, check=True)
                self.keys[role] = out.stdout.strip()
        self.log_path = os.path.join(self.dir, "server.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        self.url = None
        while time.time() < deadline and self.url is None:
            time.sleep(0.05)
            m = re.search(r'"addr":"([^"]+)"', open(self.log_path).read())
            if m:
                self.url = "http://" + m.group(1)
        if not self.url:
            raise SystemExit("the server did not start:\n" + open(self.log_path).read())

    def api(self, method, path, body=None, key="write", headers=None):
        h = {"Accept": "application/json"}
        if key and self.keys.get(key):
            h["Authorization"] = "Bearer " + self.keys[key]
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw

    def status_only(self, path):
        """The status of a GET, without reading the body (a stream never ends)."""
        import http.client
        host, port = self.url[len("http://"):].rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            c.request("GET", path, headers={"Authorization": "Bearer " + self.keys["read"],
                                            "Accept": "text/event-stream"})
            return c.getresponse().status
        finally:
            c.close()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def check_console(logs):
    """No error in the console. Chrome itself reports every non-2xx answer as a
    "network" error; one of those is the page working as designed and is allowed, by
    exact shape: the first keyless probe of /stats that tells whether auth is on (401)."""
    expected = [r"/stats - Failed to load resource: the server responded with a status of 401"]
    errors, allowed = [], []
    for e in logs:
        if e.get("level") != "SEVERE":
            continue
        ok = e.get("source") == "network" and any(re.search(x, e.get("message", "")) for x in expected)
        (allowed if ok else errors).append(e)
    check(not errors, f"the console shows no errors ({len(allowed)} expected HTTP answers reported by Chrome"
                      f"; errors: {errors[:5]})")


def seed(s):
    """Projects in several states; returns {name: id} and the ids of notable tasks."""
    ids = {}
    notable = {}
    specs = [
        ("ingest-pipeline", "Pulls the partner feeds every 5 minutes", 40),
        ("nightly-reports", "PDF reports for the finance team", 9),
        ("ml-retraining", "Weekly model refresh", 4),
    ]
    for name, desc, n in specs:
        code, p = s.api("POST", "/projects", {"name": name, "description": desc})
        assert code == 201, (code, p)
        ids[name] = p["id"]
        tasks = [{"title": f"{name} job {i + 1}", "priority": i % 4, "labels": ["batch"] if i % 3 == 0 else []}
                 for i in range(n)]
        code, created = s.api("POST", f"/projects/{p['id']}/tasks", tasks)
        assert code == 201, (code, created)
        items = created["items"] if isinstance(created, dict) else created
        # A spread of statuses: some done, some failed, some blocked, some claimed.
        for i, t in enumerate(items):
            status = ["completed", "completed", "pending", "failed", "blocked", "pending", "cancelled"][i % 7]
            if status == "pending":
                continue
            body = {"status": status}
            if status == "completed":
                body["result"] = {"rows": 1200 + i, "duration_ms": 8400 + 13 * i}
            code, _ = s.api("PATCH", f"/tasks/{t['id']}", body)
            assert code == 200, (code, _)
        for _ in range(min(3, n // 4)):
            code, _ = s.api("POST", f"/projects/{p['id']}/tasks/claim", {"agent": "agent-7", "lease_seconds": 600})
            assert code in (200, 204), code
        notable.setdefault("rich", items[0]["id"])
    code, p = s.api("POST", "/projects", {"name": "archive-2025", "description": "old runs"})
    ids["archive-2025"] = p["id"]
    s.api("PATCH", f"/projects/{p['id']}", {"status": "archived"})
    code, x = s.api("POST", f"/projects/{ids['nightly-reports']}/tasks",
                    {"title": XSS, "description": XSS, "labels": ["<b>x</b>"], "metadata": {"html": XSS}})
    assert code == 201, (code, x)
    notable["xss"] = x["id"]
    code, r = s.api("POST", f"/projects/{ids['ingest-pipeline']}/tasks",
                    {"title": "Import partner feed 2026-11-30", "priority": 5, "labels": ["feeds", "partner-a"],
                     "metadata": {"partner": "a", "files": 14, "source": "sftp://feeds/a"}})
    rich = r["id"]
    s.api("PATCH", f"/tasks/{rich}", {"status": "in_progress", "assignee": "agent-3"})
    s.api("PATCH", f"/tasks/{rich}", {"status": "completed",
                                       "result": {"rows_imported": 48211, "rejected": 3, "duration_ms": 91342}})
    notable["rich"] = rich
    return ids, notable


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=None)
    ap.add_argument("--out", default="target/ui")
    args = ap.parse_args()
    binary = args.bin or next((b for b in ("target/release/dashboard-backend", "target/debug/dashboard-backend")
                               if os.path.exists(b)), None)
    if not binary:
        raise SystemExit("no binary: cargo build first, or pass --bin")

    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        skip_or_fail("chromium and chromium-driver are not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        skip_or_fail("the selenium Python package is not installed")

    os.makedirs(args.out, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="ui-check-chromium-")

    def browser(width=1600, height=1000):
        o = webdriver.ChromeOptions()
        o.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={width},{height}",
                  f"--user-data-dir={tempfile.mkdtemp(dir=profile)}"):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        o.set_capability("unhandledPromptBehavior", "ignore")
        d = webdriver.Chrome(options=o, service=Service(executable_path=driver_path))
        # Any alert/confirm/prompt is recorded (the page never calls them).
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "window.__dialogs = [];"
            "for (const f of ['alert', 'confirm', 'prompt'])"
            " window[f] = (...a) => { window.__dialogs.push([f, String(a[0])]); };")})
        d.set_script_timeout(10)
        return d

    def wait(what, f, timeout=10.0, step=0.05):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                last = f()
                if last:
                    return last
            except Exception as e:  # a node replaced mid-read: try again
                last = e
            time.sleep(step)
        check(False, f"{what} (within {timeout} s; last: {last!r})")
        return None

    def click(by, sel):
        # Into the middle of the screen first (the sticky top bar would take the click);
        # found again if a refresh replaced it in between.
        from selenium.common.exceptions import StaleElementReferenceException
        for attempt in range(5):
            try:
                el = d.find_element(by, sel)
                d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
                el.click()
                return
            except StaleElementReferenceException:
                if attempt == 4:
                    raise
                time.sleep(0.1)

    def rows():
        return d.execute_script("return [...document.querySelectorAll('tbody tr[data-task-id]')].map(r => r.dataset.taskId)")

    def in_feed(task_id):
        # One round trip: a WebDriver call per row would be slower than the feed itself.
        return d.execute_script("return !!document.querySelector(`#feed li[data-task-id='${arguments[0]}']`)", task_id)

    def shot(d, name):
        path = os.path.join(args.out, name)
        d.save_screenshot(path)
        print(f"     screenshot {path}")

    s = Server(binary)
    d = None
    try:
        ids, notable = seed(s)
        read_key, write_key = s.keys["read"], s.keys["write"]
        # The live feed reads the server's event stream (SPEC §9); a 404 here means
        # the page would fall back to polling, and the stream checks below prove nothing.
        stream = s.status_only(f"/projects/{ids['ml-retraining']}/events/stream")
        check(stream != 404, f"the server serves the event stream ({stream})")
        d = browser()

        # GET / in a browser lands on the page, which asks for a key.
        d.get(s.url + "/")
        check(d.current_url == s.url + "/ui/", f"GET / redirects a browser to /ui/ ({d.current_url})")
        wait("the login form shows", lambda: d.find_element(By.ID, "key").is_displayed())
        shot(d, "login.png")
        d.find_element(By.ID, "key").send_keys(read_key)
        click(By.CSS_SELECTOR, "#login-form button")

        # The overview: every project and its counts, as the API has them.
        def overview_matches():
            code, stats = s.api("GET", "/stats", key="read")
            want = {st["project_id"]: st for st in stats["items"]}
            cards = d.find_elements(By.CSS_SELECTOR, "#projects .card[data-project-id]")
            seen = {}
            for c in cards:
                pid = int(c.get_attribute("data-project-id"))
                per = {e.get_attribute("data-status"): int(e.find_element(By.TAG_NAME, "b").text.replace(",", ""))
                       for e in c.find_elements(By.CSS_SELECTOR, ".mc[data-status]")}
                total = int(c.find_element(By.CSS_SELECTOR, "[data-total]").text.replace(",", ""))
                seen[pid] = (total, per)
            if set(seen) != set(want) or not seen:
                return False
            for pid, st in want.items():
                per = {k: int(st["by_status"].get(k, 0)) for k in seen[pid][1]}
                if seen[pid] != (st["total"], per):
                    return False
            return seen
        got = wait("the overview shows every project with the API's counts", overview_matches)
        if got:
            check(len(got) == len(ids), f"{len(got)} project cards for {len(ids)} projects, counts equal /stats")
        wait("the vitals show a request rate", lambda: re.match(r"^\d", d.find_element(
            By.CSS_SELECTOR, "[data-vital=rps] .v").text))
        p99 = wait("the vitals show a p99 latency", lambda: "ms" in d.find_element(
            By.CSS_SELECTOR, "[data-vital=p99] .v").text and d.find_element(By.CSS_SELECTOR, "[data-vital=p99] .v").text)
        health = d.find_element(By.CSS_SELECTOR, "[data-vital=health] .v").text
        check(health == "ok", f"health shows ok ({health!r}); p99 shows {p99!r}")
        # Numbers update without a reload: a new task shows in the totals.
        marker = d.execute_script("window.__noReload = 1; return window.__noReload")
        total_of = lambda pid: d.execute_script(  # noqa: E731  (one call: cards are re-rendered)
            "const e = document.querySelector(`.card[data-project-id='${arguments[0]}'] [data-total]`);"
            "return e && e.textContent", pid)
        before = total_of(ids["ml-retraining"])
        s.api("POST", f"/projects/{ids['ml-retraining']}/tasks", {"title": "refresh embeddings"})
        wait("the overview's numbers follow the API without a reload",
             lambda: total_of(ids["ml-retraining"]) == str(int(before) + 1), timeout=8)
        check(marker == 1 and d.execute_script("return window.__noReload") == 1, "the overview was not reloaded")
        shot(d, "overview.png")

        # A project: table, filter, paging, live feed.
        pid = ids["ingest-pipeline"]
        click(By.CSS_SELECTOR, f'.card[data-project-id="{pid}"]')
        wait("the project's task table fills", lambda: len(rows()) == 25)
        wait("the project's feed is live", lambda: "live" in d.find_element(By.CSS_SELECTOR, ".activity .live").text)
        feed_mode = d.find_element(By.CSS_SELECTOR, ".activity .live").text
        first_page = rows()
        click(By.XPATH, "//button[contains(., 'Next')]")
        wait("paging: the second page shows other tasks", lambda: (lambda r: r and not set(r) & set(first_page))(rows()))
        click(By.XPATH, "//button[contains(., 'Previous')]")
        wait("paging: back to the first page", lambda: rows() == first_page)
        click(By.CSS_SELECTOR, 'button.count[data-status="completed"]')
        code, page = s.api("GET", f"/projects/{pid}/tasks?status=completed&sort=priority&limit=25", key="read")
        want_ids = [str(t["id"]) for t in page["items"]]
        wait("the status filter shows the API's completed tasks", lambda: rows() == want_ids)
        statuses = set(d.execute_script("return [...document.querySelectorAll('tbody tr .badge')].map(b => b.textContent)"))
        check(statuses == {"completed"}, f"filtered rows are all completed ({statuses})")
        click(By.CSS_SELECTOR, 'button.count[data-status="completed"]')

        title = f"live check {time.time():.3f}"
        t0 = time.time()
        code, t = s.api("POST", f"/projects/{pid}/tasks", {"title": title, "priority": 9})
        found = wait("a task created through the API appears in the live feed",
                     lambda: in_feed(t["id"]), timeout=2.0, step=0.02)
        dt = time.time() - t0
        check(bool(found) and dt <= 2.0, f"the new task is in the live feed after {dt:.2f} s ({feed_mode}), no reload")
        check(d.execute_script("return window.__noReload") == 1, "the project view was not reloaded")
        wait("its title fills in", lambda: title in d.execute_script(
            "return [...document.querySelectorAll('#feed .etitle')].map(e => e.textContent)"), timeout=3)
        for i in range(3):  # a little more activity for the screenshot
            code, c = s.api("POST", f"/projects/{pid}/tasks/claim", {"agent": f"agent-{i + 1}", "lease_seconds": 300})
        time.sleep(2.5)
        shot(d, "project.png")

        # The XSS title, as text, everywhere it shows.
        xid = notable["xss"]
        d.get(s.url + f"/ui/#/projects/{ids['nightly-reports']}")
        cell = wait("the hostile title shows in the table", lambda: d.find_element(
            By.CSS_SELECTOR, f'tr[data-task-id="{xid}"] td.title a'))
        check(cell is not None and cell.text == XSS, f"the hostile title is shown as text in the table ({cell and cell.text!r})")
        wait("and in the feed", lambda: XSS in d.execute_script(
            "return [...document.querySelectorAll('#feed .etitle')].map(e => e.textContent)"))
        d.get(s.url + f"/ui/#/tasks/{xid}")
        wait("the hostile task's detail shows its title as text", lambda: d.find_element(By.ID, "task-title").text == XSS)
        time.sleep(0.5)
        imgs = d.execute_script("return [...document.querySelectorAll('img')].map(i => i.getAttribute('src'))")
        check(imgs == ["/ui/favicon.svg"], f"no img element but the logo ({imgs})")
        dialogs = d.execute_script("return window.__dialogs")
        check(dialogs == [], f"no alert ran ({dialogs})")
        shot(d, "task-hostile-title.png")

        # A task's detail.
        d.get(s.url + f"/ui/#/tasks/{notable['rich']}")
        wait("the task detail shows result and events", lambda: "rows_imported" in d.find_element(By.CSS_SELECTOR, ".json.result pre").text
             and len(d.find_elements(By.CSS_SELECTOR, ".activity .event")) >= 3)
        shot(d, "task.png")

        # The same overview on a phone-sized screen.
        d.set_window_size(420, 900)
        d.get(s.url + "/ui/#/")
        wait("the overview renders on a small screen", lambda: len(d.find_elements(By.CSS_SELECTOR, "#projects .card")) == len(ids))
        time.sleep(0.3)
        shot(d, "overview-narrow.png")
        d.set_window_size(1600, 1000)

        # The console: nothing logged at error level.
        check_console(d.get_log("browser"))

        # No request carried a key in its URL; the API calls carried it in the header.
        urls, with_header = [], 0
        for entry in d.get_log("performance"):
            m = json.loads(entry["message"])["message"]
            if m.get("method") == "Network.requestWillBeSent":
                r = m["params"]["request"]
                urls.append(r["url"])
                if r.get("headers", {}).get("Authorization") == "Bearer " + read_key:
                    with_header += 1
        check(len(urls) > 10, f"{len(urls)} requests seen in the browser's network log")
        leaked = [u for u in urls if read_key in u or write_key in u or "key=" in u.lower()]
        check(not leaked, f"no request URL carries a key ({leaked[:3]})")
        check(with_header > 5, f"{with_header} API requests carried the key in Authorization")
        # The live feed over the server's event stream: the page reads it, without polling.
        d.get(s.url + f"/ui/#/projects/{pid}")
        wait("the feed reads the event stream", lambda: d.find_element(By.CSS_SELECTOR, ".activity .live").text == "live")
        title = f"stream check {time.time():.3f}"
        t0 = time.time()
        code, t = s.api("POST", f"/projects/{pid}/tasks", {"title": title})
        found = wait("a task created through the API arrives over the stream",
                     lambda: in_feed(t["id"]), timeout=2.0, step=0.02)
        dt = time.time() - t0
        check(bool(found) and dt <= 2.0, f"over the event stream the new task is in the feed after {dt:.2f} s")
        polled = [e for e in d.get_log("performance") if e["timestamp"] >= t0 * 1000 and
                  "/events?after=" in json.loads(e["message"])["message"]["params"].get("request", {}).get("url", "")]
        check(not polled, f"the stream path does not poll ({len(polled)} polls since the task was created)")
        check_console(d.get_log("browser"))
        d.quit()
        d = None
        s.stop()
        access = open(s.env["ACCESS_LOG"]).read()
        check(access.count("\n") > 5, f"the access log has {access.count(chr(10))} lines")
        server_log = open(s.log_path).read()
        check(read_key not in access and read_key not in server_log, "the key is in neither the access log nor the server log")

        # AUTH_DISABLED=true: the page opens without asking.
        s2 = Server(binary, {"AUTH_DISABLED": "true"})
        try:
            s2.api("POST", "/projects", {"name": "open-project"}, key=None)
            d = browser()
            d.get(s2.url + "/ui/")
            wait("with AUTH_DISABLED=true the overview opens without a key",
                 lambda: len(d.find_elements(By.CSS_SELECTOR, "#projects .card")) == 1)
            check(not d.find_element(By.ID, "login").is_displayed(), "no login form with AUTH_DISABLED=true")
            check_console(d.get_log("browser"))
            d.quit()
            d = None
        finally:
            s2.stop()
            s2.cleanup()
    finally:
        if d is not None:
            try:
                shot(d, "failure.png")
            except Exception:
                pass
            d.quit()
        if s.proc.poll() is None:
            s.stop()
        s.cleanup()
        shutil.rmtree(profile, ignore_errors=True)

    if FAILURES:
        print(f"\nui-check: {len(FAILURES)} failed:", *FAILURES, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print("\nui-check: all passed; screenshots in", args.out)


if __name__ == "__main__":
    main()
