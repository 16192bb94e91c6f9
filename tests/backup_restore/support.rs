//! Helpers for the backup and restore tests: running the CLI against a database,
//! reading backups and databases directly, metrics, and a tmpfs mounted per test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::{cli_env, temp_dir, TestServer};

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs the binary on `db` with backups going to `dir`.
pub fn run(db: &Path, dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut env = vec![
        ("DATABASE_PATH", s(db)),
        ("BACKUP_DIR", s(dir)),
        ("LOG_LEVEL", "warn"),
    ];
    env.extend_from_slice(extra);
    cli_env(args, &env)
}

/// `backup`, asserting success; returns the file it printed.
pub fn backup_ok(db: &Path, dir: &Path) -> PathBuf {
    let out = run(db, dir, &["backup"], &[]);
    assert!(out.status.success(), "backup failed: {}", text(&out.stderr));
    let path = PathBuf::from(text(&out.stdout).trim());
    assert!(
        path.is_file(),
        "backup printed {path:?}, which is not a file"
    );
    assert_eq!(path.parent(), Some(dir));
    path
}

/// Decompresses a backup next to itself and returns the database file.
pub fn gunzip(gz: &Path) -> PathBuf {
    let out = gz.with_extension("unpacked.db");
    let mut r = flate2::read::GzDecoder::new(std::fs::File::open(gz).expect("open backup"));
    let mut w = std::fs::File::create(&out).expect("create");
    std::io::copy(&mut r, &mut w).expect("backup is valid gzip");
    out
}

pub fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).expect("open");
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

pub fn task_ids(db: &Path) -> BTreeSet<i64> {
    let c = rusqlite::Connection::open(db).expect("open");
    let mut st = c.prepare("SELECT id FROM tasks").expect("prepare");
    let ids = st
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    ids
}

/// Creates `n` tasks (bulk, ≤ 1000 per request) with ~1 KiB of text each.
pub fn seed(srv: &TestServer, pid: i64, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(500);
        let body: Vec<Value> = (0..k)
            .map(|i| json!({"title": format!("seed {i}"), "description": "x".repeat(1000)}))
            .collect();
        let r = srv.post(&format!("/projects/{pid}/tasks"), &Value::Array(body));
        assert_eq!(r.status, 201, "{}", r.text());
        ids.extend(
            r.json()["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|t| t["id"].as_i64().expect("id")),
        );
        left -= k;
    }
    ids
}

/// Titles of every task of project `pid`, as the server serves them.
pub fn served_titles(srv: &TestServer, pid: i64) -> Vec<(i64, String)> {
    let r = srv.get(&format!("/projects/{pid}/tasks?limit=500"));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut v: Vec<(i64, String)> = r.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| {
            (
                t["id"].as_i64().expect("id"),
                t["title"].as_str().expect("title").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

pub fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// A metric's value from the Prometheus text.
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

pub fn record(db: &Path) -> Value {
    let p = PathBuf::from(format!("{}.backup-state.json", s(db)));
    serde_json::from_slice(&std::fs::read(&p).expect("backup record written")).expect("json")
}

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `opts` on a new directory; None (and a note) if mount is impossible.
    pub fn mount(tag: &str, opts: &str) -> Option<Tmpfs> {
        let dir = temp_dir(tag).join("mnt");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs", s(&dir)])
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs ({}); needs root",
                    text(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", s(&self.0)]).status();
    }
}

/// Asserts a backup into `dir` failed cleanly: exit 74, one sentence naming `why`,
/// nothing left in `dir`, the failure recorded and the last success kept.
pub fn assert_clean_failure(db: &Path, dir: &Path, why: &str) {
    let rec_before = record(db);
    let out = run(db, dir, &["backup"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains(why), "expected {why:?} in: {err}");
    assert_eq!(err.lines().count(), 1, "one sentence expected: {err}");
    assert!(text(&out.stdout).is_empty());
    assert!(
        files_in(dir).is_empty(),
        "files left behind: {:?}",
        files_in(dir)
    );
    let rec = record(db);
    assert!(rec["last_failure_ms"].as_i64().is_some(), "{rec}");
    assert_eq!(rec["last_success_ms"], rec_before["last_success_ms"]);
}
