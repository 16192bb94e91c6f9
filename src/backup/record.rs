//! The backup record: the outcome of the last backups in a small JSON file beside the
//! database (`<database>.backup-state.json`), written by `backup`, read by the server
//! at scrape time for the `backup_last_*` metrics (SPEC §4, §7). A file rather than a
//! table: a failed backup (disk full, database unreadable) must still be recordable,
//! and a scrape must not take a database connection for it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the last backups did. A failure keeps the last success's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// When the last successful backup finished (epoch ms).
    pub last_success_ms: Option<i64>,
    /// How long it took.
    pub last_duration_seconds: Option<f64>,
    /// Size of the file it wrote.
    pub last_size_bytes: Option<u64>,
    /// The file it wrote.
    pub last_file: Option<String>,
    /// When the last failed backup gave up (epoch ms).
    pub last_failure_ms: Option<i64>,
    /// Why it failed.
    pub last_error: Option<String>,
}

/// `<database>.backup-state.json`.
pub fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".backup-state.json");
    PathBuf::from(p)
}

impl Record {
    /// The record for `db`; `None` when no backup ran yet or the file is unreadable.
    pub fn load(db: &Path) -> Option<Record> {
        let text = std::fs::read(path_for(db)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Records a successful backup.
    pub fn success(
        db: &Path,
        at_ms: i64,
        took: Duration,
        size: u64,
        file: &Path,
    ) -> std::io::Result<()> {
        let mut r = Record::load(db).unwrap_or_default();
        r.last_success_ms = Some(at_ms);
        r.last_duration_seconds = Some(took.as_secs_f64());
        r.last_size_bytes = Some(size);
        r.last_file = Some(file.display().to_string());
        r.save(db)
    }

    /// Records a failed backup; the last success stays as it was.
    pub fn failure(db: &Path, at_ms: i64, error: &str) -> std::io::Result<()> {
        let mut r = Record::load(db).unwrap_or_default();
        r.last_failure_ms = Some(at_ms);
        r.last_error = Some(error.to_string());
        r.save(db)
    }

    /// Writes atomically: a temporary file, fsync, rename, fsync of the directory, so
    /// a scrape never reads half a record. Mode 0644: it holds no secret, and the
    /// server (the service user) must read it even when root ran the backup.
    fn save(&self, db: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = path_for(db);
        // On PostgreSQL nothing else creates the state directory.
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            super::files::sync_dir(super::files::parent(&path))
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}
