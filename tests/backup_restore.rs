//! Backup, restore and `db` maintenance (SPEC §3, §7), against the real binary: a
//! consistent backup under write load, a restore round trip, refusals that leave the
//! live database untouched, retention, the backup_last_* metrics, failures on a
//! read-only or full filesystem (a tmpfs the test mounts), and the server lock.

pub mod links;
pub mod retention;
pub mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::harness::{self, signal, temp_dir, TestServer};
use support::*;

#[test]
fn backup_under_write_load_holds_every_acknowledged_row() {
    if harness::sqlite_only("reads the snapshot with SQLite (integrity_check, task ids)") {
        return;
    }
    let srv = Arc::new(TestServer::start());
    let pid = srv.project("load");
    let seeded = seed(&srv, pid, 6000);
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (srv, acked, stop) = (srv.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let r = srv.post(
                        &format!("/projects/{pid}/tasks"),
                        &json!({"title": format!("writer {w} #{n}")}),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                    let id = r.json()["id"].as_i64().expect("id");
                    acked.lock().expect("acked").push(id);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before: BTreeSet<i64> = acked.lock().expect("acked").iter().copied().collect();
    let dir = srv.dir.join("backups");
    let gz = backup_ok(&srv.db, &dir);
    let during = acked.lock().expect("acked").len() - before.len();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(
        !before.is_empty(),
        "the writers made no progress before the backup"
    );
    assert!(
        during > 0,
        "no write was acknowledged while the backup ran: it stalled the writers"
    );
    let db = gunzip(&gz);
    assert_eq!(integrity(&db), "ok");
    let in_backup = task_ids(&db);
    let missing: Vec<_> = before
        .iter()
        .chain(&seeded)
        .filter(|id| !in_backup.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "rows acknowledged before the backup are missing: {missing:?}"
    );
}

#[test]
fn restore_round_trip_serves_the_backed_up_rows() {
    if harness::sqlite_only("restore (refused on PostgreSQL: pg_restore) and the SQLite WAL") {
        return;
    }
    let srv = TestServer::start();
    let pid = srv.project("trip");
    for i in 0..5 {
        let r = srv.post(
            &format!("/projects/{pid}/tasks"),
            &json!({"title": format!("kept {i}")}),
        );
        assert_eq!(r.status, 201);
    }
    let backed_up = served_titles(&srv, pid);
    let backups = srv.dir.join("backups");
    let gz = backup_ok(&srv.db, &backups);
    // After the backup: new rows and a changed one, which the restore must undo.
    for i in 0..3 {
        srv.post(
            &format!("/projects/{pid}/tasks"),
            &json!({"title": format!("later {i}")}),
        );
    }
    let first = backed_up[0].0;
    assert_eq!(
        srv.patch(&format!("/tasks/{first}"), &json!({"title": "changed"}))
            .status,
        200
    );
    // SIGKILL: the WAL is left behind, holding the later rows; the kept copy must keep them.
    signal(srv.pid(), "KILL");
    let (dir, db, key) = (srv.dir.clone(), srv.db.clone(), srv.key.clone());
    drop(srv);

    let out = run(&db, &backups, &["restore", s(&gz)], &[]);
    assert!(
        out.status.success(),
        "restore failed: {}",
        text(&out.stderr)
    );
    let pre: Vec<_> = files_in(db.parent().expect("dir"))
        .into_iter()
        .filter(|f| f.starts_with("dashboard.db.pre-restore-"))
        .collect();
    assert_eq!(pre.len(), 1, "one kept copy expected: {pre:?}");
    assert!(text(&out.stdout).contains(&pre[0]), "{}", text(&out.stdout));
    let kept = db.parent().expect("dir").join(&pre[0]);
    assert_eq!(
        task_ids(&kept).len(),
        8,
        "the kept copy lost the rows that were in its WAL"
    );
    assert_eq!(task_ids(&db).len(), 5);

    let srv = TestServer::spawn(dir, db, key, &[]);
    assert_eq!(served_titles(&srv, pid), backed_up);
}

#[test]
fn restore_refuses_bad_files_and_leaves_the_database_untouched() {
    if harness::sqlite_only("restore (refused on PostgreSQL: pg_restore) of SQLite files") {
        return;
    }
    let srv = TestServer::start();
    let pid = srv.project("live");
    seed(&srv, pid, 300);
    let work = srv.dir.join("files");
    std::fs::create_dir_all(&work).expect("mkdir");
    let gz = backup_ok(&srv.db, &work);
    let (db, key, dir) = (srv.db.clone(), srv.key.clone(), srv.dir.clone());
    assert!(srv.stop().success());

    let bytes = std::fs::read(&gz).expect("read");
    let bad = |name: &str, content: &[u8]| {
        let p = work.join(name);
        std::fs::write(&p, content).expect("write");
        p
    };
    let garbage: Vec<u8> = (0u32..5000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut files = vec![
        bad("garbage.db.gz", &garbage),
        bad("truncated.db.gz", &bytes[..bytes.len() / 2]),
        bad("notes.db", b"this is not a database\n"),
    ];
    let good = gunzip(&gz);
    let future = work.join("future.db");
    std::fs::copy(&good, &future).expect("copy");
    rusqlite::Connection::open(&future)
        .and_then(|c| c.execute_batch("PRAGMA user_version = 99"))
        .expect("set user_version");
    files.push(future);
    // Overwrite two pages in the middle: the file still opens, integrity_check fails.
    let mut corrupt = std::fs::read(&good).expect("read");
    let pages = corrupt.len() / 4096;
    assert!(
        pages > 50,
        "test database too small to corrupt: {pages} pages"
    );
    for p in [pages / 3, pages / 2] {
        corrupt[p * 4096..(p + 1) * 4096].fill(0xAB);
    }
    files.push(bad("corrupt.db", &corrupt));

    let before = std::fs::read(&db).expect("read db");
    let listing = files_in(db.parent().expect("dir"));
    for f in &files {
        let out = run(&db, &work, &["restore", s(f)], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{f:?} was not refused: {err}");
        assert_eq!(err.lines().count(), 1, "one sentence expected: {err}");
        assert!(
            err.contains(s(f)) && err.contains("nothing was changed"),
            "{err}"
        );
        assert!(
            std::fs::read(&db).expect("read db") == before,
            "{f:?} changed the live database"
        );
        assert_eq!(
            files_in(db.parent().expect("dir")),
            listing,
            "{f:?} left files behind"
        );
    }
    let srv = TestServer::spawn(dir, db, key, &[]);
    assert_eq!(served_titles(&srv, pid).len(), 300);
}

#[test]
fn restore_and_vacuum_refuse_while_a_server_runs_even_forced() {
    if harness::sqlite_only("restore and db vacuum/analyze (refused on PostgreSQL)") {
        return;
    }
    let srv = TestServer::start();
    let pid = srv.project("locked");
    seed(&srv, pid, 10);
    let backups = srv.dir.join("backups");
    let gz = backup_ok(&srv.db, &backups);
    srv.post(
        &format!("/projects/{pid}/tasks"),
        &json!({"title": "after the backup"}),
    );

    // Refused even with --force: swapping the file under a running server would leave
    // its readers on the new database and its writer on the old one (issue #13 10c).
    for args in [vec!["restore", s(&gz)], vec!["restore", "--force", s(&gz)]] {
        let out = run(&srv.db, &backups, &args, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {err}");
        assert!(err.contains("systemctl stop"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one sentence expected: {err}");
    }
    let out = run(&srv.db, &backups, &["db", "vacuum"], &[]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    let out = run(&srv.db, &backups, &["db", "analyze"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sampled"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        served_titles(&srv, pid).len(),
        11,
        "a refused restore changed the data"
    );
    let after = srv.post(
        &format!("/projects/{pid}/tasks"),
        &json!({"title": "written after the refused restores"}),
    );
    assert_eq!(after.status, 201, "{}", after.text());
    assert_eq!(
        served_titles(&srv, pid).len(),
        12,
        "reads and writes disagree"
    );

    let (dir, db, key) = (srv.dir.clone(), srv.db.clone(), srv.key.clone());
    assert!(srv.stop().success());
    let out = run(&db, &backups, &["restore", "--force", s(&gz)], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let srv = TestServer::spawn(dir, db, key, &[]);
    assert_eq!(served_titles(&srv, pid).len(), 10);
}

#[test]
fn retention_deletes_only_old_backups_of_ours() {
    let dir = temp_dir("retention");
    let db = dir.join("data").join("dashboard.db");
    let backups = dir.join("backups");
    std::fs::create_dir_all(&backups).expect("mkdir");
    assert!(run(&db, &backups, &["migrate"], &[]).status.success());
    let old = [
        "dashboard-20200101-000000.db.gz",
        "dashboard-20200102-030405.db.gz",
    ];
    // Ours and younger than 30 days: with the new backup, the 7 newest.
    let recent = [
        "dashboard-20200103-000000.db.gz",
        "dashboard-20200104-000000.db.gz",
        "dashboard-20200105-000000.db.gz",
        "dashboard-20200106-000000.db.gz",
        "dashboard-20200107-000000.db.gz",
        "dashboard-20200108-000000.db.gz",
    ];
    let keep = [
        "other-20200101-000000.db.gz",
        "dashboard-20200101-000000.db.gz.bak",
        "dashboard-20200101-000000.db",
        "dashboard-latest.db.gz",
        "notes.txt",
    ];
    let touch = |name: &str, age: &str| {
        let p = backups.join(name);
        std::fs::write(&p, b"x").expect("write");
        let ok = Command::new("touch")
            .args(["-d", age, s(&p)])
            .status()
            .expect("touch");
        assert!(ok.success());
    };
    for f in old {
        touch(f, "40 days ago");
    }
    for (i, f) in recent.iter().enumerate() {
        touch(f, &format!("{} days ago", i + 1));
    }
    for f in keep {
        touch(f, "400 days ago");
    }
    std::fs::create_dir(backups.join("dashboard-20190101-000000.db.gz")).expect("mkdir");

    backup_ok(&db, &backups); // BACKUP_RETENTION_DAYS defaults to 30
    let left = files_in(&backups);
    for f in old {
        assert!(
            !left.contains(f),
            "{f} is older than 30 days and ours, yet kept"
        );
    }
    for f in recent
        .iter()
        .chain(&keep)
        .chain(&["dashboard-20190101-000000.db.gz"])
    {
        assert!(left.contains(*f), "{f} was deleted: {left:?}");
    }
    assert_eq!(
        left.iter().filter(|f| f.starts_with(".")).count(),
        0,
        "temporary files left: {left:?}"
    );

    // BACKUP_RETENTION_DAYS=0 keeps everything.
    touch(old[0], "4000 days ago");
    let out = run(
        &db,
        &backups,
        &["backup"],
        &[("BACKUP_RETENTION_DAYS", "0")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(files_in(&backups).contains(old[0]));
}

#[test]
fn metrics_show_backup_success_and_failure() {
    let srv = TestServer::start();
    let scrape = || srv.get("/metrics").text();
    let m = scrape();
    assert_eq!(metric(&m, "backup_last_success_timestamp_seconds"), 0.0);
    assert_eq!(metric(&m, "backup_last_failure_timestamp_seconds"), 0.0);

    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let gz = backup_ok(&srv.db, &srv.dir.join("backups"));
    let m = scrape();
    let ok_at = metric(&m, "backup_last_success_timestamp_seconds");
    assert!(
        ok_at >= t0 - 1.0 && ok_at < t0 + 60.0,
        "success timestamp {ok_at} vs now {t0}"
    );
    let size = std::fs::metadata(&gz).expect("stat").len() as f64;
    assert_eq!(metric(&m, "backup_last_size_bytes"), size);
    assert!(metric(&m, "backup_last_duration_seconds") > 0.0);
    assert_eq!(metric(&m, "backup_last_failure_timestamp_seconds"), 0.0);

    // A backup directory that is a regular file: the backup must fail and say so.
    let not_a_dir = srv.dir.join("not-a-dir");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let out = run(&srv.db, &not_a_dir, &["backup"], &[]);
    assert_eq!(out.status.code(), Some(74), "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty());
    let m = scrape();
    assert!(metric(&m, "backup_last_failure_timestamp_seconds") >= ok_at);
    assert_eq!(metric(&m, "backup_last_success_timestamp_seconds"), ok_at);
    let j = srv.get("/metrics/json").json();
    assert!(
        j["metrics"]["backup_last_failure_timestamp_seconds"]
            .as_f64()
            .is_some(),
        "{j}"
    );
}

#[test]
fn backup_into_a_read_only_directory_fails_cleanly() {
    if harness::sqlite_only("reads the backup record beside the SQLite file") {
        return;
    }
    let Some(ro) = Tmpfs::mount("ro", "ro,size=64k") else {
        return;
    };
    let srv = TestServer::start();
    backup_ok(&srv.db, &srv.dir.join("backups"));
    assert_clean_failure(&srv.db, &ro.0, "not writable");
}

#[test]
fn backup_into_a_full_filesystem_fails_cleanly() {
    if harness::sqlite_only("sizes the SQLite file and WAL, reads the backup record beside them") {
        return;
    }
    let Some(small) = Tmpfs::mount("full", "size=64k") else {
        return;
    };
    let srv = TestServer::start();
    let pid = srv.project("big");
    seed(&srv, pid, 500);
    backup_ok(&srv.db, &srv.dir.join("backups"));
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wal = PathBuf::from(format!("{}-wal", s(&srv.db)));
    assert!(
        size(srv.db.clone()) + size(wal) > 256 * 1024,
        "too small to fill 64 KiB"
    );
    assert_clean_failure(&srv.db, &small.0, "full");
}

#[test]
fn db_integrity_vacuum_analyze() {
    if harness::sqlite_only("db integrity/vacuum/analyze on a SQLite file it writes and corrupts") {
        return;
    }
    let dir = temp_dir("dbcmd");
    let db = dir.join("dashboard.db");
    let nowhere = dir.join("backups");
    let missing = run(&db, &nowhere, &["db", "integrity"], &[]);
    assert_eq!(missing.status.code(), Some(66), "{}", text(&missing.stderr));
    assert!(run(&db, &nowhere, &["migrate"], &[]).status.success());
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute_batch(
        "INSERT INTO projects (name, created_at, updated_at) VALUES ('p', 0, 0);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO tasks (project_id, title, description, created_at, updated_at)
         SELECT 1, 't' || i, printf('%.500c', 'x'), i, i FROM n;
         DELETE FROM tasks WHERE id % 2 = 0;",
    )
    .expect("fill");
    drop(c);
    for (cmd, says) in [
        ("integrity", "ok"),
        ("analyze", "full"),
        ("vacuum", "vacuumed"),
    ] {
        let out = run(&db, &nowhere, &["db", cmd], &[]);
        assert!(out.status.success(), "db {cmd}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(says),
            "db {cmd}: {}",
            text(&out.stdout)
        );
    }
    let mut bytes = std::fs::read(&db).expect("read");
    let pages = bytes.len() / 4096;
    bytes[(pages / 2) * 4096..(pages / 2 + 1) * 4096].fill(0xAB);
    std::fs::write(&db, &bytes).expect("write");
    let out = run(&db, &nowhere, &["db", "integrity"], &[]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stdout));
    std::fs::write(&db, b"plain text").expect("write");
    assert_eq!(
        run(&db, &nowhere, &["db", "integrity"], &[]).status.code(),
        Some(65)
    );
}
