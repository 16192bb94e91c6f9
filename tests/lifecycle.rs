//! systemd integration from the outside: a NOTIFY_SOCKET the test binds, signals,
//! the watchdog under a wedged pool and a locked database, the access log on SIGHUP.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{free_port, raw, signal, temp_dir, TestServer, BIN};

mod adopt;

/// A datagram socket standing in for systemd's notify socket.
pub(crate) struct Notify {
    path: PathBuf,
    msgs: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    pub(crate) fn bind(dir: &std::path::Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let sink = msgs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while Arc::strong_count(&sink) > 1 {
                if let Ok(n) = sock.recv(&mut buf) {
                    let at = Instant::now();
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        sink.lock().expect("msgs").push((at, line.to_string()));
                    }
                }
            }
        });
        Notify { path, msgs }
    }

    pub(crate) fn env(&self) -> (&'static str, String) {
        (
            "NOTIFY_SOCKET",
            self.path.to_str().expect("utf-8").to_string(),
        )
    }

    /// Waits until a message starting with `prefix` arrives; returns when it came.
    pub(crate) fn wait_for(&self, prefix: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((at, _)) = self
                .msgs
                .lock()
                .expect("msgs")
                .iter()
                .find(|(_, m)| m.starts_with(prefix))
            {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix} within {limit:?}; got {:?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub(crate) fn count(&self, msg: &str, from: Instant, to: Instant) -> usize {
        self.msgs
            .lock()
            .expect("msgs")
            .iter()
            .filter(|(at, m)| m == msg && *at >= from && *at < to)
            .count()
    }

    pub(crate) fn all(&self) -> Vec<String> {
        self.msgs
            .lock()
            .expect("msgs")
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }
}

#[test]
fn ready_is_sent_only_when_a_request_can_be_served() {
    let dir = temp_dir("ready");
    let notify = Notify::bind(&dir);
    let port = free_port();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .envs(crate::harness::db_env(&dir.join("d.db")))
        .env("SHUTDOWN_DRAIN_SECONDS", "0")
        .env(notify.env().0, notify.env().1)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    notify.wait_for("READY=1", Duration::from_secs(20));
    // The instant READY arrives, a request must succeed.
    let r = raw(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        b"GET /health/ready HTTP/1.0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        notify
            .all()
            .iter()
            .any(|m| m.starts_with("STATUS=listening on 127.0.0.1:")),
        "{:?}",
        notify.all()
    );
    signal(child.id(), "TERM");
    assert!(child.wait().expect("wait").success());
    notify.wait_for("STOPPING=1", Duration::from_secs(1));
}

/// A server under a 1 s watchdog with the test hooks on, reporting to `notify`.
pub(crate) fn watchdog_server(dir: &std::path::Path, notify: &Notify) -> TestServer {
    let env = notify.env();
    TestServer::spawn(
        dir.to_path_buf(),
        dir.join("data").join("d.db"),
        None,
        &[
            ("AUTH_DISABLED", "true"),
            ("WATCHDOG_USEC", "1000000"),
            ("WORKERS", "4"),
            ("DASHBOARD_BACKEND_TEST_HOOKS", "1"),
            (env.0, &env.1),
        ],
    )
}

#[test]
fn watchdog_pings_twice_a_second_and_stops_when_workers_are_wedged() {
    let dir = temp_dir("wd-pool");
    let notify = Notify::bind(&dir);
    let s = Arc::new(watchdog_server(&dir, &notify));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(2100));
    let healthy = notify.count("WATCHDOG=1", t0, Instant::now());
    assert!(
        healthy >= 4,
        "expected >= 2 pings/s, got {healthy} in 2.1 s"
    );
    // Wedge every worker for 3 s (on SQLite four reads take the places on
    // connections' own threads first, four more queue for the four workers).
    let wedge: Vec<_> = (0..crate::harness::to_hold_workers(4))
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.send("GET", "/_test/sleep?ms=3000", &[], None).status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(1800));
    let wedged = notify.count("WATCHDOG=1", from, Instant::now());
    assert_eq!(wedged, 0, "no pings while every worker is stuck");
    for w in wedge {
        assert_eq!(w.join().expect("wedge"), 200);
    }
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(1600));
    assert!(
        notify.count("WATCHDOG=1", back, Instant::now()) >= 2,
        "pings resume"
    );
}

#[test]
fn watchdog_stops_while_another_process_locks_the_database() {
    if crate::harness::sqlite_only("locks the SQLite file from another process") {
        return;
    }
    let dir = temp_dir("wd-lock");
    let notify = Notify::bind(&dir);
    let s = watchdog_server(&dir, &notify);
    notify.wait_for("WATCHDOG=1", Duration::from_secs(3));
    let locker = rusqlite::Connection::open(&s.db).expect("open");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    std::thread::sleep(Duration::from_millis(700));
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    let locked = notify.count("WATCHDOG=1", from, Instant::now());
    locker.execute_batch("COMMIT").expect("unlock");
    assert_eq!(locked, 0, "no pings while the database does not answer");
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        notify.count("WATCHDOG=1", back, Instant::now()) >= 2,
        "pings resume after the lock"
    );
}

#[test]
fn sigterm_drains_finishes_in_flight_work_and_checkpoints() {
    let dir = temp_dir("drain");
    let notify = Notify::bind(&dir);
    let env = notify.env();
    let s = Arc::new(TestServer::spawn(
        dir.clone(),
        dir.join("d.db"),
        None,
        &[
            ("AUTH_DISABLED", "true"),
            ("SHUTDOWN_DRAIN_SECONDS", "2"),
            ("DASHBOARD_BACKEND_TEST_HOOKS", "1"),
            (env.0, &env.1),
        ],
    ));
    assert_eq!(
        s.post("/projects", &serde_json::json!({"name": "kept"}))
            .status,
        201
    );
    let slow = {
        let s = s.clone();
        std::thread::spawn(move || s.send("GET", "/_test/sleep?ms=3000", &[], None).status)
    };
    std::thread::sleep(Duration::from_millis(200));
    signal(s.pid(), "TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(2));
    let ready = s.send("GET", "/health/ready", &[], None);
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["reason"], "draining");
    let health = s.send("GET", "/health", &[], None);
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (503, "draining".into())
    );
    assert_eq!(
        slow.join().expect("slow"),
        200,
        "the in-flight request completed"
    );
    let s = Arc::try_unwrap(s).unwrap_or_else(|_| panic!("still shared"));
    let db = s.db.clone();
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert!(
        std::fs::metadata(&wal)
            .map(|m| m.len() == 0)
            .unwrap_or(true),
        "WAL checkpointed"
    );
}

#[test]
fn sighup_reopens_the_access_log_and_rereads_the_log_level() {
    let dir = temp_dir("hup");
    let notify = Notify::bind(&dir);
    let log = dir.join("logs").join("access.log");
    let env_file = dir.join("env");
    std::fs::write(&env_file, "LOG_LEVEL=info\n").expect("env file");
    let env = notify.env();
    let s = TestServer::spawn(
        dir.clone(),
        dir.join("d.db"),
        None,
        &[
            ("AUTH_DISABLED", "true"),
            ("ACCESS_LOG", log.to_str().expect("p")),
            ("ENV_FILE", env_file.to_str().expect("p")),
            (env.0, &env.1),
        ],
    );
    s.get("/projects");
    let rotated = dir.join("logs").join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    std::fs::write(&env_file, "# edited\nLOG_LEVEL=\"debug\"\n").expect("env file");
    s.get("/health/live");
    assert!(!s.log_text().contains("/health/live"), "quiet at info");
    signal(s.pid(), "HUP");
    notify.wait_for("RELOADING=1", Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists()
        || std::fs::read_to_string(&log)
            .map(|t| t.is_empty())
            .unwrap_or(true)
    {
        s.get("/projects");
        assert!(Instant::now() < deadline, "no new access log after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    let fresh = std::fs::read_to_string(&log).expect("read");
    let line: serde_json::Value =
        serde_json::from_str(fresh.lines().next().expect("line")).expect("json");
    assert_eq!(line["route"], "/projects");
    assert!(std::fs::read_to_string(&rotated)
        .expect("old")
        .contains("/projects"));
    s.get("/health/live");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !s.log_text().contains("/health/live") {
        assert!(
            Instant::now() < deadline,
            "LOG_LEVEL=debug from ENV_FILE not applied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_on_a_socket_passed_by_systemd_socket_activate() {
    if !crate::harness::have_tool("systemd-socket-activate") {
        return;
    }
    let dir = temp_dir("sockact");
    let port = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}")])
        .args(
            crate::harness::db_env(&dir.join("d.db"))
                .into_iter()
                .flat_map(|(k, v)| ["-E".into(), format!("{k}={}", v.to_string_lossy())]),
        )
        .args(["-E", "PORT=1", "-E", "SHUTDOWN_DRAIN_SECONDS=0"])
        .arg(BIN)
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate");
    // The socket is bound before our binary even starts: the first request starts it.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            c.write_all(b"GET /health/ready HTTP/1.0\r\n\r\n")
                .expect("write");
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf);
            break crate::harness::parse(&buf).expect("response");
        }
        assert!(Instant::now() < deadline, "no listener");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        r.status, 200,
        "served on the inherited socket (PORT=1 would fail to bind)"
    );
    // systemd-socket-activate either execs our binary (same pid) or forks it on the
    // first connection: stop whichever process is the server.
    let out = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .expect("pgrep");
    let server: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(child.id());
    signal(server, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn health_degrades_on_low_disk_and_check_reports_readiness() {
    let s = TestServer::start_with(&[("HEALTH_DISK_MIN_FREE_BYTES", "18446744073709551615")]);
    let h = s.send("GET", "/health", &[], None);
    assert_eq!(h.status, 200, "degraded is still 200");
    assert_eq!(h.json()["status"], "degraded");
    assert_eq!(h.json()["checks"]["disk"]["status"], "degraded");
    let url = format!("http://{}/health/ready", s.addr);
    let ok = crate::harness::cli_env(&["check", "--url", &url], &[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).lines().count(), 1);
    let port = s.addr.port().to_string();
    let by_config = crate::harness::cli_env(&["check"], &[("PORT", &port)]);
    assert_eq!(by_config.status.code(), Some(0));
    drop(s);
    let down = crate::harness::cli_env(&["check", "--url", &url], &[]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("not ready"));
}
