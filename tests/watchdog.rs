//! The watchdog from the outside (SPEC §6, issue #13): only its own probe is left out
//! of metrics and logs, a long write that makes progress keeps the pings going, a
//! writer stuck without progress stops them, a PostgreSQL database that is away does
//! not stop them (issue #14), and a migration before READY=1 extends the start
//! timeout.

use std::time::{Duration, Instant};

use crate::harness::{temp_dir, TestServer};
use crate::lifecycle::{watchdog_server, Notify};

/// The value of one `/metrics` line, by name and label text (0 when absent).
fn metric(s: &TestServer, name: &str, labels: &str) -> f64 {
    let text = s.send("GET", "/metrics", &[], None).text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn only_the_real_probe_is_left_out_of_metrics_and_the_access_log() {
    let dir = temp_dir("wd-probe");
    let notify = Notify::bind(&dir);
    let env = notify.env();
    let access = dir.join("access.log");
    let s = TestServer::spawn(
        dir.clone(),
        dir.join("data").join("d.db"),
        None,
        &[
            ("AUTH_DISABLED", "true"),
            ("WATCHDOG_USEC", "400000"),
            ("ACCESS_LOG", access.to_str().expect("utf-8")),
            (env.0, &env.1),
        ],
    );
    // The real probe has run a few times by now.
    let from = notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while notify.count("WATCHDOG=1", from, Instant::now()) < 3 {
        assert!(Instant::now() < deadline, "watchdog pings stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = s.send("GET", "/metrics", &[], None).text();
    assert!(
        !metrics.contains("route=\"/health/live\""),
        "the real probe is not counted:\n{metrics}"
    );

    let labels = "route=\"/projects\",method=\"GET\",code=\"200\"";
    let before = metric(&s, "http_responses_total", labels);
    let forged = s.send(
        "GET",
        "/projects",
        &[
            ("User-Agent", "dashboard-backend-watchdog"),
            ("X-Request-ID", "forged-probe-1"),
            ("X-Dashboard-Probe", "0123456789abcdef0123456789abcdef"),
        ],
        None,
    );
    assert_eq!(forged.status, 200);
    // A request is recorded just after its response is sent: poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&s, "http_responses_total", labels) < before + 1.0 {
        assert!(
            Instant::now() < deadline,
            "a client sending the probe's User-Agent is not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&access).unwrap_or_default();
        if log.contains("forged-probe-1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forged probe is missing from the access log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Holds the writer for `ms` through a test hook, in the background.
fn hold_writer(s: &std::sync::Arc<TestServer>, how: &str, ms: u64) -> std::thread::JoinHandle<u16> {
    let (s, path) = (s.clone(), format!("/_test/{how}-writer?ms={ms}"));
    std::thread::spawn(move || s.send("GET", &path, &[], None).status)
}

/// A write that runs longer than the watchdog interval but keeps SQLite stepping
/// (as deleting a project with millions of tasks does) keeps the pings going; a
/// writer that holds its transaction without progress stops them (issue #13 item 9).
#[test]
fn pings_go_on_during_a_long_write_and_stop_when_the_writer_is_stuck() {
    if crate::harness::sqlite_only(
        "no writer thread on PostgreSQL: the watchdog keeps pinging while only the database is away (SPEC §10)",
    ) {
        return;
    }
    let dir = temp_dir("wd-write");
    let notify = Notify::bind(&dir);
    let s = std::sync::Arc::new(watchdog_server(&dir, &notify));
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));

    let busy = hold_writer(&s, "busy", 3000);
    std::thread::sleep(Duration::from_millis(500));
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    let during = notify.count("WATCHDOG=1", from, Instant::now());
    assert_eq!(busy.join().expect("busy"), 204);
    assert!(
        during >= 2,
        "{during} pings in 2 s of a long write that makes progress"
    );

    let stuck = hold_writer(&s, "stuck", 3000);
    std::thread::sleep(Duration::from_millis(700));
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(1800));
    let during = notify.count("WATCHDOG=1", from, Instant::now());
    assert_eq!(stuck.join().expect("stuck"), 204);
    assert_eq!(during, 0, "no pings while the writer is stuck");
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(1600));
    assert!(
        notify.count("WATCHDOG=1", back, Instant::now()) >= 2,
        "pings resume"
    );
}

/// SPEC §10, issue #14: while only the database is away the process itself is fine
/// (a restart would not bring the database back), so the watchdog keeps pinging;
/// readiness and writes answer 503 meanwhile, and all comes back with the database.
/// The outage is real: the test's database refuses connections and its sessions are
/// ended (`ALLOW_CONNECTIONS false`, `pg_terminate_backend`), as when PostgreSQL
/// restarts, without stopping the cluster the other tests share.
#[test]
fn pings_go_on_while_the_database_is_away() {
    if !crate::harness::postgres() {
        eprintln!("SKIPPED on sqlite: the database is a file of the process (TEST_BACKEND=postgres runs it)");
        return;
    }
    use crate::harness::pg;
    let dir = temp_dir("wd-db-away");
    let notify = Notify::bind(&dir);
    let s = watchdog_server(&dir, &notify);
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    let name = pg::database_name(&s.db);
    assert_eq!(
        s.post("/projects", &serde_json::json!({"name": "before"}))
            .status,
        201
    );

    pg::admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    pg::admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get("/health/ready").status != 503 {
        assert!(
            Instant::now() < deadline,
            "readiness never noticed the outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(3000));
    let during = notify.count("WATCHDOG=1", from, Instant::now());
    let write = s.post("/projects", &serde_json::json!({"name": "during"}));
    let ready = s.get("/health/ready").status;
    pg::admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    assert!(
        during >= 4,
        "{during} pings in 3 s while only the database was away (twice a second expected)"
    );
    assert_eq!(ready, 503, "readiness while the database is away");
    assert_eq!(
        write.status,
        503,
        "a write while the database is away: {}",
        write.text()
    );
    assert!(
        write.header("retry-after").is_some(),
        "503 without Retry-After"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get("/health/ready").status != 200 {
        assert!(Instant::now() < deadline, "readiness never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.post("/projects", &serde_json::json!({"name": "after"}))
            .status,
        201
    );
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        notify.count("WATCHDOG=1", back, Instant::now()) >= 2,
        "pings after"
    );
}

/// A database at schema version 1, with tasks for the migration to index.
fn version_1_database(db: &std::path::Path) {
    std::fs::create_dir_all(db.parent().expect("dir")).expect("mkdir");
    let c = rusqlite::Connection::open(db).expect("open");
    c.execute_batch(include_str!("../src/store/sqlite/migrations/0001_init.sql"))
        .expect("0001");
    c.execute_batch(
        "PRAGMA user_version = 1;
         INSERT INTO projects (name, created_at, updated_at) VALUES ('p', 1, 1);
         INSERT INTO tasks (project_id, title, status, created_at, updated_at)
           WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 20000)
           SELECT 1, 't' || x, 'pending', x, x FROM n;",
    )
    .expect("old rows");
}

/// SPEC §6: a migration before READY=1 extends systemd's start timeout; a start
/// with nothing to migrate does not (issue #13 item 9).
#[test]
fn a_pending_migration_extends_the_start_timeout_before_ready() {
    if crate::harness::sqlite_only("builds a schema-version-1 SQLite file to migrate") {
        return;
    }
    let dir = temp_dir("wd-migrate");
    let db = dir.join("data").join("d.db");
    version_1_database(&db);
    for (run, migrates) in [("first", true), ("second", false)] {
        let sockets = dir.join(run);
        std::fs::create_dir_all(&sockets).expect("mkdir");
        let notify = Notify::bind(&sockets);
        let env = notify.env();
        let s = TestServer::spawn(
            dir.clone(),
            db.clone(),
            None,
            &[("AUTH_DISABLED", "true"), (env.0, &env.1)],
        );
        notify.wait_for("READY=1", Duration::from_secs(5));
        let all = notify.all();
        let ready = all.iter().position(|m| m == "READY=1").expect("ready");
        let extend = all
            .iter()
            .position(|m| m.starts_with("EXTEND_TIMEOUT_USEC="));
        if migrates {
            let at = extend.unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC: {all:?}"));
            assert!(at < ready, "extended after READY=1: {all:?}");
            let usec: u64 = all[at]["EXTEND_TIMEOUT_USEC=".len()..]
                .parse()
                .expect("a number");
            assert!(usec >= 1_000_000, "{usec}");
        } else {
            assert_eq!(extend, None, "nothing to migrate: {all:?}");
        }
        let tasks = s.get("/projects/1/tasks?limit=1");
        assert_eq!(tasks.status, 200, "{}", tasks.text());
        drop(s);
    }
}
