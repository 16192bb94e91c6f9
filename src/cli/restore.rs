//! `restore FILE [--force]`: replaces the database with a verified backup; says where
//! the previous database was kept. `--force` is accepted (scripts pass it) but never
//! lets a restore run under a live server (SPEC §7, issue #13 item 10c).

use std::path::Path;

use crate::config::Config;
use crate::exit::EX_USAGE;
use crate::restore::RestoreError;

/// Restores `file` over DATABASE_PATH and says what happened to the old one.
pub fn run(config: &Config, file: &str) -> Result<(), RestoreError> {
    if config.is_postgres() {
        return Err(RestoreError::new(
            EX_USAGE,
            super::postgres_refusal("restore", "pg_restore --clean --dbname=…"),
        ));
    }
    let db = &config.database_path;
    let r = crate::restore::run(db, Path::new(file))?;
    let tasks = r.tasks.map(|n| format!(", {n} tasks")).unwrap_or_default();
    println!(
        "restored {file} into {} (schema version {}{tasks})",
        db.display(),
        r.version
    );
    if let Some(p) = &r.previous {
        println!("the previous database is kept as {}", p.display());
    }
    Ok(())
}
