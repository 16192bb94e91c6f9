//! The store interface: the domain operations handlers, the pipeline and the watchdog
//! use, and the one error type they see. Handlers hold an `Arc<dyn Store>` and cannot
//! tell which engine stands behind it; no SQL and no driver type crosses this line.
//!
//! The operations are grouped by capability (as lldap does): `ProjectStore`,
//! `TaskStore`, `KeyStore`, `Probe` and `Retention`; `Store` is all of them. Each
//! engine lives in its own folder with its own migrations and connection setup
//! (`sqlite/`); what only one engine can do — SQLite's online backup, integrity
//! check, vacuum — stays beside it.

#[cfg(test)]
mod count_mix;
pub mod patch;
pub mod postgres;
pub mod queue;
pub mod sqlite;

use std::time::Duration;

use crate::model::*;

/// Why a store operation failed. Mapped by `From` to the API's error codes.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The named thing ("project", "task", "api key") does not exist.
    NotFound(&'static str),
    /// The operation conflicts with the current state.
    Conflict(String),
    /// The caller's lease token is stale or wrong, or its lease ran out (SPEC §5a).
    LeaseLost(String),
    /// A live lease protects the task; `If-Match` or the token overrides it.
    LeaseHeld,
    /// An `Idempotency-Key` reused with a different request.
    IdempotencyMismatch,
    /// The first request with this `Idempotency-Key` is still running.
    IdempotencyInFlight,
    /// A rule the body breaks that only the stored data can show (a dependency in
    /// another project, a cycle): `validation_failed` with this field and problem.
    Invalid(&'static str, String),
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
            StoreError::LeaseLost(m) => write!(f, "lease lost: {m}"),
            StoreError::LeaseHeld => write!(f, "a live lease holds the task"),
            StoreError::IdempotencyMismatch => write!(f, "idempotency key reused"),
            StoreError::IdempotencyInFlight => write!(f, "idempotent request in flight"),
            StoreError::Invalid(field, m) => write!(f, "{field}: {m}"),
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

/// A write made idempotent by an `Idempotency-Key` (SPEC §5a): the engine looks the
/// key up in the write's own transaction, and stores `render`'s answer with the write.
pub struct Idem<T> {
    /// Whose key: the API key's id (0 with `AUTH_DISABLED`).
    pub scope: i64,
    pub key: String,
    /// SHA-256 of method, path and body: the same key with another request is refused.
    pub fingerprint: [u8; 32],
    /// The answer the request gets, stored for replays.
    pub render: Box<dyn Fn(&T) -> Reply + Send>,
}

/// What an idempotent write did: ran now, or an earlier run's answer.
pub enum Outcome<T> {
    Done(T),
    Replay(Reply),
}

impl<T> Outcome<T> {
    /// The value of a write that ran now; `None` for a replay.
    pub fn done(self) -> Option<T> {
        match self {
            Outcome::Done(v) => Some(v),
            Outcome::Replay(_) => None,
        }
    }
}

/// How long a stored idempotent answer is kept.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

/// Open options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Read connections kept at most: one per thread that reads, so none waits (the
    /// server passes WORKERS + the write threads, which read API keys too).
    pub readers: usize,
    /// `PRAGMA synchronous` of the writer: FULL by default, so a 2xx means on disk.
    pub synchronous: Synchronous,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            readers: 4,
            synchronous: Synchronous::Full,
        }
    }
}

/// `PRAGMA synchronous` of the SQLite writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// An fsync per commit batch: a 2xx means on disk (SPEC §5).
    Full,
    /// WAL's fsync at checkpoints only: a power loss may take the last commits.
    /// For tests that measure something else.
    #[cfg(test)]
    Normal,
}

impl Synchronous {
    /// The pragma's value.
    pub fn as_sql(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            #[cfg(test)]
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Projects: list, read, create, update, delete (with their tasks and events).
pub trait ProjectStore {
    fn list_projects(
        &self,
        status: Option<ProjectStatus>,
        after: i64,
        limit: usize,
    ) -> Result<Page<Project>>;
    fn get_project(&self, id: i64) -> Result<Project>;
    fn create_project(
        &self,
        p: NewProject,
        actor: Option<String>,
        idem: Option<Idem<Project>>,
    ) -> Result<Outcome<Project>>;
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
    fn create_tasks(
        &self,
        pid: i64,
        new: Vec<NewTask>,
        actor: Option<String>,
        idem: Option<Idem<Vec<Task>>>,
    ) -> Result<Outcome<Vec<Task>>>;
    /// A task by id; with `pid`, only if it belongs to that project.
    fn get_task(&self, id: i64, pid: Option<i64>) -> Result<Task>;
    fn list_tasks(&self, pid: i64, q: TaskQuery) -> Result<Page<Task>>;
    /// A `PATCH`; a live lease refuses it (`LeaseHeld`) unless `if_match` or the
    /// lease's `token` comes with it.
    fn update_task(
        &self,
        id: i64,
        pid: Option<i64>,
        patch: TaskPatch,
        if_match: Option<i64>,
        token: Option<String>,
        actor: Option<String>,
    ) -> Result<Task>;
    fn delete_task(
        &self,
        id: i64,
        pid: Option<i64>,
        if_match: Option<i64>,
        token: Option<String>,
        actor: Option<String>,
    ) -> Result<()>;
    /// Atomically takes up to `claim.limit` claimable tasks of project `pid`, best
    /// first, each with a fresh lease token (in the answer only).
    fn claim(
        &self,
        pid: i64,
        claim: Claim,
        idem: Option<Idem<Vec<Task>>>,
    ) -> Result<Outcome<Vec<Task>>>;
    /// Extends a live lease the caller proves it holds.
    fn heartbeat(
        &self,
        id: i64,
        pid: Option<i64>,
        proof: LeaseProof,
        lease_seconds: i64,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>>;
    /// Completes a task whose live lease `token` names.
    fn complete(
        &self,
        id: i64,
        pid: Option<i64>,
        token: String,
        result: Option<String>,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>>;
    /// Fails the attempt of a task whose live lease the failure's token names: back to
    /// pending after a backoff, or failed (at the last attempt, or `retry: false`).
    fn fail(
        &self,
        id: i64,
        pid: Option<i64>,
        failure: Failure,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>>;
    /// Returns tasks whose lease ran out to pending (or fails them at their last
    /// attempt), up to `limit`; how many (at `limit` there may be more). Waiters
    /// wake on the events' commit, not on this answer.
    fn sweep_leases(&self, limit: usize) -> Result<usize>;

    fn stats(&self, pid: i64) -> Result<Stats>;
    /// Stats of these projects, by id; a project that does not exist (deleted since
    /// it was listed) is left out. A backend that can answers in one statement.
    fn stats_many(&self, pids: &[i64]) -> Result<Vec<Stats>> {
        let mut out = Vec::with_capacity(pids.len());
        for &pid in pids {
            match self.stats(pid) {
                Ok(s) => out.push(s),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
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
    /// Heap the engine holds inside this process (`db_memory_bytes`): SQLite's page
    /// caches and statements. None where the database runs in its own server.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }
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
    /// How the pruner paces its steps on this engine.
    fn pacing(&self) -> Pacing;
}

/// The pruner's pace: steps sized to take about `step_target` inside their
/// transaction, each followed by a rest of `rest_factor` times what it took.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub step_target: std::time::Duration,
    pub rest_factor: u32,
}

/// Reusable and reclaimable space (it lives with the gauges that show it).
pub(crate) use crate::metrics::Space;

/// What one `prune_step` deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneStep {
    /// Finished tasks of project `project` finished before `before` (`completed_at`;
    /// `updated_at` for cancelled ones), with their events and labels.
    Tasks { project: i64, before: i64 },
    /// Events created before `before`, oldest first.
    Events { before: i64 },
    /// Idempotency records older than 24 h at `now`.
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
            let pids: Vec<i64> = page.items.iter().map(|p| p.id).collect();
            out.extend(self.stats_many(&pids)?);
            match page.items.last() {
                Some(last) if page.more => after = last.id,
                _ => return Ok(out),
            }
        }
    }
}

impl<T: ProjectStore + TaskStore + KeyStore + Probe + Retention + Send + Sync> Store for T {}
