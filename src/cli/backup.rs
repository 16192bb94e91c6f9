//! `backup [--dir DIR]`: prints the path of the file written, nothing else, on stdout
//! (SPEC §3, §7), so `f=$(dashboard-backend backup)` works in scripts.

use std::path::PathBuf;

use crate::backup::BackupError;
use crate::config::Config;
use crate::exit::EX_IOERR;

/// Backs up into `dir` (default BACKUP_DIR) and prints the file written.
pub fn run(config: &Config, dir: Option<&str>) -> Result<(), BackupError> {
    let dir = dir
        .map(PathBuf::from)
        .unwrap_or_else(|| config.backup_dir.clone());
    let db = &config.backup_record_base();
    let w = match &config.database_url {
        Some(url) => crate::backup::run_postgres(url, db, &dir, config.backup_retention_days)?,
        None => crate::backup::run(db, &dir, config.backup_retention_days)?,
    };
    println!("{}", w.path.display());
    log::info!(target: "backup", file:% = w.path.display(), size_bytes = w.size,
        seconds = w.took.as_secs_f64(), deleted = w.deleted.len(); "backup written");
    match w.record_error {
        None => Ok(()),
        Some(e) => Err(BackupError::new(
            EX_IOERR,
            format!(
                "the backup was written but its result could not be recorded in {} ({e}), so the backup_last_* metrics will not show it",
                crate::backup::record_path(db).display()
            ),
        )),
    }
}
