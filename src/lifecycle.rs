//! The server's phase (starting → ready → draining → stopping) and the in-flight
//! request count (SPEC §6). What systemd hears about them is in `systemd`.
//!
//! The in-flight count is kept by a guard that lowers it in `Drop`, so a panicking
//! handler cannot leave it wrong (the shape of tiny_http's task-pool guard).

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// No worker has come back to its queue for this long: every one is held (wedged, or
/// by requests that never end), and readiness and `/health` say so with a 503, since
/// their probes are answered by threads of their own and would not notice otherwise.
pub const WORKERS_STALLED: Duration = Duration::from_secs(5);
/// The same, for liveness (`/health/live`): long enough that only a wedge trips it.
pub const WORKERS_DEAD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
    Stopping = 3,
}

/// Shared lifecycle state; all atomics.
pub struct Lifecycle {
    phase: AtomicU8,
    inflight: AtomicUsize,
    served: AtomicU64,
    born: Instant,
    /// Milliseconds after `born` when a worker last came back to its queue.
    worker_pass: AtomicU64,
}

/// Counts one request as in flight until dropped.
pub struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
        self.0.served.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: AtomicU8::new(Phase::Starting as u8),
            inflight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            born: Instant::now(),
            worker_pass: AtomicU64::new(0),
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }

    pub fn set(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    /// Workers leave their loop once this is true.
    pub fn stopping(&self) -> bool {
        self.phase() == Phase::Stopping
    }

    pub fn begin_request(&self) -> InFlight<'_> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// A worker is back at its queue (between requests, or idle every poll).
    pub fn worker_pass(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        self.worker_pass.fetch_max(now, Ordering::Relaxed);
    }

    /// How long since any worker was last back at its queue.
    pub fn workers_quiet(&self) -> Duration {
        let last = self.worker_pass.load(Ordering::Relaxed);
        Duration::from_millis((self.born.elapsed().as_millis() as u64).saturating_sub(last))
    }
}
