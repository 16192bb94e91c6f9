//! The lease sweeper (SPEC §5a): returns tasks whose lease ran out to pending (or to
//! the dead letter) within a second of expiry, whether or not anyone claims. (Stored
//! idempotent answers expire with the pruner's steps.) Every instance runs one;
//! the engines make both idempotent across instances (one writer on SQLite, `SKIP
//! LOCKED` on PostgreSQL), so a lease is swept once, with one event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::store::Store;

/// How often expired leases are looked for: well inside the 1 s of SPEC §5a.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Rows per step: each step is one short write; full steps follow each other at once.
const BATCH: usize = 500;

/// The running thread; `stop` ends it.
pub struct Sweeper {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Sweeper {
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<Sweeper> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || run(&*store, &flag))?;
        Ok(Sweeper {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for its current step.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(store: &dyn Store, stop: &AtomicBool) {
    // Log a failing database once, not four times a second.
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        // Each swept lease records an event; its commit wakes the project's waiters
        // (src/changes), so the projects that got work need no more here.
        // A full step may have left more behind (a burst of expiries): the next
        // step goes at once, or a burst of N would take N / BATCH pauses.
        match store.sweep_leases(BATCH) {
            Ok(swept) => {
                if failing {
                    failing = false;
                    log::info!(target: "sweeper", "lease sweeps work again");
                }
                if swept >= BATCH {
                    continue;
                }
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    log::warn!(target: "sweeper", error:% = e; "cannot sweep expired leases; retrying");
                }
            }
        }
        std::thread::sleep(SWEEP_EVERY);
    }
}
