//! Per-project wake-up signals for event streams, and the stream count and cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// A project's generation counter: bumped by every commit with events of the project.
pub struct Signal {
    gen: Mutex<u64>,
    cv: Condvar,
    /// The page of the feed a stream of the project read last (stream.rs).
    feed: Mutex<Option<SharedPage>>,
}

/// A page of a project's feed as one stream read it, for the project's other streams
/// that ask the same: after a commit every caught-up stream asks for the events after
/// the same id, and one read of the store serves them all (before, each stream read
/// for itself, and 500 streams on PostgreSQL turned 220 transactions a second into
/// 6 800, slowing every other request).
pub struct SharedPage {
    /// The signal's generation when it was read.
    pub gen: u64,
    pub after: i64,
    pub limit: usize,
    pub at: std::time::Instant,
    pub page: Arc<crate::model::Page<crate::model::Event>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Signal {
    fn new() -> Signal {
        Signal {
            gen: Mutex::new(0),
            cv: Condvar::new(),
            feed: Mutex::new(None),
        }
    }

    /// The project's last page read, locked: a stream holds it while it reads the
    /// store, so the others that want the same page wait for it instead of reading.
    pub fn feed(&self) -> MutexGuard<'_, Option<SharedPage>> {
        lock(&self.feed)
    }

    pub fn current(&self) -> u64 {
        *lock(&self.gen)
    }

    fn bump(&self) {
        *lock(&self.gen) += 1;
        self.cv.notify_all();
    }

    /// Waits until the generation moves past `seen` or `timeout` passes.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let g = lock(&self.gen);
        if *g != seen || hub().closing() {
            return;
        }
        let _ = self.cv.wait_timeout(g, timeout);
    }
}

pub struct Hub {
    signals: Mutex<HashMap<i64, Arc<Signal>>>,
    open: AtomicUsize,
    max: AtomicUsize,
    closing: AtomicBool,
}

/// The process's hub (the store's hooks have no `App` to reach it through).
pub fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| Hub {
        signals: Mutex::new(HashMap::new()),
        open: AtomicUsize::new(0),
        max: AtomicUsize::new(1024),
        closing: AtomicBool::new(false),
    })
}

/// One open stream's place under `MAX_STREAMS`, and its subscription; given back
/// when dropped.
pub struct Slot {
    pid: i64,
    pub signal: Arc<Signal>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let h = hub();
        let mut map = lock(&h.signals);
        // Ours and the map's: nobody else listens to this project any more.
        if Arc::strong_count(&self.signal) <= 2 {
            map.remove(&self.pid);
        }
        drop(map);
        h.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hub {
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn streams_open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// A place for one more stream of `pid`, or `None` at the cap (or shutting down).
    pub fn subscribe(&self, pid: i64) -> Option<Slot> {
        if self.closing() {
            return None;
        }
        let max = self.max.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        let signal = lock(&self.signals)
            .entry(pid)
            .or_insert_with(|| Arc::new(Signal::new()))
            .clone();
        Some(Slot { pid, signal })
    }

    /// Events of `pid` were committed: its streams look at the store again.
    pub fn notify(&self, pid: i64) {
        let signal = lock(&self.signals).get(&pid).cloned();
        if let Some(s) = signal {
            s.bump();
        }
    }

    /// Every stream: look again (after a reconnect of the notification listener,
    /// when notifications may have been lost).
    pub fn notify_all(&self) {
        let all: Vec<Arc<Signal>> = lock(&self.signals).values().cloned().collect();
        for s in all {
            s.bump();
        }
    }

    /// Shutdown: every stream ends at its next look, which this wakes.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.notify_all();
    }
}
