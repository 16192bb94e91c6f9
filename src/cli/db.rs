//! `db integrity|vacuum|analyze`: checks, compacts or re-analyzes the database.
//! integrity and analyze are safe while the server runs; vacuum is refused then,
//! since it would hold the write lock for as long as it rewrites the whole file.

use std::path::Path;
use std::time::Instant;

use crate::config::Config;
use crate::exit::{command_error, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_UNAVAILABLE, EX_USAGE};
use crate::restore::RestoreError;
use crate::server::store_error;
use crate::server::ServeError;
use crate::store::sqlite::lock::ServerLock;
use crate::store::sqlite::maintenance::{self, DbFile};
use crate::store::StoreError;

command_error!(
    /// Why `db integrity|vacuum|analyze` failed.
    DbError,
    from ServeError, RestoreError
);

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
pub fn run(config: &Config, task: DbTask) -> Result<(), DbError> {
    if config.is_postgres() {
        return Err(DbError::new(
            EX_USAGE,
            super::postgres_refusal(
                "db",
                "the PostgreSQL tools (amcheck, vacuumdb, VACUUM and ANALYZE in psql)",
            ),
        ));
    }
    let db = config.database_path.as_path();
    if !db.is_file() {
        return Err(DbError::new(
            EX_NOINPUT,
            format!("database {} does not exist", db.display()),
        ));
    }
    if !maintenance::looks_like_sqlite(db) {
        return Err(DbError::new(
            EX_DATAERR,
            format!("{} is not an SQLite database", db.display()),
        ));
    }
    match task {
        DbTask::Integrity => integrity(db),
        DbTask::Vacuum => vacuum(db),
        DbTask::Analyze => analyze(db),
    }
}

fn integrity(db: &Path) -> Result<(), DbError> {
    let t = Instant::now();
    let file = DbFile::open(db).map_err(|e| store_error(e, db))?;
    let problems = file.integrity_check(MAX_PROBLEMS).map_err(|e| match e {
        StoreError::Busy => store_error(e, db).into(),
        e => DbError::new(
            EX_DATAERR,
            format!(
                "{} cannot be checked ({e}); restore the latest backup",
                db.display()
            ),
        ),
    })?;
    if problems.is_empty() {
        let pages = file.page_count().unwrap_or(0);
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
    Err(DbError::new(
        EX_DATAERR,
        format!(
            "{} fails integrity_check ({} problems listed above); restore the latest backup with `dashboard-backend restore FILE`",
            db.display(),
            problems.len()
        ),
    ))
}

fn vacuum(db: &Path) -> Result<(), DbError> {
    let _held = ServerLock::try_exclusive(db)
        .map_err(|e| crate::restore::lock_error(db, &e))?
        .ok_or_else(|| {
            DbError::new(
                EX_UNAVAILABLE,
                format!(
                    "a dashboard-backend server is running on {}; VACUUM would block its writes for as long as it runs, so stop the server first",
                    db.display()
                ),
            )
        })?;
    let t = Instant::now();
    let before = size_with_wal(db);
    let file = DbFile::open(db).map_err(|e| store_error(e, db))?;
    file.vacuum().map_err(|e| match e {
        StoreError::Full => DbError::new(
            EX_IOERR,
            format!(
                "not enough free space to VACUUM {} (it needs room for a second copy of the database)",
                db.display()
            ),
        ),
        e => store_error(e, db).into(),
    })?;
    drop(file);
    println!(
        "{}: vacuumed, {before} -> {} bytes in {:.1}s",
        db.display(),
        size_with_wal(db),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn analyze(db: &Path) -> Result<(), DbError> {
    // While a server writes, sample: a full ANALYZE scans every index under the write
    // lock and would stall the server's commits for that long.
    let online = ServerLock::try_exclusive(db)
        .map_err(|e| crate::restore::lock_error(db, &e))?
        .is_none();
    let t = Instant::now();
    let file = DbFile::open(db).map_err(|e| store_error(e, db))?;
    file.analyze(online.then_some(ONLINE_ANALYSIS_LIMIT))
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
