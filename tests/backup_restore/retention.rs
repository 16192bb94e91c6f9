//! Retention against a clock that jumps (issue #13 item 10b, SPEC §7): the newest
//! backups are never deleted by age alone, so a clock set a year ahead (or a long spell
//! without backups) cannot leave only the backup just written.

use std::path::Path;
use std::process::Command;

use crate::harness::temp_dir;

use super::support::{backup_ok, files_in, run, s};

/// Backups always kept, whatever their age (the one just written included).
const MIN_KEPT: usize = 7;

/// An empty file named like one of our backups, with its mtime `days_ago` days ago.
fn plant(dir: &Path, days_ago: u32) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - u64::from(days_ago) * 86_400;
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y%m%d-%H%M%S"])
        .output()
        .expect("date");
    let name = format!(
        "dashboard-{}.db.gz",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let p = dir.join(&name);
    std::fs::write(&p, b"x").expect("write");
    let ok = Command::new("touch")
        .args(["-d", &format!("@{secs}"), s(&p)])
        .status()
        .expect("touch");
    assert!(ok.success());
    name
}

fn setup(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let db = dir.join("data").join("dashboard.db");
    let backups = dir.join("backups");
    std::fs::create_dir_all(&backups).expect("mkdir");
    assert!(run(&db, &backups, &["migrate"], &[]).status.success());
    (db, backups)
}

#[test]
fn a_clock_a_year_ahead_keeps_the_last_retention_period_of_backups() {
    let (db, backups) = setup("retention-jump");
    // Ten nightly backups that, to a clock a year fast, all look a year old.
    let nightly: Vec<String> = (0..10).map(|i| plant(&backups, 365 + i)).collect();
    let new = backup_ok(&db, &backups); // BACKUP_RETENTION_DAYS defaults to 30
    let left = files_in(&backups);
    for f in &nightly {
        assert!(
            left.contains(f),
            "{f} was deleted after a clock jump: {left:?}"
        );
    }
    assert!(left.contains(s(new.file_name().expect("name").as_ref())));
}

#[test]
fn the_newest_backups_are_kept_whatever_their_age() {
    let (db, backups) = setup("retention-min");
    // Backups long stopped: twelve, one a day, the newest 400 days old.
    let mut by_age: Vec<String> = (0..12).map(|i| plant(&backups, 400 + i)).collect();
    backup_ok(&db, &backups);
    let left = files_in(&backups);
    let kept: Vec<&String> = by_age.iter().filter(|f| left.contains(*f)).collect();
    assert!(
        kept.len() >= MIN_KEPT - 1,
        "only {kept:?} of the old backups were kept; {MIN_KEPT} newest (with the new one) must stay"
    );
    let newest: Vec<String> = by_age.drain(..MIN_KEPT - 1).collect();
    for f in &newest {
        assert!(
            left.contains(f),
            "{f} is among the {MIN_KEPT} newest, yet deleted: {left:?}"
        );
    }

    // With BACKUP_RETENTION_DAYS=1 the same holds: age alone never empties the history.
    let out = run(
        &db,
        &backups,
        &["backup"],
        &[("BACKUP_RETENTION_DAYS", "1")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = files_in(&backups)
        .iter()
        // A SQLite backup or a pg_dump one (TEST_BACKEND=postgres).
        .filter(|f| f.starts_with("dashboard-") && (f.ends_with(".db.gz") || f.ends_with(".dump")))
        .count();
    assert!(
        ours >= MIN_KEPT,
        "{ours} backups left: {:?}",
        files_in(&backups)
    );
    let oldest = by_age.last().expect("oldest");
    assert!(
        !files_in(&backups).contains(oldest),
        "{oldest} is far older than the newest {MIN_KEPT}, yet kept"
    );
}
