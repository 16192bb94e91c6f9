//! Committed changes, announced to whoever listens (src/live: event streams and
//! long-poll claims). A leaf: the store below announces, live above listens, and
//! neither imports the other. Without a listener (the CLI) announcements go nowhere.
//!
//! SQLite's writer notes each event in the transaction it has open (`note_event`)
//! and announces them once it knows whether the transaction committed
//! (`after_commit`); PostgreSQL's LISTEN thread announces what other instances (and
//! this one) committed (`events_committed`).

use std::cell::RefCell;
use std::sync::OnceLock;

/// What a listener does with announcements.
pub(crate) struct Listener {
    /// Events of a project were committed; `work`: one of them may have made a task
    /// claimable (every type but `claimed`).
    pub committed: fn(pid: i64, work: bool),
    /// Anything may have changed (a LISTEN connection was re-established).
    pub everything: fn(),
    /// The listener is shutting down: background threads serving it may stop.
    pub closing: fn() -> bool,
    /// Event streams open, long-poll claims parked and stream bytes held now, for
    /// /metrics.
    pub gauges: fn() -> LiveGauges,
}

/// The listener's gauges (`http_streams_open`, `claim_waiters`,
/// `http_streams_buffered_bytes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LiveGauges {
    /// Event streams open now.
    pub streams_open: usize,
    /// Long-poll claims parked now.
    pub claim_waiters: usize,
    /// Bytes of event-stream output read from the store and handed to connection
    /// threads but not yet written to their sockets.
    pub stream_buffered_bytes: usize,
}

static LISTENER: OnceLock<Listener> = OnceLock::new();

/// Registers the process's listener (once).
pub(crate) fn listen(l: Listener) {
    let _ = LISTENER.set(l);
}

thread_local! {
    /// Projects with events in the writer's open transaction (SQLite), and whether
    /// any of them may have made work available.
    static PENDING: RefCell<Vec<(i64, bool)>> = const { RefCell::new(Vec::new()) };
}

/// The store recorded an event of `pid` in the transaction this thread has open
/// (SQLite's writer): announced by `after_commit`, only if it commits.
pub(crate) fn note_event(pid: i64, kind: &str) {
    if LISTENER.get().is_none() {
        return;
    }
    let work = kind != "claimed";
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter_mut().find(|(id, _)| *id == pid) {
            Some(e) => e.1 |= work,
            None => p.push((pid, work)),
        }
    });
}

/// The transaction this thread had open ended: committed (announce its events) or
/// not (forget them).
pub(crate) fn after_commit(committed: bool) {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if let (true, Some(l)) = (committed, LISTENER.get()) {
        for (pid, work) in pending {
            (l.committed)(pid, work);
        }
    }
}

/// Events of project `pid` (`kinds` their types) were committed elsewhere.
pub(crate) fn events_committed<'a>(pid: i64, kinds: impl IntoIterator<Item = &'a str>) {
    if let Some(l) = LISTENER.get() {
        (l.committed)(pid, kinds.into_iter().any(|k| k != "claimed"));
    }
}

/// Anything may have changed: every listener looks again.
pub(crate) fn everything() {
    if let Some(l) = LISTENER.get() {
        (l.everything)();
    }
}

/// Whether the listener is shutting down (true without one: nobody to serve).
pub(crate) fn closing() -> bool {
    LISTENER.get().is_none_or(|l| (l.closing)())
}

/// The listener's gauges now (all zero without one).
pub(crate) fn gauges() -> LiveGauges {
    LISTENER
        .get()
        .map_or(LiveGauges::default(), |l| (l.gauges)())
}
