//! `restore FILE [--force]`: replaces the database with a verified backup; says where
//! the previous database was kept.

use std::path::Path;

use super::CliError;
use crate::config::Config;

/// Restores `file` over DATABASE_PATH and says what happened to the old one.
pub fn run(config: &Config, file: &str, force: bool) -> Result<(), CliError> {
    let db = &config.database_path;
    let r = crate::restore::run(db, Path::new(file), force)?;
    let tasks = r.tasks.map(|n| format!(", {n} tasks")).unwrap_or_default();
    println!(
        "restored {file} into {} (schema version {}{tasks})",
        db.display(),
        r.version
    );
    if let Some(p) = &r.previous {
        println!("the previous database is kept as {}", p.display());
    }
    if r.under_running_server {
        eprintln!(
            "dashboard-backend: warning: a server is running on {} and still has the previous database open; restart it now (systemctl restart dashboard-backend)",
            db.display()
        );
    }
    Ok(())
}
