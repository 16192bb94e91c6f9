//! `backup` and links planted at its temporary names (issue #13 item 10a, SPEC §7): the
//! names are predictable (time stamp and pid), so a symlink or a hard link waiting
//! there must be replaced, never written or truncated through.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::harness::{temp_dir, BIN};

use super::support::{gunzip, integrity, s, text};

/// Bytes a victim starts with; the rest of its 64 MiB is a hole (cheap, and above the
/// 32 MiB slice that the cleanup of a large temporary file truncates by).
const MARK: &[u8] = b"precious bytes that are not a backup";
const VICTIM_LEN: u64 = 64 << 20;

fn victim(path: &Path) {
    std::fs::write(path, MARK).expect("write victim");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open victim");
    f.set_len(VICTIM_LEN).expect("grow victim");
}

fn assert_untouched(path: &Path) {
    let bytes = std::fs::read(path).expect("victim still readable");
    assert_eq!(bytes.len() as u64, VICTIM_LEN, "{path:?} was truncated");
    assert_eq!(&bytes[..MARK.len()], MARK, "{path:?} was overwritten");
    assert!(
        bytes[MARK.len()..].iter().all(|b| *b == 0),
        "{path:?} was written"
    );
}

/// Runs `backup` from a shell that first plants, under the binary's pid (exec keeps
/// it) and every stamp of the next few seconds, `raw` at the snapshot's temporary name
/// and `gz` at the compressed one (`s` = symlink to the victim, `h` = hard link).
fn backup_with_planted(
    db: &Path,
    dir: &Path,
    v: &Path,
    raw: &str,
    gz: &str,
) -> std::process::Output {
    let script = r#"
        plant() { if [ "$1" = s ]; then ln -s "$V" "$2"; else ln "$V" "$2"; fi; }
        now=$(date -u +%s)
        for i in 0 1 2 3 4 5; do
            st=$(date -u -d "@$((now + i))" +%Y%m%d-%H%M%S)
            plant "$RAW" "$BACKUP_DIR/.dashboard-$st.db.partial-$$"
            plant "$GZ" "$BACKUP_DIR/.dashboard-$st.db.gz.partial-$$"
        done
        exec "$BIN" backup
    "#;
    Command::new("sh")
        .args(["-c", script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIN", BIN)
        .env("V", v)
        .env("RAW", raw)
        .env("GZ", gz)
        .env("DATABASE_PATH", db)
        .env("BACKUP_DIR", dir)
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("run backup")
}

#[test]
fn backup_replaces_links_at_its_temp_names_and_never_writes_through_them() {
    if crate::harness::sqlite_only("the SQLite snapshot's temporary names, read with SQLite") {
        return;
    }
    let root = temp_dir("backup-links");
    let db = root.join("data").join("dashboard.db");
    let backups = root.join("backups");
    std::fs::create_dir_all(&backups).expect("mkdir");
    let out = crate::harness::cli(&db, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    for (raw, gz) in [("s", "h"), ("h", "s")] {
        let v = root.join(format!("victim-{raw}{gz}"));
        victim(&v);
        let out = backup_with_planted(&db, &backups, &v, raw, gz);
        assert_untouched(&v);
        assert!(
            out.status.success(),
            "backup with a {raw}/{gz} link planted failed: {}",
            text(&out.stderr)
        );
        let gz_path = std::path::PathBuf::from(text(&out.stdout).trim());
        assert_eq!(
            std::fs::symlink_metadata(&gz_path).expect("backup").nlink(),
            1
        );
        assert_eq!(integrity(&gunzip(&gz_path)), "ok");
        assert!(
            std::fs::metadata(&v).expect("victim").is_file(),
            "{}",
            s(&v)
        );
    }
}
