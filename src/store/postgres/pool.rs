//! A bounded pool of PostgreSQL connections (`DATABASE_POOL_SIZE`, SPEC §10), opened
//! on demand and dropped when broken. While the database is away, opening is retried
//! with a backoff (0.1 s doubling to 5 s): in between, callers get `Unavailable` at
//! once instead of each waiting out a connect timeout, so a worker is never tied up
//! by an outage and the API answers 503 + Retry-After. Waiting for a free connection
//! is bounded by `WAIT`; past it the caller gets `Busy` (also 503).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, Statement};

use super::connect::Connector;
use crate::store::{Result, StoreError};

/// Longest wait for a free connection before `Busy`.
const WAIT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One connection and the statements prepared on it.
pub struct Conn {
    pub client: Client,
    pub stmts: HashMap<String, Statement>,
    /// Set when an error says the connection is gone: it is dropped, not reused.
    pub broken: bool,
}

struct State {
    idle: Vec<Conn>,
    /// Connections open or being opened, idle ones included.
    open: usize,
    /// No connection attempt before this instant (backoff after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: String,
    closed: bool,
}

pub struct Pool {
    connector: Connector,
    size: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// A connection on loan; goes back to the pool (or away, if broken) when dropped.
pub struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut st = self.pool.lock();
        if conn.broken || conn.client.is_closed() || st.closed {
            st.open -= 1;
        } else {
            st.idle.push(conn);
        }
        drop(st);
        self.pool.freed.notify_one();
    }
}

impl Pool {
    pub fn new(connector: Connector, size: usize) -> Pool {
        Pool {
            connector,
            size: size.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                retry_at: None,
                backoff: BACKOFF_MIN,
                last_error: String::new(),
                closed: false,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the pool's lock can be taken within `budget` (the watchdog: a wedged
    /// pool is a wedged process; a database that is merely away is not).
    pub fn responsive(&self, budget: Duration) -> bool {
        let until = Instant::now() + budget;
        loop {
            match self.state.try_lock() {
                Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => return true,
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => return false,
            }
        }
    }

    /// Runs `f` on a pooled connection; a connection `f` marks broken (or that the
    /// driver found closed) is dropped afterwards instead of reused.
    pub fn with<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut lease = self.get()?;
        match lease.conn.as_mut() {
            Some(c) => f(c),
            None => Err(StoreError::Other("a lease without a connection".into())),
        }
    }

    /// A connection: an idle one, a new one if the pool has room, or the next one
    /// freed within `WAIT`.
    fn get(&self) -> Result<Lease<'_>> {
        let deadline = Instant::now() + WAIT;
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(StoreError::Unavailable("the store is closed".into()));
            }
            if let Some(conn) = st.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if st.open < self.size {
                if st.retry_at.is_some_and(|at| Instant::now() < at) {
                    return Err(StoreError::Unavailable(st.last_error.clone()));
                }
                st.open += 1;
                drop(st);
                return self.open_one();
            }
            let now = Instant::now();
            if now >= deadline {
                log::warn!(target: "store", pool_size = self.size, wait_ms = WAIT.as_millis() as u64; "no database connection came free in time: answering busy");
                return Err(StoreError::Busy);
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Opens a connection for a slot already counted in `open`.
    fn open_one(&self) -> Result<Lease<'_>> {
        let result = self.connector.connect();
        let mut st = self.lock();
        match result {
            Ok(client) => {
                if st.retry_at.take().is_some() {
                    log::info!(target: "store", "PostgreSQL reachable again");
                }
                st.backoff = BACKOFF_MIN;
                Ok(Lease {
                    pool: self,
                    conn: Some(Conn {
                        client,
                        stmts: HashMap::new(),
                        broken: false,
                    }),
                })
            }
            Err(e) => {
                st.open -= 1;
                if st.retry_at.is_none() {
                    log::error!(target: "store", error:% = e; "cannot connect to PostgreSQL; retrying with backoff");
                }
                st.retry_at = Some(Instant::now() + st.backoff);
                st.backoff = (st.backoff * 2).min(BACKOFF_MAX);
                // The message alone: it is handed out again inside `Unavailable`,
                // whose display adds "database unavailable: " itself.
                st.last_error = match &e {
                    StoreError::Unavailable(m) => m.clone(),
                    other => other.to_string(),
                };
                drop(st);
                self.freed.notify_one();
                Err(e)
            }
        }
    }

    /// Drops every idle connection and refuses new loans.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let idle = std::mem::take(&mut st.idle);
        st.open -= idle.len();
        drop(st);
        drop(idle);
    }
}
