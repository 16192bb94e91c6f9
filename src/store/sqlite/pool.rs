//! The pool of read-only connections.
//!
//! Connections are opened lazily up to `max` and handed out one per read, so readers
//! never share a connection and never wait on the writer (WAL). A guard returns the
//! connection on drop, so a panic inside a read cannot leak it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{open_reader_conn, Result, StoreError};

/// Longest a read waits for a free connection (as the writer's busy timeout), in
/// all: being woken and losing the freed connection to another reader does not
/// start the wait over.
const WAIT: Duration = Duration::from_secs(5);

pub struct ReadPool {
    path: PathBuf,
    max: usize,
    wait: Duration,
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
        ReadPool::with_wait(path, max, WAIT)
    }

    fn with_wait(path: PathBuf, max: usize, wait: Duration) -> ReadPool {
        ReadPool {
            path,
            max,
            wait,
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
        let deadline = Instant::now() + self.wait;
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
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Busy);
            }
            idle = self
                .returned
                .wait_timeout(idle, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Closes idle connections and refuses new reads.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.idle).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Being woken without getting a connection (another reader took the returned
    /// one first) does not start the wait over: `Busy` after `wait` in all.
    #[test]
    fn wakeups_do_not_extend_the_wait() {
        let dir = std::env::temp_dir().join(format!("pool-wake-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL;"))
            .expect("db");
        let pool = std::sync::Arc::new(ReadPool::with_wait(path, 1, Duration::from_millis(200)));
        let _held = pool.acquire().expect("first");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // Wakes the waiter every 10 ms for up to 3 s, never freeing a connection.
        let waker = {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(3);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    pool.returned.notify_all();
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let started = Instant::now();
        let got = pool.acquire().map(|_| ());
        let waited = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        waker.join().expect("waker");
        assert!(matches!(got, Err(StoreError::Busy)), "{got:?}");
        assert!(waited < Duration::from_secs(1), "waited {waited:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Nothing free and nothing returned: `Busy` after the wait, not before.
    #[test]
    fn a_full_pool_answers_busy_after_the_wait() {
        let dir = std::env::temp_dir().join(format!("pool-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL;"))
            .expect("db");
        let pool = ReadPool::with_wait(path, 1, Duration::from_millis(200));
        let _held = pool.acquire().expect("first");
        let started = Instant::now();
        assert!(matches!(pool.acquire(), Err(StoreError::Busy)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
