//! The server's phase (starting → ready → draining → stopping), the in-flight request
//! count, and the messages systemd hears about them (SPEC §6), including the start
//! timeout extensions sent while a migration runs before READY=1.
//!
//! The in-flight count is kept by a guard that lowers it in `Drop`, so a panicking
//! handler cannot leave it wrong (the shape of tiny_http's task-pool guard).

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
}

/// Sends one sd_notify message when running under systemd (no-op otherwise).
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(false, state) {
            log::warn!(target: "lifecycle", error:% = e; "sd_notify failed");
        }
    }
}

/// How much time each `EXTEND_TIMEOUT_USEC` asks systemd for.
const EXTEND_BY: Duration = Duration::from_secs(30);
/// How often the extension is renewed while start-up makes progress.
const EXTEND_EVERY: Duration = Duration::from_secs(10);

/// Keeps systemd's start timeout from running out during a long start-up step (a
/// migration) as long as it makes progress: `EXTEND_TIMEOUT_USEC` at once, then again
/// after every `EXTEND_EVERY` in which `progress` moved. A step stuck without
/// progress stops the extensions, and systemd's timeout applies. Ends on drop.
pub struct StartExtension {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StartExtension {
    /// Starts extending; `None` when not running under systemd (`NOTIFY_SOCKET`).
    pub fn begin(progress: Arc<AtomicU64>) -> Option<StartExtension> {
        std::env::var_os("NOTIFY_SOCKET")?;
        log::info!(target: "lifecycle", "migrating: extending systemd's start timeout while the migration makes progress");
        let (stop, stopped) = mpsc::channel();
        let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
        let thread = std::thread::Builder::new()
            .name("start-extend".into())
            .spawn(move || {
                extend_while(&progress, &stopped, EXTEND_EVERY, || {
                    notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)])
                })
            })
            .ok()?;
        Some(StartExtension {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for StartExtension {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Calls `extend` now, then after every `every` in which `progress` moved, until
/// `stopped` is closed.
fn extend_while(
    progress: &AtomicU64,
    stopped: &Receiver<()>,
    every: Duration,
    mut extend: impl FnMut(),
) {
    // Read the count before extending, so progress made meanwhile is not missed.
    let mut seen = progress.load(Ordering::Relaxed);
    extend();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let now = progress.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            extend();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extensions go on while progress is counted and stop when it stalls.
    #[test]
    fn extends_only_while_progress_is_made() {
        let progress = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let (tx, sent) = mpsc::channel();
        let counted = progress.clone();
        let t = std::thread::spawn(move || {
            extend_while(&counted, &stopped, Duration::from_millis(20), || {
                let _ = tx.send(());
            })
        });
        sent.recv().expect("at once");
        for _ in 0..3 {
            progress.fetch_add(1, Ordering::Relaxed);
            sent.recv_timeout(Duration::from_secs(5))
                .expect("renewed after progress");
        }
        // No progress: no more extensions, however long we wait.
        std::thread::sleep(Duration::from_millis(100));
        assert!(sent.try_recv().is_err(), "extended without progress");
        drop(stop);
        t.join().expect("join");
    }
}
