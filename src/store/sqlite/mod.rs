//! The SQLite engine behind the store interface: every byte of SQLite SQL.
//!
//! Reads run in parallel on a small pool of read-only connections (WAL lets them read
//! while a write commits). Every write goes to the single writer thread (`writer.rs`),
//! which commits whatever is queued in one transaction — group commit — and leaves the
//! flush to a sync thread that answers the batch once its WAL frames are on disk, while
//! the writer goes on with the next batch (pipelined commit): `synchronous=FULL` costs
//! one fdatasync per batch, not per request, and does not stall the writer. The
//! trade-off: a reader may see a committed write for the length of one flush before it
//! is durable (`writer.rs` says more). Handlers see only
//! the domain operations of `store::Store`, never SQL. Administration that only SQLite
//! has (online backup, integrity check, vacuum, the server lock) lives here too, in
//! `admin`, `maintenance`, `migrate` and `lock`, not in the interface: commands outside
//! the store reach a file through `admin::Source`/`Snapshot` and `maintenance::DbFile`
//! and never see a connection.

pub mod admin;
mod apikeys;
mod events;
mod idempotency;
pub mod lock;
pub mod maintenance;
pub mod migrate;
mod pool;
mod projects;
mod prune;
mod tasks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{Idem, KeyStore, Options, Outcome, Probe, ProjectStore, Result, StoreError, TaskStore};
use crate::model::*;
use pool::ReadPool;
use writer::Writer;

/// How long a connection waits for a lock before giving up with `Busy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DiskFull) => StoreError::Full,
            Some(ErrorCode::CannotOpen)
            | Some(ErrorCode::NotADatabase)
            | Some(ErrorCode::DatabaseCorrupt)
            | Some(ErrorCode::ReadOnly)
            | Some(ErrorCode::SystemIoFailure)
            | Some(ErrorCode::PermissionDenied) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// The database: one writer thread, a pool of readers.
pub struct SqliteStore {
    path: PathBuf,
    /// (device, inode) of the file opened: a database deleted or replaced under the
    /// running server is noticed by `ping`, not written to in silence.
    identity: (u64, u64),
    writer: Writer,
    readers: ReadPool,
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, applies pending migrations
    /// and starts the writer thread. A database from a newer schema is refused untouched.
    pub fn open(path: &Path, opts: &Options) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let conn = open_writer_conn(path, opts.synchronous)?;
        let progress = Arc::new(AtomicU64::new(0));
        writer::count_progress(&conn, progress.clone());
        migrate_in_time(&conn, &progress)?;
        // synchronous=FULL: the writer's COMMIT leaves the flush to the sync thread,
        // which answers once the WAL is on disk (writer.rs, pipelined commit).
        let durability = match opts.synchronous {
            crate::store::Synchronous::Full => {
                conn.execute_batch("PRAGMA synchronous=NORMAL")?;
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                writer::Durability::Pipelined(wal.into())
            }
            #[cfg(test)]
            crate::store::Synchronous::Normal => writer::Durability::Inline,
        };
        let writer = Writer::start(conn, progress, durability)?;
        let readers = ReadPool::new(path.to_path_buf(), opts.readers.max(1));
        let identity = identity(path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            identity,
            writer,
            readers,
        })
    }

    /// Runs `f` on a pooled read-only connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        crate::metrics::db_query();
        self.readers.with(f)
    }

    /// Runs `f` on the writer thread inside the current group-commit transaction and
    /// returns once the batch holding it is durably committed.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        crate::metrics::db_query();
        self.writer.submit(f)
    }
}

impl Probe for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// The file and its WAL.
    fn size_bytes(&self) -> Option<u64> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        Some(size(&self.path) + size(Path::new(&wal)))
    }

    /// SQLite's own count of the heap it holds, over every connection in the process.
    #[allow(unsafe_code)]
    fn memory_bytes(&self) -> Option<u64> {
        // SAFETY: a read of SQLite's global memory counter; no arguments, no state.
        let n = unsafe { rusqlite::ffi::sqlite3_memory_used() };
        Some(n.max(0) as u64)
    }

    /// Time a trivial query takes on a read connection (health probes).
    /// Fails when the file is gone, replaced or unreadable.
    fn ping(&self) -> Result<Duration> {
        let t = Instant::now();
        match identity(&self.path) {
            Ok(id) if id == self.identity => {}
            Ok(_) => {
                return Err(StoreError::Unavailable(
                    "the database file was replaced under the running server".into(),
                ))
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "the database file is gone or unreadable: {e}"
                )))
            }
        }
        self.read(|c| {
            c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok(())
        })?;
        Ok(t.elapsed())
    }

    /// Whether the writer answers or makes progress within `budget` (the
    /// watchdog's check; not counted as a query).
    fn writer_alive(&self, budget: Duration) -> Result<()> {
        self.writer.alive(budget)
    }

    #[cfg(feature = "test-hooks")]
    /// Test hook: occupies the writer for `hold`, either computing (SQLite steps,
    /// as a long delete does) or waiting outside SQLite (a writer stuck without
    /// progress).
    fn hold_writer(&self, hold: Duration, progressing: bool) -> Result<()> {
        self.writer
            .submit(move |c| writer::hold(c, Instant::now() + hold, progressing))
    }

    /// Stops the writer after the queued writes, checkpoints and truncates the WAL.
    fn close(&self) -> Result<()> {
        self.readers.close();
        self.writer.stop()
    }
}

impl ProjectStore for SqliteStore {
    // ---- projects ----------------------------------------------------------

    fn list_projects(
        &self,
        status: Option<ProjectStatus>,
        after: i64,
        limit: usize,
    ) -> Result<Page<Project>> {
        self.read(|c| projects::list(c, status, after, limit))
    }

    fn get_project(&self, id: i64) -> Result<Project> {
        self.read(|c| projects::get(c, id))
    }

    fn create_project(
        &self,
        p: NewProject,
        actor: Option<String>,
        idem: Option<Idem<Project>>,
    ) -> Result<Outcome<Project>> {
        self.write(move |c| {
            idempotency::run(c, idem, |c| projects::insert(c, &p, actor.as_deref()))
        })
    }

    fn update_project(
        &self,
        id: i64,
        patch: ProjectPatch,
        if_match: Option<i64>,
        actor: Option<String>,
    ) -> Result<Project> {
        self.write(move |c| projects::update(c, id, &patch, if_match, actor.as_deref()))
    }

    fn delete_project(&self, id: i64, if_match: Option<i64>) -> Result<()> {
        self.write(move |c| projects::delete(c, id, if_match))
    }
}

impl TaskStore for SqliteStore {
    // ---- tasks -------------------------------------------------------------

    /// Creates all of `tasks` in project `pid`, or none of them.
    fn create_tasks(
        &self,
        pid: i64,
        new: Vec<NewTask>,
        actor: Option<String>,
        idem: Option<Idem<Vec<Task>>>,
    ) -> Result<Outcome<Vec<Task>>> {
        self.write(move |c| {
            idempotency::run(c, idem, |c| {
                tasks::insert_many(c, pid, new, actor.as_deref())
            })
        })
    }

    /// A task by id; with `pid`, only if it belongs to that project.
    fn get_task(&self, id: i64, pid: Option<i64>) -> Result<Task> {
        self.read(|c| tasks::get(c, id, pid))
    }

    fn list_tasks(&self, pid: i64, q: TaskQuery) -> Result<Page<Task>> {
        self.read(|c| tasks::list(c, pid, &q))
    }

    fn update_task(
        &self,
        id: i64,
        pid: Option<i64>,
        patch: TaskPatch,
        if_match: Option<i64>,
        token: Option<String>,
        actor: Option<String>,
    ) -> Result<Task> {
        self.write(move |c| {
            tasks::update(
                c,
                id,
                pid,
                &patch,
                if_match,
                token.as_deref(),
                actor.as_deref(),
            )
        })
    }

    fn delete_task(
        &self,
        id: i64,
        pid: Option<i64>,
        if_match: Option<i64>,
        token: Option<String>,
        actor: Option<String>,
    ) -> Result<()> {
        self.write(move |c| tasks::delete(c, id, pid, if_match, token.as_deref(), actor.as_deref()))
    }

    fn claim(
        &self,
        pid: i64,
        claim: Claim,
        idem: Option<Idem<Vec<Task>>>,
    ) -> Result<Outcome<Vec<Task>>> {
        self.write(move |c| idempotency::run(c, idem, |c| tasks::claim_next(c, pid, &claim)))
    }

    fn heartbeat(
        &self,
        id: i64,
        pid: Option<i64>,
        proof: LeaseProof,
        lease_seconds: i64,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>> {
        self.write(move |c| {
            idempotency::run(c, idem, |c| {
                tasks::heartbeat(c, id, pid, &proof, lease_seconds)
            })
        })
    }

    fn complete(
        &self,
        id: i64,
        pid: Option<i64>,
        token: String,
        result: Option<String>,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>> {
        self.write(move |c| {
            idempotency::run(c, idem, |c| tasks::complete(c, id, pid, &token, result))
        })
    }

    fn fail(
        &self,
        id: i64,
        pid: Option<i64>,
        failure: Failure,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>> {
        self.write(move |c| idempotency::run(c, idem, |c| tasks::fail(c, id, pid, &failure)))
    }

    fn sweep_leases(&self, limit: usize) -> Result<usize> {
        let now = crate::clock::now_ms();
        if !self.read(|c| tasks::any_expired(c, now))? {
            return Ok(0);
        }
        self.write(move |c| tasks::sweep(c, None, crate::clock::now_ms(), limit))
    }

    fn stats(&self, pid: i64) -> Result<Stats> {
        self.read(|c| tasks::stats(c, pid))
    }

    /// Task counts by status over all projects (the `tasks{status}` gauge).
    fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>> {
        self.read(tasks::count_by_status)
    }

    fn list_events(&self, pid: i64, after: i64, limit: usize) -> Result<Page<Event>> {
        self.read(|c| events::list(c, pid, after, limit))
    }
}

impl KeyStore for SqliteStore {
    // ---- api keys ----------------------------------------------------------

    /// The live (unrevoked) key whose hash is `hash`.
    fn find_key(&self, hash: [u8; 32]) -> Result<Option<ApiKey>> {
        self.read(|c| apikeys::find(c, &hash))
    }

    fn create_key(
        &self,
        name: String,
        role: Role,
        prefix: String,
        hash: [u8; 32],
    ) -> Result<ApiKey> {
        self.write(move |c| apikeys::insert(c, &name, role, &prefix, &hash))
    }

    fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(apikeys::list)
    }

    fn revoke_key(&self, id: i64) -> Result<ApiKey> {
        self.write(move |c| apikeys::revoke(c, id))
    }
}

/// Applies pending migrations; under systemd, keeps extending the start timeout while
/// they make progress, since a migration of a big database can outlast
/// `TimeoutStartSec` before READY=1 (SPEC §6, issue #13).
fn migrate_in_time(conn: &Connection, progress: &Arc<AtomicU64>) -> Result<()> {
    let _extend = if migrate::pending(conn)? {
        crate::systemd::StartExtension::begin(progress.clone())
    } else {
        None
    };
    migrate::apply(conn)?;
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 when missing: the key table lives there.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// SQLite's heap in this process, every connection together: page caches stop growing
/// and recycle their own pages once it is reached (`PRAGMA soft_heap_limit`; nothing
/// fails, unlike the hard limit). The writer's cache (8 MiB) and 2 MiB for the
/// connections' schemas, statements and the pages of reads in flight. Without it the
/// heap followed the work done: a 30-minute `soak.sh` grew 24.8 → 35.0 MiB RSS and still
/// rose, all of it SQLite's (`db_memory_bytes`) and the allocator's around it; a read
/// connection's cache is emptied anyway whenever a write committed since its last read
/// (WAL), so what it gathered bought nothing under writes.
const HEAP_LIMIT: i64 = 10 << 20;

/// The writer connection: checks the schema before any pragma can touch the file.
fn open_writer_conn(path: &Path, synchronous: crate::store::Synchronous) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let existed = path.exists();
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    if !existed {
        restrict_mode(path);
    }
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Refuse a foreign file or a newer schema before WAL mode rewrites the header.
    migrate::check_version(&conn)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "could not switch to WAL mode (got {mode})"
        )));
    }
    // temp_store=MEMORY: a statement that may fail halfway inside the writer's
    // transaction keeps the pages it may have to restore in a statement journal — by
    // default a temporary file, created, written page by page and unlinked each time
    // (strace, when every job had a savepoint: ~700 pwrite calls and an open/unlink
    // per commit of 23 creates). In memory it is a memcpy. Only this connection's own
    // write jobs use it: the CLI's VACUUM runs on its own connection.
    let synchronous = synchronous.as_sql();
    conn.execute_batch(&format!(
        "PRAGMA synchronous={synchronous}; PRAGMA foreign_keys=ON; PRAGMA cache_size=-8000;
         PRAGMA temp_store=MEMORY;"
    ))?;
    stable_plans(&conn)?;
    conn.execute_batch(&format!("PRAGMA soft_heap_limit={HEAP_LIMIT};"))?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Turns on SQLite's query planner stability guarantee. Without it a statement whose
/// plan could depend on a bound value — every `LIMIT ?` in the bundled SQLite 3.50 — is marked
/// expired each time that value is bound, so the statement cache gave back a statement
/// that was compiled again on every run: 15 % of a task listing's instructions went to
/// the parser. Our plans never want to vary with values (the plan tests pin them).
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// The database holds key hashes: readable by its owner only (SPEC §5 secrets).
fn restrict_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// Opens a read-only connection for the pool.
fn open_reader_conn(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA cache_size=-1000;")?;
    stable_plans(&conn)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// Opens the database for a one-off command (CLI), without starting a writer thread.
fn open_plain(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Helper for `query_row` that may find nothing.
fn optional<T>(r: rusqlite::Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Parses stored JSON text into a raw value (it was validated on the way in).
fn raw_json(s: String) -> rusqlite::Result<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Checks an `If-Match` version against the current one.
fn check_version(if_match: Option<i64>, current: i64) -> Result<()> {
    match if_match {
        Some(v) if v != current => Err(StoreError::VersionMismatch(current)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod query_plan_tests;
