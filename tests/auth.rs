use serde_json::json;

use crate::harness::{self, create_key, TestServer};

#[test]
fn keys_and_roles() {
    let s = TestServer::start();
    let pid = s.project("auth");
    let reader = create_key(&s.db, "dash", "read");
    let bearer = format!("Bearer {reader}");
    let h = [("Authorization", bearer.as_str())];
    // A read key reads...
    assert_eq!(
        s.send("GET", &format!("/projects/{pid}"), &h, None).status,
        200
    );
    assert_eq!(s.send("GET", "/projects", &h, None).status, 200);
    // ...and may not write.
    let body = json!({"title": "x"}).to_string();
    let mut hw = h.to_vec();
    hw.push(("Content-Type", "application/json"));
    let r = s.send(
        "POST",
        &format!("/projects/{pid}/tasks"),
        &hw,
        Some(body.as_bytes()),
    );
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    assert_eq!(
        s.send("DELETE", &format!("/projects/{pid}"), &h, None)
            .status,
        403
    );
    // No key, a wrong key, a malformed header: 401.
    let r = s.send("GET", "/projects", &[], None);
    assert_eq!((r.status, r.code()), (401, "unauthorized".into()));
    let wrong = format!("Bearer {}x", s.key.as_ref().expect("key"));
    assert_eq!(
        s.send("GET", "/projects", &[("Authorization", &wrong)], None)
            .status,
        401
    );
    assert_eq!(
        s.send(
            "GET",
            "/projects",
            &[("Authorization", "Basic Zm9vOmJhcg==")],
            None
        )
        .status,
        401
    );
    // Ops endpoints need no key; the refusals above were counted.
    let m = s.send("GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    let failures = m
        .text()
        .lines()
        .find(|l| l.starts_with("http_auth_failures_total{"))
        .map(String::from);
    assert!(
        failures.is_some_and(|l| l.ends_with(" 5")),
        "5 refusals counted"
    );
    // Revoking takes effect at once.
    let list = String::from_utf8(s.cli(&["apikey", "list"]).stdout).expect("utf-8");
    let id = list
        .lines()
        .find(|l| l.contains("dash"))
        .and_then(|l| l.split_whitespace().next())
        .expect("id")
        .to_string();
    assert!(s.cli(&["apikey", "revoke", &id]).status.success());
    assert_eq!(s.send("GET", "/projects", &h, None).status, 401);
    // The secret never reaches the log.
    assert!(!s.log_text().contains(&reader));
    assert!(!s.log_text().contains(s.key.as_ref().expect("key").as_str()));
}

#[test]
fn auth_disabled_opens_everything_and_warns() {
    let s = TestServer::start_with(&[("AUTH_DISABLED", "true")]);
    assert_eq!(s.send("GET", "/projects", &[], None).status, 200);
    assert_eq!(s.post("/projects", &json!({"name": "open"})).status, 201);
    assert!(s.log_text().contains("AUTH_DISABLED"), "a warning at start");
}

#[test]
fn key_material_stays_private_on_disk() {
    if harness::sqlite_only("file modes of the SQLite database, its WAL and directory") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start();
    let _ = s.project("secrets"); // a write, so the WAL exists
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let data = s.db.parent().expect("data dir");
    assert_eq!(mode(data), 0o700, "data directory created by the server");
    assert_eq!(mode(&s.db), 0o600, "database (holds the key hashes)");
    let wal = s.db.with_extension("db-wal");
    assert_eq!(mode(&wal), 0o600, "WAL inherits the database's mode");
}

#[test]
fn key_material_stays_private_in_logs_and_in_answers() {
    let s = TestServer::start();
    let key = s.key.clone().expect("key");
    let _ = s.project("secrets");

    // A wrong key that looks real: refused, counted, and echoed nowhere.
    let wrong = format!("{}{}", &key[..key.len() - 4], "zzzz");
    let r = s.send(
        "GET",
        "/projects",
        &[("Authorization", &format!("Bearer {wrong}"))],
        None,
    );
    assert_eq!((r.status, r.code()), (401, "unauthorized".into()));
    assert!(!r.text().contains(&wrong) && !r.text().contains(&key));
    let config = String::from_utf8(
        crate::harness::cli_env(
            &["config"],
            &[("DATABASE_PATH", s.db.to_str().expect("utf-8"))],
        )
        .stdout,
    )
    .expect("utf-8");
    assert!(!config.contains(&key));
    std::thread::sleep(std::time::Duration::from_millis(100)); // let the log drain
    let log = s.log_text();
    assert!(
        !log.contains(&wrong) && !log.contains(&key),
        "key in the log"
    );
    assert!(
        log.contains("unauthorized") || log.contains("401"),
        "the refusal is logged (without the key)"
    );
}
