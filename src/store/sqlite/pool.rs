//! The pool of read-only connections.
//!
//! Connections are opened lazily up to `max` and handed out one per read, so readers
//! never share a connection and never wait on the writer (WAL). A guard returns the
//! connection on drop, so a panic inside a read cannot leak it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use super::{open_reader_conn, Result, StoreError};

/// Longest a read waits for a free connection (as the writer's busy timeout).
const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct ReadPool {
    path: PathBuf,
    max: usize,
    opened: AtomicUsize,
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
    closed: AtomicBool,
}

/// Locks a mutex even if a panicking thread poisoned it: the protected data
/// (a list of idle connections) stays valid whatever the panic was.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Lease<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            lock(&self.pool.idle).push(c);
            self.pool.returned.notify_one();
        }
    }
}

impl ReadPool {
    pub fn new(path: PathBuf, max: usize) -> ReadPool {
        ReadPool {
            path,
            max,
            opened: AtomicUsize::new(0),
            idle: Mutex::new(Vec::with_capacity(max)),
            returned: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `f` with a connection of its own.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let lease = self.acquire()?;
        let conn = lease
            .conn
            .as_ref()
            .ok_or(StoreError::Unavailable("pool".into()))?;
        f(conn)
    }

    fn acquire(&self) -> Result<Lease<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("store is closed".into()));
        }
        let mut idle = lock(&self.idle);
        loop {
            if let Some(c) = idle.pop() {
                return Ok(Lease {
                    pool: self,
                    conn: Some(c),
                });
            }
            // Open another one if we are under the cap (reserve the slot first).
            if self.opened.fetch_add(1, Ordering::AcqRel) < self.max {
                drop(idle);
                return match open_reader_conn(&self.path) {
                    Ok(c) => Ok(Lease {
                        pool: self,
                        conn: Some(c),
                    }),
                    Err(e) => {
                        self.opened.fetch_sub(1, Ordering::AcqRel);
                        Err(e)
                    }
                };
            }
            self.opened.fetch_sub(1, Ordering::AcqRel);
            // Sized for every reading thread, so this wait is rare; bounded all the
            // same, so a stuck reader cannot hold every other one forever (503 Busy).
            let (guard, waited) = self
                .returned
                .wait_timeout(idle, WAIT)
                .unwrap_or_else(|e| e.into_inner());
            idle = guard;
            if waited.timed_out() && idle.is_empty() {
                return Err(StoreError::Busy);
            }
        }
    }

    /// Closes idle connections and refuses new reads.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.idle).clear();
    }
}
