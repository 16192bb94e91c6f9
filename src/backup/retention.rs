//! Backup file names and retention. Only files named exactly like ours
//! (`dashboard-YYYYMMDD-HHMMSS.db.gz`) are ever deleted, only regular files, only when
//! older (by mtime) than `BACKUP_RETENTION_DAYS`, and never the file just written: the
//! backup directory may be shared, and a wrong delete cannot be undone.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file name of a backup taken at `stamp` (`YYYYMMDD-HHMMSS`).
pub fn file_name(stamp: &str) -> String {
    format!("dashboard-{stamp}.db.gz")
}

/// True for exactly `dashboard-` 8 digits `-` 6 digits `.db.gz`.
pub fn is_ours(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("dashboard-")
        .and_then(|s| s.strip_suffix(".db.gz"))
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

/// Deletes our backups in `dir` older than `days` (0 keeps everything), except `keep`.
/// Returns what it deleted; a file it cannot delete is logged and left.
pub fn prune(dir: &Path, days: u32, keep: &Path) -> Vec<PathBuf> {
    if days == 0 {
        return Vec::new();
    }
    let cutoff = SystemTime::now()
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            log::warn!(target: "backup", dir:% = dir.display(), error:% = e; "cannot list the backup directory for retention");
            return Vec::new();
        }
    };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_str().is_some_and(is_ours);
        // symlink_metadata: a symlink named like ours is not a backup of ours.
        let old = std::fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.file_type().is_file())
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t < cutoff);
        if !ours || !old || path == keep {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_exact_names_match() {
        assert!(is_ours("dashboard-20251020-143731.db.gz"));
        assert!(is_ours(&file_name("20000101-000000")));
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
