//! Faults under a running server: a full disk refuses writes with 503 and recovers
//! once space is freed, reads keep working and nothing is corrupted.

use serde_json::{json, Value};

use crate::backup_restore::support::Tmpfs;
use crate::harness::{self, TestServer};

#[test]
fn a_full_disk_refuses_writes_with_503_and_recovers() {
    if harness::sqlite_only("fills the tmpfs that holds the SQLite file") {
        return;
    }
    let Some(fs) = Tmpfs::mount("diskfull", "size=6m") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root and must mount a tmpfs"
        );
        return;
    };
    // Room to free later.
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 1 << 20]).expect("filler");
    let s = TestServer::spawn(
        fs.0.clone(),
        fs.0.join("data").join("dashboard.db"),
        None,
        &[
            ("AUTH_DISABLED", "true"),
            ("HEALTH_DISK_MIN_FREE_BYTES", "0"),
        ],
    );
    let pid = s.project("full");
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"title": format!("t{i}"), "description": "x".repeat(4000)}))
        .collect();
    let mut refused = None;
    for _ in 0..200 {
        let r = s.post(
            &format!("/projects/{pid}/tasks"),
            &Value::Array(batch.clone()),
        );
        match r.status {
            201 => continue,
            _ => {
                refused = Some(r);
                break;
            }
        }
    }
    let r = refused.expect("the disk filled up");
    assert_eq!(
        (r.status, r.code()),
        (503, "unavailable".into()),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some(), "Retry-After on 503");
    // Reads keep working and the file is intact.
    let listed = s.get(&format!("/projects/{pid}/tasks?limit=5"));
    assert_eq!(listed.status, 200);
    let c =
        rusqlite::Connection::open_with_flags(&s.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
    drop(c);
    // Free space: writes work again.
    std::fs::remove_file(&filler).expect("free space");
    let again = s.post(
        &format!("/projects/{pid}/tasks"),
        &json!({"title": "after"}),
    );
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(s.get(&format!("/tasks/{}", again.json()["id"])).status, 200);
    drop(s);
}

#[test]
fn a_database_deleted_under_the_server_turns_health_503_with_a_log_line() {
    if harness::sqlite_only("deletes the SQLite file under the server") {
        return;
    }
    let s = TestServer::start_with(&[("AUTH_DISABLED", "true")]);
    s.project("doomed");
    assert_eq!(s.send("GET", "/health", &[], None).status, 200);
    std::fs::remove_file(&s.db).expect("delete the database");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let h = loop {
        let h = s.send("GET", "/health", &[], None);
        if h.status == 503 || std::time::Instant::now() > deadline {
            break h;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        (h.status, h.json()["status"].clone()),
        (503, "error".into())
    );
    let ready = s.send("GET", "/health/ready", &[], None);
    assert_eq!(
        (ready.status, ready.json()["reason"].clone()),
        (503, "database".into())
    );
    assert_eq!(s.send("GET", "/health/db", &[], None).status, 503);
    assert_eq!(
        s.send("GET", "/health/live", &[], None).status,
        200,
        "alive: no crash loop"
    );
    let log = s.log_text();
    assert_eq!(
        log.matches("database unusable").count(),
        1,
        "one clear line, not one per probe:\n{log}"
    );
}

/// SPEC §5b: health bodies name no file paths. With the database gone, every health
/// body says a fixed phrase and the detail goes to the log (issue #13 item 10).
#[test]
fn health_bodies_say_a_fixed_phrase_not_the_store_error() {
    if harness::sqlite_only("deletes the SQLite file under the server") {
        return;
    }
    let s = TestServer::start_with(&[("AUTH_DISABLED", "true")]);
    std::fs::remove_file(&s.db).expect("delete the database");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while s.send("GET", "/health", &[], None).status != 503 {
        assert!(std::time::Instant::now() < deadline, "/health stayed 200");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let dir = s.dir.to_str().expect("utf-8").to_string();
    for path in ["/health", "/healthz", "/health/db", "/health/ready"] {
        let r = s.send("GET", path, &[], None);
        assert_eq!(r.status, 503, "{path}");
        let body = r.text();
        assert!(!body.contains(&dir), "{path} names a path: {body}");
        let j = r.json();
        let error = match path {
            "/health/db" => &j["error"],
            "/health/ready" => continue,
            _ => &j["checks"]["database"]["error"],
        };
        assert_eq!(error, "database unavailable", "{path}: {body}");
    }
    assert!(
        s.log_text().contains("gone or unreadable"),
        "the detail is logged:\n{}",
        s.log_text()
    );
}
