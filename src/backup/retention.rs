//! Backup file names and retention. Only files named exactly like ours
//! (`dashboard-YYYYMMDD-HHMMSS.db.gz`) are ever deleted, only regular files, only when
//! older (by mtime) than `BACKUP_RETENTION_DAYS`, never the file just written and never
//! one of the `MIN_KEPT` newest: the backup directory may be shared, the clock may
//! jump, and a wrong delete cannot be undone.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file name of a backup taken at `stamp` (`YYYYMMDD-HHMMSS`).
pub fn file_name(stamp: &str) -> String {
    format!("dashboard-{stamp}.db.gz")
}

/// The file name of a PostgreSQL backup (`pg_dump --format=custom`) taken at `stamp`.
pub fn dump_name(stamp: &str) -> String {
    format!("dashboard-{stamp}.dump")
}

/// True for exactly `dashboard-` 8 digits `-` 6 digits `.db.gz` (or `.dump`).
pub fn is_ours(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("dashboard-")
        .and_then(|s| s.strip_suffix(".db.gz").or_else(|| s.strip_suffix(".dump")))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

/// Backups always kept, the one just written included, however old they look.
pub const MIN_KEPT: usize = 7;

/// Deletes our backups in `dir` older than `days` (0 keeps everything), except `keep`
/// and the `MIN_KEPT` newest. Age counts back from now or from the `MIN_KEPT`-th
/// newest backup, whichever is earlier: a clock set a year ahead (or a year without
/// backups) then still keeps the last `days` of history instead of all but the new
/// file, and a backup dated in the future is never old (issue #13 item 10b).
/// Returns what it deleted; a file it cannot delete is logged and left.
pub fn prune(dir: &Path, days: u32, keep: &Path) -> Vec<PathBuf> {
    if days == 0 {
        return Vec::new();
    }
    let mut ours = match list(dir) {
        Ok(v) => v,
        Err(e) => {
            log::warn!(target: "backup", dir:% = dir.display(), error:% = e; "cannot list the backup directory for retention");
            return Vec::new();
        }
    };
    ours.sort_by_key(|(_, t)| std::cmp::Reverse(*t)); // newest first
    let now = SystemTime::now();
    let reference = ours.get(MIN_KEPT - 1).map_or(now, |(_, t)| (*t).min(now));
    let cutoff = reference
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut deleted = Vec::new();
    for (path, modified) in ours.into_iter().skip(MIN_KEPT) {
        if modified >= cutoff || path == keep {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                log::info!(target: "backup", file:% = path.display(), days = days; "deleted backup older than BACKUP_RETENTION_DAYS");
                deleted.push(path);
            }
            Err(e) => {
                log::warn!(target: "backup", file:% = path.display(), error:% = e; "cannot delete old backup")
            }
        }
    }
    if !deleted.is_empty() {
        let _ = super::files::sync_dir(dir);
    }
    deleted
}

/// Our backups in `dir` (regular files named like ours) with their mtimes.
fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, SystemTime)>> {
    let mut ours = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        if !entry.file_name().to_str().is_some_and(is_ours) {
            continue;
        }
        let path = entry.path();
        // symlink_metadata: a symlink named like ours is not a backup of ours.
        let modified = std::fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.file_type().is_file())
            .and_then(|m| m.modified().ok());
        if let Some(t) = modified {
            ours.push((path, t));
        }
    }
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_exact_names_match() {
        assert!(is_ours("dashboard-20251020-143731.db.gz"));
        assert!(is_ours(&file_name("20000101-000000")));
        assert!(is_ours(&dump_name("20000101-000000")));
        for name in [
            "dashboard-20251020-143731.db",
            "dashboard-20251020-143731.db.gz.tmp",
            ".dashboard-20251020-143731.db.gz",
            "dashboard-2025102-143731.db.gz",
            "dashboard-20251020_143731.db.gz",
            "dashboard-2025102a-143731.db.gz",
            "other-20251020-143731.db.gz",
            "dashboard-latest.db.gz",
        ] {
            assert!(!is_ours(name), "{name}");
        }
    }
}
