//! `migrate` applies pending migrations; `migrate status` lists them.

use super::CliError;
use crate::config::Config;
use crate::server::store_error;
use crate::store::sqlite::migrate;
use crate::store::Probe;

pub fn run(config: &Config, status_only: bool) -> Result<(), CliError> {
    let path = &config.database_path;
    if status_only {
        if !path.exists() {
            println!(
                "database {} does not exist yet; every migration is pending",
                path.display()
            );
        }
        let conn = if path.exists() {
            crate::store::sqlite::open_plain(path).map_err(|e| store_error(e, path))?
        } else {
            rusqlite::Connection::open_in_memory().map_err(|e| CliError::new(70, e.to_string()))?
        };
        let rows = migrate::status(&conn).map_err(|e| store_error(e, path))?;
        println!("{:<8} {:<20} applied", "version", "name");
        for m in rows {
            let at = m
                .applied_at
                .map(crate::clock::rfc3339)
                .unwrap_or_else(|| "pending".into());
            println!("{:<8} {:<20} {at}", m.version, m.name);
        }
        return Ok(());
    }
    let store = crate::store::sqlite::SqliteStore::open(
        path,
        &crate::store::Options {
            readers: 1,
            ..Default::default()
        },
    )
    .map_err(|e| store_error(e, path))?;
    let conn = crate::store::sqlite::open_plain(path).map_err(|e| store_error(e, path))?;
    let v = migrate::current_version(&conn).map_err(|e| store_error(e, path))?;
    drop(conn);
    store.close().map_err(|e| store_error(e, path))?;
    println!(
        "database {} is at schema version {v} (latest known: {})",
        path.display(),
        migrate::latest()
    );
    Ok(())
}
