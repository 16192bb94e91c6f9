//! Test harness: starts the real binary on an ephemeral port with its own database,
//! and talks raw HTTP/1.1 to it (so malformed input is as easy as good input).
//!
//! The backend: SQLite by default; with `TEST_BACKEND=postgres` every database path
//! the harness hands the binary (`DATABASE_PATH`) also gets a PostgreSQL database of
//! its own in a cluster started once per run (`pg.rs`), passed as `DATABASE_URL`.
//! Tests that only make sense on SQLite say so with `sqlite_only`.

#![allow(dead_code)]

pub mod pg;
pub mod sse;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_dashboard-backend");

/// A fresh directory for one test under the target dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

/// True when the suite runs against PostgreSQL (`TEST_BACKEND=postgres`).
pub fn postgres() -> bool {
    pg::enabled()
}

/// How many slow requests hold every one of `workers` workers: on SQLite the
/// connections' own threads answer as many first (src/http/mod.rs, `Inline`).
pub fn to_hold_workers(workers: usize) -> usize {
    if postgres() {
        workers
    } else {
        2 * workers
    }
}

/// For a test that cannot apply to PostgreSQL (it works on the SQLite file itself):
/// on that backend, says so and returns true, and the test returns.
/// `if harness::sqlite_only("why") { return; }`
pub fn sqlite_only(reason: &str) -> bool {
    if postgres() {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("SKIPPED on postgres: {reason} ({test})");
    }
    postgres()
}

/// `DATABASE_URL` for the test database at `db` on PostgreSQL (created on first use,
/// the same one for every later use of that path); None on SQLite.
pub fn database_url(db: &std::path::Path) -> Option<String> {
    postgres().then(|| pg::database_url(db))
}

/// The environment that names the test database at `db`, for tests that build their
/// own `Command`: `DATABASE_PATH`, and `DATABASE_URL` on PostgreSQL.
pub fn db_env(db: &std::path::Path) -> Vec<(&'static str, std::ffi::OsString)> {
    let mut env = vec![("DATABASE_PATH", db.as_os_str().to_owned())];
    if let Some(url) = database_url(db) {
        env.push(("DATABASE_URL", url.into()));
    }
    env
}

/// A port that was free a moment ago (for tests that must know it before start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sends a signal to a process with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// True when an external tool is installed; in CI (CI=true) a missing tool fails the
/// test instead of skipping it, since .ci/run installs it.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{name} is required in CI (installed by .ci/run)"
        );
        eprintln!("SKIPPED: {name} is not installed on this machine");
    }
    found
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:.500}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The error code of an error envelope.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// Sends raw bytes, reads until the server closes, parses one response.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
        .unwrap_or_else(|| panic!("unparsable response: {:?}", String::from_utf8_lossy(&buf)))
}

/// Parses one HTTP/1.x response (body bounded by Content-Length when present).
pub fn parse(buf: &[u8]) -> Option<Resp> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        body.truncate(len.1.parse().ok()?);
    }
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// Not an environment variable: `(NOFILE, "200")` in `start_with` starts the server
/// with a soft and hard open-files limit of 200.
pub const NOFILE: &str = "harness:RLIMIT_NOFILE";

fn set_nofile(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child after fork.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running server.
pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The SQLite file; on PostgreSQL also the key of this server's database
    /// (`database_url`), so the CLI helpers and a restart find the same data.
    pub db: PathBuf,
    /// A write key (None when started with AUTH_DISABLED).
    pub key: Option<String>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Auth on, with a write key created beforehand.
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts with extra environment; creates a write key unless auth is disabled.
    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        let dir = temp_dir("srv");
        let db = dir.join("data").join("dashboard.db");
        let auth_off = env
            .iter()
            .any(|(k, v)| *k == "AUTH_DISABLED" && *v == "true");
        let key = (!auth_off).then(|| create_key(&db, "harness", "write"));
        TestServer::spawn(dir, db, key, env)
    }

    /// Starts in a given directory and database (restarts on the same data).
    pub fn spawn(
        dir: PathBuf,
        db: PathBuf,
        key: Option<String>,
        env: &[(&str, &str)],
    ) -> TestServer {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .envs(db_env(&db))
            .env("SHUTDOWN_DRAIN_SECONDS", "0")
            .env("LOG_LEVEL", "info")
            .env("BACKUP_DIR", dir.join("backups"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            if *k == NOFILE {
                set_nofile(&mut cmd, v.parse().expect("a number"));
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("spawn server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["msg"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("listening on"))
                    {
                        let _ = tx.send(v["addr"].as_str().unwrap_or("").to_string());
                    }
                }
                sink.lock().expect("log").push(line);
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("server did not start; log: {:?}", log.lock().expect("log")))
            .parse()
            .expect("addr");
        let s = TestServer {
            child: Some(child),
            addr,
            dir,
            db,
            key,
            log,
        };
        s.wait_ready();
        s
    }

    /// Polls /health/ready until 200 (with a deadline).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.send("GET", "/health/ready", &[], None).status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server never became ready");
    }

    /// A request with explicit headers (no auth added).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        raw(self.addr, &bytes)
    }

    /// A request with the write key and, for a body, a JSON content type.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        self.call_with(method, path, body, &[])
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let auth = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let bytes = body.map(|b| b.to_string().into_bytes());
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.send(method, path, &headers, bytes.as_deref())
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.call("POST", path, Some(body))
    }
    pub fn patch(&self, path: &str, body: &Value) -> Resp {
        self.call("PATCH", path, Some(body))
    }

    /// Creates a project and returns its id.
    pub fn project(&self, name: &str) -> i64 {
        let r = self.post("/projects", &serde_json::json!({ "name": name }));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_i64().expect("id")
    }

    /// Runs a CLI command against this server's database.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.db, args)
    }

    /// SIGTERM and wait for exit (bounded).
    pub fn stop(mut self) -> ExitStatus {
        self.terminate().expect("exit status")
    }

    /// Waits for the process to exit by itself (after a signal the test sent).
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not exit within {limit:?}");
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Whether the process is still running (not exited, not crashed).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Runs the binary with `DATABASE_PATH=db` (and on PostgreSQL its `DATABASE_URL`) and
/// no other environment.
pub fn cli(db: &std::path::Path, args: &[&str]) -> Output {
    cli_env(args, &[("DATABASE_PATH", db.to_str().expect("utf-8 path"))])
}

/// Runs the binary with exactly `env`; on PostgreSQL a `DATABASE_PATH` in it brings
/// its `DATABASE_URL` along (unless `env` names one).
pub fn cli_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(args).stdin(Stdio::null());
    let has_url = env.iter().any(|(k, _)| *k == "DATABASE_URL");
    for (k, v) in env {
        if *k == "DATABASE_PATH" && !has_url {
            cmd.envs(db_env(std::path::Path::new(v)));
        } else {
            cmd.env(k, v);
        }
    }
    cmd.output().expect("run cli")
}

/// Creates an API key with the CLI and returns the secret.
pub fn create_key(db: &std::path::Path, name: &str, role: &str) -> String {
    let out = cli(db, &["apikey", "create", "--name", name, "--role", role]);
    assert!(
        out.status.success(),
        "apikey create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Every task of `pid`, paging through the list with its cursors.
pub fn all_tasks(s: &TestServer, pid: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/projects/{pid}/tasks?limit=500&cursor={c}"),
            None => format!("/projects/{pid}/tasks?limit=500"),
        };
        let page = s.get(&path).json();
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Every task of `pid` counted by status (the stats' reference count in the drift
/// and retention tests).
pub fn full_count(s: &TestServer, pid: i64) -> std::collections::HashMap<String, i64> {
    let mut out = std::collections::HashMap::new();
    for t in all_tasks(s, pid) {
        *out.entry(t["status"].as_str().expect("status").to_string())
            .or_insert(0) += 1;
    }
    out
}

/// `POST /projects/{pid}/tasks/claim` with `body`.
pub fn claim(s: &TestServer, pid: i64, body: &Value) -> Resp {
    s.post(&format!("/projects/{pid}/tasks/claim"), body)
}

/// Creates a task from `body` (201 asserted) and returns it.
pub fn task(s: &TestServer, pid: i64, body: &Value) -> Value {
    let r = s.post(&format!("/projects/{pid}/tasks"), body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// Creates a project from `body` (201 asserted) and returns its id.
pub fn project_with(s: &TestServer, body: &Value) -> i64 {
    let r = s.post("/projects", body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().expect("id")
}
