//! The PostgreSQL engine behind the store interface (SPEC §10, issue #14): every byte
//! of PostgreSQL SQL, giving the same answers as the SQLite engine.
//!
//! Each operation runs in its own short transaction on a pooled connection
//! (`pool.rs`): PostgreSQL commits concurrently, so no writer thread or group commit.
//! Instants stay integer milliseconds and JSON stays text, exactly as SQLite keeps
//! them, so ids, versions, timestamps and JSON bytes come out the same.
//!
//! **The events feed never skips** (SPEC §10). Identity values are handed out before
//! commit, so with plain inserts transaction A could take event id 5, B id 6, B commit
//! and a reader following `after=` see 6, move on, and never see 5 when A commits.
//! Choice: every transaction takes a per-project advisory transaction lock
//! (`pg_advisory_xact_lock(EVENTS_LOCK, project_id)`) right before it appends its
//! events, as its last statement, and holds it until its commit. So within a
//! project, ids are assigned in commit order: whoever takes id n+1 waited for the
//! commit (and the visibility) of id n. The feed is per project, so only writers of
//! one project queue there, and only for the event insert plus the commit. (The
//! alternative, filtering readers by `pg_snapshot_xmin`, needs each transaction's
//! first event id, not its xid, since xids are not assigned in event-id order.)
//! `tests.rs` proves it with two connections committing out of order.

pub mod admin;
mod apikeys;
mod connect;
mod events;
mod idempotency;
pub mod migrate;
pub mod notify;
mod pool;
mod projects;
mod prune;
mod tasks;
pub mod url;

#[cfg(test)]
mod count_tests;
#[cfg(test)]
mod ripple_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Row, Statement};

use super::{Idem, KeyStore, Outcome, Probe, ProjectStore, Result, StoreError, TaskStore};
use crate::model::*;
use connect::Connector;
use pool::Pool;
pub use url::PgUrl;

/// How long `size_bytes` reuses its answer: /metrics stays O(1) (SPEC §5b).
const SIZE_CACHE: Duration = Duration::from_secs(5);
/// Attempts of a start's migration that meets busy tables, after the first.
const MIGRATE_TRIES: u32 = 5;
/// Prepared statements kept per connection before the cache starts over.
const MAX_STATEMENTS: usize = 256;

/// Times `PgStore::run` repeats a transaction PostgreSQL aborted to resolve a
/// deadlock or a serialization failure.
const CONFLICT_RETRIES: u32 = 5;

thread_local! {
    /// Set when a statement on this thread failed with 40P01 or 40001 (the error
    /// becomes `Busy`, which a lock timeout also is): `run` repeats only those.
    static CONFLICT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        if let Some(code) = e.code() {
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            return match code.code() {
                // serialization failure, deadlock, lock_timeout, statement_timeout,
                // too many connections: try again later.
                "40001" | "40P01" => {
                    CONFLICT.with(|c| c.set(true));
                    StoreError::Busy
                }
                // A 503 says only "busy": which wait ran out is for the log (a
                // repeated conflict is logged by `run` when it gives up).
                "55P03" | "57014" | "53300" => {
                    log::warn!(target: "store", code = code.code(), error = msg.as_str(); "the database refused or gave up: answering busy");
                    StoreError::Busy
                }
                "53100" => StoreError::Full,
                // 25P03: the server ended the session for idling inside a
                // transaction (this process stalled): the connection is gone.
                c if c.starts_with("08")
                    || c.starts_with("57P")
                    || c.starts_with("28")
                    || c == "3D000"
                    || c == "25P03" =>
                {
                    StoreError::Unavailable(msg)
                }
                _ => StoreError::Other(format!("{}: {msg}", code.code())),
            };
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Other(e.to_string())
        }
    }
}

/// One transaction on a pooled connection, with that connection's prepared statements;
/// or, for `PgStore::read`, the connection itself in autocommit mode.
pub struct Tx<'a> {
    c: Conn<'a>,
    stmts: &'a mut HashMap<String, Statement>,
}

enum Conn<'a> {
    Tx(postgres::Transaction<'a>),
    /// Each statement its own transaction: one round trip where BEGIN and COMMIT
    /// would add two.
    Auto(&'a mut postgres::Client),
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

/// `$body` with `$c` bound to the transaction or the client (same methods).
macro_rules! on {
    ($self:ident, $c:ident => $body:expr) => {
        match &mut $self.c {
            Conn::Tx($c) => $body,
            Conn::Auto($c) => $body,
        }
    };
}

impl Tx<'_> {
    fn stmt(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        if self.stmts.len() >= MAX_STATEMENTS {
            self.stmts.clear();
        }
        let s = on!(self, c => c.prepare(sql))?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        let s = self.stmt(sql)?;
        Ok(on!(self, c => c.query(&s, params))?)
    }

    pub fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        let s = self.stmt(sql)?;
        Ok(on!(self, c => c.query_opt(&s, params))?)
    }

    pub fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row> {
        let s = self.stmt(sql)?;
        Ok(on!(self, c => c.query_one(&s, params))?)
    }

    pub fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        let s = self.stmt(sql)?;
        Ok(on!(self, c => c.execute(&s, params))?)
    }

    /// Statements without parameters or results (migrations, locks).
    pub fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(on!(self, c => c.batch_execute(sql))?)
    }
}

/// The PostgreSQL store: a pool of connections.
pub struct PgStore {
    pool: Pool,
    size: Mutex<Option<(Instant, u64)>>,
}

impl PgStore {
    /// Connects, applies pending migrations under an advisory lock (instances starting
    /// together migrate once) and refuses a schema newer than this binary knows.
    pub fn open(url: &PgUrl, pool_size: usize) -> Result<PgStore> {
        let store = PgStore::connect(url, pool_size)?;
        // A migration locks tables other instances are writing: it may wait past the
        // lock timeout or be chosen as a deadlock's victim (rolled back whole). Try
        // again a few times before giving up at start.
        let mut tries = 0;
        loop {
            match store.run(|tx| migrate::apply(tx).map(|_| ())) {
                Err(StoreError::Busy) if tries < MIGRATE_TRIES => {
                    tries += 1;
                    log::warn!(target: "store", attempt = tries; "the migration met busy tables; trying again");
                    std::thread::sleep(Duration::from_millis(500 * tries as u64));
                }
                done => return done.map(|_| store),
            }
        }
    }

    /// Connects without migrating (`migrate status`).
    pub fn connect(url: &PgUrl, pool_size: usize) -> Result<PgStore> {
        let store = PgStore {
            pool: Pool::new(Connector::new(url)?, pool_size),
            size: Mutex::new(None),
        };
        // Fail at start, with the reason, rather than at the first request.
        store.run(|tx| tx.batch("SELECT 1"))?;
        Ok(store)
    }

    /// Runs `f` in one transaction and commits it. A connection found dead at BEGIN
    /// (the server restarted while it sat idle) is replaced once: nothing was sent
    /// yet, so that retry cannot repeat a write. A transaction PostgreSQL aborted as a
    /// deadlock victim or a serialization failure (40P01, 40001) changed nothing and
    /// runs again after a short random wait, up to `CONFLICT_RETRIES` times, before
    /// the caller sees `Busy`: two writers that lock the same rows in different
    /// orders (a ripple through the dependents, a creation reading its dependencies,
    /// an ending attempt and a block walk on one count shard) cost the loser a
    /// repeat, not its request. So `f` may run more than once, each time on a fresh
    /// transaction.
    pub fn run<T>(&self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        crate::metrics::db_query();
        let (mut lost, mut conflicts) = (0, 0);
        loop {
            CONFLICT.with(|c| c.set(false));
            let out = self.pool.with(|conn| {
                let t = match conn.client.transaction() {
                    Ok(t) => t,
                    Err(e) => {
                        let e = StoreError::from(e);
                        if matches!(e, StoreError::Unavailable(_)) {
                            conn.broken = true;
                            if lost == 0 {
                                return Ok(None);
                            }
                        }
                        return Err(e);
                    }
                };
                let mut tx = Tx {
                    c: Conn::Tx(t),
                    stmts: &mut conn.stmts,
                };
                let result = f(&mut tx).and_then(|v| {
                    if let Conn::Tx(t) = tx.c {
                        t.commit()?;
                    }
                    Ok(v)
                });
                if let Err(StoreError::Unavailable(_)) = result {
                    conn.broken = true;
                }
                result.map(Some)
            });
            match out {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => lost += 1,
                Err(StoreError::Busy)
                    if conflicts < CONFLICT_RETRIES && CONFLICT.with(|c| c.get()) =>
                {
                    conflicts += 1;
                    log::debug!(target: "store", attempt = conflicts; "transaction aborted by a deadlock or serialization failure; running it again");
                    // Started again at once, the loser often reaches the contested row
                    // before the winner and the same cycle forms again: wait first, a
                    // random part of 4, 8, 16, 32, 64 ms (the connection is back in
                    // the pool meanwhile).
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::from(d.subsec_nanos()));
                    let window_us = (2_000u64 << conflicts).max(1);
                    std::thread::sleep(Duration::from_micros(nanos % window_us));
                }
                Err(StoreError::Busy) if CONFLICT.with(|c| c.get()) => {
                    log::warn!(target: "store", attempts = conflicts + 1; "a transaction kept meeting deadlocks or serialization failures: answering busy");
                    return Err(StoreError::Busy);
                }
                Err(e) => return Err(e),
            }
            if lost > 1 {
                return Err(StoreError::Unavailable(
                    "the database connection was lost".into(),
                ));
            }
        }
    }

    /// Runs `f`, which only reads, without a transaction: each statement sees what
    /// was committed when it started. For a read of one statement (a task, a key)
    /// this saves the BEGIN and COMMIT round trips; statements that must agree with
    /// each other belong in `run`. A connection found dead is replaced once: a read
    /// can be repeated.
    pub fn read<T>(&self, f: impl Fn(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        crate::metrics::db_query();
        let mut attempt = 0;
        loop {
            let out = self.pool.with(|conn| {
                let mut tx = Tx {
                    c: Conn::Auto(&mut conn.client),
                    stmts: &mut conn.stmts,
                };
                let result = f(&mut tx);
                if let Err(StoreError::Unavailable(_)) = result {
                    conn.broken = true;
                }
                Ok(result)
            })?;
            match out {
                Err(StoreError::Unavailable(_)) if attempt == 0 => attempt += 1,
                done => return done,
            }
        }
    }
}

/// Checks an `If-Match` version against the current one.
fn check_version(if_match: Option<i64>, current: i64) -> Result<()> {
    match if_match {
        Some(v) if v != current => Err(StoreError::VersionMismatch(current)),
        _ => Ok(()),
    }
}

/// Stored JSON text as a raw value (it was validated on the way in).
fn raw_json(s: String) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(s).map_err(|e| StoreError::Other(e.to_string()))
}

impl Probe for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// `pg_database_size`, at most `SIZE_CACHE` old; the last answer while the
    /// database is away.
    fn size_bytes(&self) -> Option<u64> {
        let mut cached = self.size.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, n)) = *cached {
            if at.elapsed() < SIZE_CACHE {
                return Some(n);
            }
        }
        let fresh = self.run(|tx| {
            let r = tx.query_one("SELECT pg_database_size(current_database())", &[])?;
            Ok(r.get::<_, i64>(0).max(0) as u64)
        });
        match fresh {
            Ok(n) => {
                *cached = Some((Instant::now(), n));
                Some(n)
            }
            Err(_) => cached.map(|(_, n)| n),
        }
    }

    /// A round trip on a pooled connection; fails while the database is away.
    fn ping(&self) -> Result<Duration> {
        let t = Instant::now();
        self.run(|tx| tx.batch("SELECT 1"))?;
        Ok(t.elapsed())
    }

    /// Alive unless the pool itself is wedged: a database that is away is not a
    /// reason for systemd to restart us (SPEC §10), so the database is not asked.
    fn writer_alive(&self, budget: Duration) -> Result<()> {
        if self.pool.responsive(budget) {
            Ok(())
        } else {
            Err(StoreError::Busy)
        }
    }

    fn close(&self) -> Result<()> {
        self.pool.close();
        Ok(())
    }

    #[cfg(feature = "test-hooks")]
    /// Test hook: holds a connection for `hold` (PostgreSQL has no single writer).
    fn hold_writer(&self, hold: Duration, _progressing: bool) -> Result<()> {
        self.run(|tx| tx.batch(&format!("SELECT pg_sleep({})", hold.as_secs_f64())))
    }
}

impl ProjectStore for PgStore {
    fn list_projects(
        &self,
        status: Option<ProjectStatus>,
        after: i64,
        limit: usize,
    ) -> Result<Page<Project>> {
        self.read(|tx| projects::list(tx, status, after, limit))
    }

    fn get_project(&self, id: i64) -> Result<Project> {
        self.read(|tx| projects::get(tx, id, false))
    }

    fn create_project(
        &self,
        p: NewProject,
        actor: Option<String>,
        idem: Option<Idem<Project>>,
    ) -> Result<Outcome<Project>> {
        self.run(|tx| {
            idempotency::run(tx, idem.as_ref(), |tx| {
                projects::insert(tx, &p, actor.as_deref())
            })
        })
    }

    fn update_project(
        &self,
        id: i64,
        patch: ProjectPatch,
        if_match: Option<i64>,
        actor: Option<String>,
    ) -> Result<Project> {
        self.run(|tx| projects::update(tx, id, &patch, if_match, actor.as_deref()))
    }

    fn delete_project(&self, id: i64, if_match: Option<i64>) -> Result<()> {
        self.run(|tx| projects::delete(tx, id, if_match))
    }
}

impl TaskStore for PgStore {
    fn create_tasks(
        &self,
        pid: i64,
        new: Vec<NewTask>,
        actor: Option<String>,
        idem: Option<Idem<Vec<Task>>>,
    ) -> Result<Outcome<Vec<Task>>> {
        self.run(|tx| {
            idempotency::run(tx, idem.as_ref(), |tx| {
                tasks::insert_many(tx, pid, new.clone(), actor.as_deref())
            })
        })
    }

    fn get_task(&self, id: i64, pid: Option<i64>) -> Result<Task> {
        self.read(|tx| tasks::get(tx, id, pid, false))
    }

    fn list_tasks(&self, pid: i64, q: TaskQuery) -> Result<Page<Task>> {
        self.read(|tx| tasks::list(tx, pid, &q))
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
        self.run(|tx| {
            tasks::update(
                tx,
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
        self.run(|tx| tasks::delete(tx, id, pid, if_match, token.as_deref(), actor.as_deref()))
    }

    fn claim(
        &self,
        pid: i64,
        claim: Claim,
        idem: Option<Idem<Vec<Task>>>,
    ) -> Result<Outcome<Vec<Task>>> {
        self.run(|tx| idempotency::run(tx, idem.as_ref(), |tx| tasks::claim_next(tx, pid, &claim)))
    }

    fn heartbeat(
        &self,
        id: i64,
        pid: Option<i64>,
        proof: LeaseProof,
        lease_seconds: i64,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>> {
        self.run(|tx| {
            idempotency::run(tx, idem.as_ref(), |tx| {
                tasks::heartbeat(tx, id, pid, &proof, lease_seconds)
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
        self.run(|tx| {
            idempotency::run(tx, idem.as_ref(), |tx| {
                tasks::complete(tx, id, pid, &token, result.clone())
            })
        })
    }

    fn fail(
        &self,
        id: i64,
        pid: Option<i64>,
        failure: Failure,
        idem: Option<Idem<Task>>,
    ) -> Result<Outcome<Task>> {
        self.run(|tx| idempotency::run(tx, idem.as_ref(), |tx| tasks::fail(tx, id, pid, &failure)))
    }

    /// One short transaction per project with expired leases; rows another instance
    /// is sweeping are skipped (`SKIP LOCKED`), so instances never sweep one twice.
    fn sweep_leases(&self, limit: usize) -> Result<usize> {
        let mut swept = 0;
        while swept < limit {
            let now = crate::clock::now_ms();
            let left = (limit - swept).min(100) as i64;
            let step = self.run(|tx| match tasks::next_expired(tx, now)? {
                Some(pid) => tasks::sweep_project(tx, pid, now, left).map(Some),
                None => Ok(None),
            })?;
            match step {
                Some(n) if n > 0 => swept += n,
                _ => break,
            }
        }
        Ok(swept)
    }

    fn stats(&self, pid: i64) -> Result<Stats> {
        self.read(|tx| tasks::stats(tx, pid))
    }

    fn stats_many(&self, pids: &[i64]) -> Result<Vec<Stats>> {
        self.read(|tx| tasks::stats_many(tx, pids))
    }

    fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>> {
        self.read(tasks::count_by_status)
    }

    fn list_events(&self, pid: i64, after: i64, limit: usize) -> Result<Page<Event>> {
        self.read(|tx| events::list(tx, pid, after, limit))
    }
}

impl KeyStore for PgStore {
    fn find_key(&self, hash: [u8; 32]) -> Result<Option<ApiKey>> {
        self.read(|tx| apikeys::find(tx, &hash))
    }

    fn create_key(
        &self,
        name: String,
        role: Role,
        prefix: String,
        hash: [u8; 32],
    ) -> Result<ApiKey> {
        self.run(|tx| apikeys::insert(tx, &name, role, &prefix, &hash))
    }

    fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.run(apikeys::list)
    }

    fn revoke_key(&self, id: i64) -> Result<ApiKey> {
        self.run(|tx| apikeys::revoke(tx, id))
    }
}
