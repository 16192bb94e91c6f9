//! The store interface: the domain operations handlers, the pipeline and the watchdog
//! use, and the one error type they see. Handlers hold an `Arc<dyn Store>` and cannot
//! tell which engine stands behind it; no SQL and no driver type crosses this line.
//!
//! The operations are grouped by capability (as lldap does): `ProjectStore`,
//! `TaskStore`, `KeyStore`, `Probe` and `Retention`; `Store` is all of them. Each
//! engine lives in its own folder with its own migrations and connection setup
//! (`sqlite/`); what only one engine can do — SQLite's online backup, integrity
//! check, vacuum — stays beside it.

pub mod patch;
pub mod postgres;
pub mod sqlite;

use std::time::Duration;

use crate::model::*;

/// Why a store operation failed. Mapped by `From` to the API's error codes.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The named thing ("project", "task", "api key") does not exist.
    NotFound(&'static str),
    /// The operation conflicts with the current state (e.g. a lease held by another agent).
    Conflict(String),
    /// `If-Match` named a version that is no longer current; carries the current one.
    VersionMismatch(i64),
    /// The database stayed locked longer than the busy timeout.
    Busy,
    /// The disk (or the database's size limit) is full.
    Full,
    /// The store cannot serve at all (closed, file unreadable, writer gone).
    Unavailable(String),
    /// Anything else; the text is for logs, never for clients.
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound(what) => write!(f, "{what} not found"),
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::VersionMismatch(v) => write!(f, "current version is {v}"),
            StoreError::Busy => write!(f, "database is busy"),
            StoreError::Full => write!(f, "database or disk is full"),
            StoreError::Unavailable(m) => write!(f, "database unavailable: {m}"),
            StoreError::Other(m) => write!(f, "database error: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Open options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Read connections kept at most (one per worker is enough: no worker waits).
    pub readers: usize,
    /// `PRAGMA synchronous` of the writer: FULL by default, so a 2xx means on disk.
    pub synchronous: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            readers: 4,
            synchronous: "FULL",
        }
    }
}

/// Projects: list, read, create, update, delete (with their tasks and events).
pub trait ProjectStore {
    fn list_projects(
        &self,
        status: Option<String>,
        after: i64,
        limit: usize,
    ) -> Result<Page<Project>>;
    fn get_project(&self, id: i64) -> Result<Project>;
    fn create_project(&self, p: NewProject, actor: Option<String>) -> Result<Project>;
    fn update_project(
        &self,
        id: i64,
        patch: ProjectPatch,
        if_match: Option<i64>,
        actor: Option<String>,
    ) -> Result<Project>;
    fn delete_project(&self, id: i64, if_match: Option<i64>) -> Result<()>;
}

/// Tasks, claims and leases, counts and the activity feed.
pub trait TaskStore {
    /// Creates all of `new` in project `pid`, or none of them.
    fn create_tasks(&self, pid: i64, new: Vec<NewTask>, actor: Option<String>)
        -> Result<Vec<Task>>;
    /// A task by id; with `pid`, only if it belongs to that project.
    fn get_task(&self, id: i64, pid: Option<i64>) -> Result<Task>;
    fn list_tasks(&self, pid: i64, q: TaskQuery) -> Result<Page<Task>>;
    fn update_task(
        &self,
        id: i64,
        pid: Option<i64>,
        patch: TaskPatch,
        if_match: Option<i64>,
        actor: Option<String>,
    ) -> Result<Task>;
    fn delete_task(
        &self,
        id: i64,
        pid: Option<i64>,
        if_match: Option<i64>,
        actor: Option<String>,
    ) -> Result<()>;
    /// Atomically takes the best claimable task of project `pid`, or `None`.
    fn claim(&self, pid: i64, claim: Claim) -> Result<Option<Task>>;
    /// Extends the lease of a task `agent` holds.
    fn heartbeat(
        &self,
        id: i64,
        pid: Option<i64>,
        agent: String,
        lease_seconds: i64,
    ) -> Result<Task>;
    fn stats(&self, pid: i64) -> Result<Stats>;
    /// Task counts by status over all projects (the `tasks{status}` gauge).
    fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>>;
    fn list_events(&self, pid: i64, after: i64, limit: usize) -> Result<Page<Event>>;
}

/// API keys: stored as hashes only.
pub trait KeyStore {
    /// The live (unrevoked) key whose hash is `hash`.
    fn find_key(&self, hash: [u8; 32]) -> Result<Option<ApiKey>>;
    fn create_key(
        &self,
        name: String,
        role: Role,
        prefix: String,
        hash: [u8; 32],
    ) -> Result<ApiKey>;
    fn list_keys(&self) -> Result<Vec<ApiKey>>;
    fn revoke_key(&self, id: i64) -> Result<ApiKey>;
}

/// What health checks and the watchdog ask of the engine.
pub trait Probe {
    /// `"sqlite"` or `"postgres"`, for `/health/db` (SPEC §10).
    fn backend(&self) -> &'static str;
    /// Time a trivial query takes (health probes); fails when the database is away.
    fn ping(&self) -> Result<Duration>;
    /// Whether writes answer or make progress within `budget` (the watchdog).
    fn writer_alive(&self, budget: Duration) -> Result<()>;
    /// Bytes the database takes on disk (`db_size_bytes`), if the engine can tell cheaply.
    fn size_bytes(&self) -> Option<u64>;
    /// Finishes queued writes and closes (shutdown).
    fn close(&self) -> Result<()>;
    /// Test hook: occupies the writer for `hold`, computing or stuck.
    #[cfg(feature = "test-hooks")]
    fn hold_writer(&self, hold: Duration, progressing: bool) -> Result<()>;
}

/// What the pruner (SPEC §5c, `crate::pruner`) asks of the engine.
pub trait Retention {
    /// One small batch of pruning (one short transaction; on SQLite one writer job),
    /// at most `limit` rows of one kind. Instants are epoch milliseconds.
    fn prune_step(&self, step: PruneStep, limit: usize) -> Result<PruneCount>;
    /// Space figures for /metrics and the run's log line: SQLite's free pages,
    /// PostgreSQL's dead tuples of the hot tables.
    fn space(&self) -> Result<Space>;
}

/// Reusable and reclaimable space, as each engine can tell it cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Space {
    /// SQLite: pages on the free list (reused before the file grows).
    pub free_pages: Option<i64>,
    /// SQLite: bytes a page.
    pub page_size: Option<i64>,
    /// PostgreSQL: (table, dead tuples, live tuples) from `pg_stat_user_tables`.
    pub tuples: Vec<(&'static str, i64, i64)>,
}

/// What one `prune_step` deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneStep {
    /// Finished tasks of project `project` finished before `before` (`completed_at`;
    /// `updated_at` for cancelled ones), with their events and labels.
    Tasks { project: i64, before: i64 },
    /// Events created before `before`, oldest first.
    Events { before: i64 },
    /// Idempotency records expired at `now` (#15 fills this in).
    Idempotency { now: i64 },
}

/// What one step deleted; `more` when it stopped at its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCount {
    pub tasks: u64,
    pub events: u64,
    pub idempotency: u64,
    pub more: bool,
    /// Whether this step ran at all: `false` when another instance holds the
    /// pruning lock (PostgreSQL), so this instance leaves the run to it.
    pub ran: bool,
    /// Time spent inside the step's transaction, microseconds.
    pub micros: u64,
}

/// Every capability of an engine: what the server holds as `Arc<dyn Store>`.
pub trait Store: ProjectStore + TaskStore + KeyStore + Probe + Retention + Send + Sync {
    /// Stats of every project, oldest project first (`GET /stats`, the dashboard's
    /// overview in one request). Each project costs its few counter rows and two
    /// index lookups, whatever its number of tasks.
    fn stats_all(&self) -> Result<Vec<Stats>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.list_projects(None, after, 500)?;
            for p in &page.items {
                match self.stats(p.id) {
                    Ok(s) => out.push(s),
                    // Deleted between the listing and its stats: not in the overview.
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.items.last() {
                Some(last) if page.more => after = last.id,
                _ => return Ok(out),
            }
        }
    }
}

impl<T: ProjectStore + TaskStore + KeyStore + Probe + Retention + Send + Sync> Store for T {}
