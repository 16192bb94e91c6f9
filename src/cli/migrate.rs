//! `migrate` applies pending migrations; `migrate status` lists them.

use crate::config::Config;
use crate::exit::command_error;
use crate::server::store_error;
use crate::server::ServeError;
use crate::store::sqlite::maintenance::DbFile;
use crate::store::sqlite::migrate;
use crate::store::Probe;

command_error!(
    /// Why `migrate [status]` failed.
    MigrateError,
    from ServeError
);

pub fn run(config: &Config, status_only: bool) -> Result<(), MigrateError> {
    if let Some(url) = &config.database_url {
        return run_postgres(config, url, status_only);
    }
    let path = &config.database_path;
    if status_only {
        if !path.exists() {
            println!(
                "database {} does not exist yet; every migration is pending",
                path.display()
            );
        }
        let rows = if path.exists() {
            DbFile::open(path)
                .and_then(|file| file.migration_status())
                .map_err(|e| store_error(e, path))?
        } else {
            migrate::all_pending()
        };
        print_status(rows);
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
    let v = DbFile::open(path)
        .and_then(|file| file.schema_version())
        .map_err(|e| store_error(e, path))?;
    store.close().map_err(|e| store_error(e, path))?;
    println!(
        "database {} is at schema version {v} (latest known: {})",
        path.display(),
        migrate::latest()
    );
    Ok(())
}

fn print_status(rows: Vec<migrate::MigrationStatus>) {
    println!("{:<8} {:<20} applied", "version", "name");
    for m in rows {
        let at = m
            .applied_at
            .map(crate::clock::rfc3339)
            .unwrap_or_else(|| "pending".into());
        println!("{:<8} {:<20} {at}", m.version, m.name);
    }
}

/// The same on PostgreSQL: `status` only reads; otherwise migrate under the advisory
/// lock, as the server does at start (SPEC §10).
fn run_postgres(
    config: &Config,
    url: &crate::store::postgres::PgUrl,
    status_only: bool,
) -> Result<(), MigrateError> {
    use crate::store::postgres::{migrate as pg, PgStore};
    let err = |e| crate::server::config_store_error(e, config);
    let store = if status_only {
        PgStore::connect(url, 1)
    } else {
        PgStore::open(url, 1)
    }
    .map_err(err)?;
    if status_only {
        print_status(store.run(pg::status).map_err(err)?);
    } else {
        let v = store.run(pg::current_version).map_err(err)?;
        println!(
            "database {} is at schema version {v} (latest known: {})",
            config.database_label(),
            pg::latest()
        );
    }
    store.close().map_err(err)?;
    Ok(())
}
