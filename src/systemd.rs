//! Messages to systemd (SPEC §6): `sd_notify` when running under it, and the start
//! timeout extensions sent while a migration runs before READY=1. A leaf: the store
//! extends the timeout during its migration, the server and watchdog notify.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
