//! `db integrity|vacuum|analyze`: checks, compacts or re-analyzes the database.
//! integrity and analyze are safe while the server runs; vacuum is refused then,
//! since it would hold the write lock for as long as it rewrites the whole file.

use std::path::Path;
use std::time::Instant;

use super::CliError;
use crate::config::Config;
use crate::server::store_error;
use crate::store::sqlite::lock::ServerLock;
use crate::store::{sqlite::maintenance, StoreError};

/// Which maintenance task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbTask {
    Integrity,
    Vacuum,
    Analyze,
}

/// Problems printed at most.
const MAX_PROBLEMS: u32 = 100;
/// Rows sampled per index by ANALYZE while a server is writing.
const ONLINE_ANALYSIS_LIMIT: u32 = 1000;

/// Runs one maintenance task on DATABASE_PATH.
pub fn run(config: &Config, task: DbTask) -> Result<(), CliError> {
    if config.is_postgres() {
        return Err(super::postgres_refusal(
            "db",
            "the PostgreSQL tools (amcheck, vacuumdb, VACUUM and ANALYZE in psql)",
        ));
    }
    let db = config.database_path.as_path();
    if !db.is_file() {
        return Err(CliError::new(
            66,
            format!("database {} does not exist", db.display()),
        ));
    }
    if !maintenance::looks_like_sqlite(db) {
        return Err(CliError::new(
            65,
            format!("{} is not an SQLite database", db.display()),
        ));
    }
    match task {
        DbTask::Integrity => integrity(db),
        DbTask::Vacuum => vacuum(db),
        DbTask::Analyze => analyze(db),
    }
}

fn integrity(db: &Path) -> Result<(), CliError> {
    let t = Instant::now();
    let conn = crate::store::sqlite::open_plain(db).map_err(|e| store_error(e, db))?;
    let problems = maintenance::integrity_check(&conn, MAX_PROBLEMS).map_err(|e| match e {
        StoreError::Busy => store_error(e, db),
        e => CliError::new(
            65,
            format!(
                "{} cannot be checked ({e}); restore the latest backup",
                db.display()
            ),
        ),
    })?;
    if problems.is_empty() {
        let pages = maintenance::page_count(&conn).unwrap_or(0);
        println!(
            "{}: integrity_check ok ({pages} pages in {:.1}s)",
            db.display(),
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    for p in &problems {
        println!("{p}");
    }
    Err(CliError::new(
        65,
        format!(
            "{} fails integrity_check ({} problems listed above); restore the latest backup with `dashboard-backend restore FILE`",
            db.display(),
            problems.len()
        ),
    ))
}

fn vacuum(db: &Path) -> Result<(), CliError> {
    let _held = ServerLock::try_exclusive(db)
        .map_err(|e| crate::restore::lock_error(db, &e))?
        .ok_or_else(|| {
            CliError::new(
                69,
                format!(
                    "a dashboard-backend server is running on {}; VACUUM would block its writes for as long as it runs, so stop the server first",
                    db.display()
                ),
            )
        })?;
    let t = Instant::now();
    let before = size_with_wal(db);
    let conn = crate::store::sqlite::open_plain(db).map_err(|e| store_error(e, db))?;
    maintenance::vacuum(&conn).map_err(|e| match e {
        StoreError::Full => CliError::new(
            74,
            format!(
                "not enough free space to VACUUM {} (it needs room for a second copy of the database)",
                db.display()
            ),
        ),
        e => store_error(e, db),
    })?;
    drop(conn);
    println!(
        "{}: vacuumed, {before} -> {} bytes in {:.1}s",
        db.display(),
        size_with_wal(db),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn analyze(db: &Path) -> Result<(), CliError> {
    // While a server writes, sample: a full ANALYZE scans every index under the write
    // lock and would stall the server's commits for that long.
    let online = ServerLock::try_exclusive(db)
        .map_err(|e| crate::restore::lock_error(db, &e))?
        .is_none();
    let t = Instant::now();
    let conn = crate::store::sqlite::open_plain(db).map_err(|e| store_error(e, db))?;
    maintenance::analyze(&conn, online.then_some(ONLINE_ANALYSIS_LIMIT))
        .map_err(|e| store_error(e, db))?;
    let how = if online {
        "sampled, since a server is running"
    } else {
        "full"
    };
    println!(
        "{}: planner statistics updated ({how}) in {:.1}s",
        db.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn size_with_wal(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(db) + size(&crate::backup::with_suffix(db, "-wal"))
}
