//! Live (SPEC §9): event streams and long-poll claims, neither holding a request
//! worker.
//!
//! - `hub`: per-project wake-up signals. Every event this process commits (SQLite:
//!   after the writer's commit; PostgreSQL: through `LISTEN/NOTIFY`, also from other
//!   instances) bumps its project's signal. A wake-up is only a hint: what a stream
//!   sends and what a claim takes always comes from the store.
//! - `stream`: `GET /projects/{id}/events/stream`. The handler answers with a
//!   `Body::Stream` whose bytes the connection's own thread pulls (vendor/tiny_http
//!   conn.rs): the worker returns at once, and that thread reads the feed from the
//!   store and writes it.
//! - `waiters`: parked long-poll claims, a FIFO per project, retried on a few live
//!   threads when work may have become available (`work_available`), answered 204
//!   at their deadline by one timer thread. Each one's connection thread sleeps
//!   until its answer is handed over.
//!
//! A handler asks for one of these with `defer`; `http::serve_one` sees it after the
//! pipeline and calls `hand_over` with the tiny_http request instead of answering.

pub mod hub;
pub mod stream;
pub mod waiters;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::wire::{Request, Response};

/// Comment line written when a stream has been quiet this long (SPEC §9).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Longest a stream or a waiter goes without looking at the store itself, whatever
/// the wake-ups said (a lost notification delays, never loses).
pub const RECHECK: Duration = Duration::from_secs(1);

/// What a handler asks `serve_one` to do instead of answering at once.
pub enum Deferred {
    /// Answer 200 and stream this project's events.
    Stream(stream::EventStream),
    /// Park this claim until work comes or its time is up.
    Claim(waiters::Park),
}

thread_local! {
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Called by a handler (on the worker's thread) together with the response it would
/// give right now: that response's status and headers are the template of the
/// eventual answer.
pub fn defer(d: Deferred) {
    DEFERRED.with(|c| *c.borrow_mut() = Some(d));
}

/// What the handler just deferred, if anything (cleared).
pub fn take_deferred() -> Option<Deferred> {
    DEFERRED.with(|c| c.borrow_mut().take())
}

/// Event streams open now (`http_streams_open`).
pub fn streams_open() -> usize {
    hub::hub().streams_open()
}

/// Long-poll claims parked now (`claim_waiters`).
pub fn claim_waiters() -> usize {
    waiters::waiters().count()
}

/// A task of project `pid` may have become claimable (created, set back to pending,
/// lease swept, `not_before` reached, dependency completed, project resumed): the
/// oldest waiters of that project try to claim again. Cheap and non-blocking; safe to
/// call from anywhere, also from the store's writer thread. Only a hint: call it
/// after the change is committed.
pub fn work_available(pid: i64) {
    waiters::waiters().wake(pid);
}

/// Project `pid` was deleted (a deletion records no event): its streams end and its
/// waiters are answered now rather than at their next look at the store.
pub fn project_deleted(pid: i64) {
    hub::hub().notify(pid);
    work_available(pid);
}

/// SIGTERM: every stream ends, every waiter is answered 204, and nothing new is
/// parked or opened.
pub fn shutdown() {
    hub::hub().close();
    waiters::waiters().close();
}

/// Linux ≥ 6.16 gives each process a private futex hash of 4 buckets per online CPU
/// (16 on a 2-CPU VM). Every parked claim and open stream is a thread blocked on a
/// futex, so with a thousand of them each futex wake — every request's hand-off
/// between threads — walks a chain of ~60: get_task lost 25-45 % of its throughput
/// with 1 000 waiters (scripts/live-bench.py). A bigger private hash (prctl
/// PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS) keeps the chains short. Older kernels
/// refuse the call (EINVAL), harmlessly: they use the global hash.
///
/// Call it before the process starts its second thread (`server::serve` does, first
/// thing): resizing a hash threads already use waits for the kernel to retire the
/// old one, 33 ms here (strace -T), which delayed readiness from 22 to ~70 ms.
#[allow(unsafe_code)]
pub(crate) fn widen_futex_hash(max_streams: usize) {
    const PR_FUTEX_HASH: libc::c_int = 78;
    const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
    let slots = (2 * max_streams).next_power_of_two().clamp(1024, 1 << 16) as libc::c_ulong;
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let rc = unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_SET_SLOTS,
            slots,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        log::debug!(target: "live", error:% = std::io::Error::last_os_error(); "private futex hash not resized");
    }
}

/// What live needs of the HTTP server that hands it requests (http's `App`): live
/// answers them later, and counts them as the pipeline would have.
pub(crate) trait Host: Send + Sync {
    /// Counts the answered request in the metrics and the access log; `busy` is the
    /// time worked on it (a long poll's wait left out).
    fn record(&self, req: &Request, route: Option<usize>, status: u16, busy: Duration);
    /// Whether the server still serves (otherwise an answer closes its connection).
    fn ready(&self) -> bool;
}

/// Sets the caps (`MAX_STREAMS`) and starts the live threads; once per server. On
/// PostgreSQL (`database_url`) also the LISTEN thread that hears other instances.
pub fn start(
    host: std::sync::Arc<dyn Host>,
    max_streams: usize,
    database_url: Option<&crate::store::postgres::PgUrl>,
) {
    crate::changes::listen(crate::changes::Listener {
        committed: |pid, work| {
            hub::hub().notify(pid);
            if work {
                work_available(pid);
            }
        },
        everything: || hub::hub().notify_all(),
        closing: || hub::hub().closing(),
        gauges: || crate::changes::LiveGauges {
            streams_open: streams_open(),
            claim_waiters: claim_waiters(),
            stream_buffered_bytes: stream::buffered_bytes(),
        },
    });
    hub::hub().set_max(max_streams);
    waiters::waiters().start(host, max_streams);
    if let Some(url) = database_url {
        crate::store::postgres::notify::spawn(url);
    }
}

/// Takes over a request whose handler deferred: `resp` is the answer it would have
/// given now (its headers, CORS and request id included, are kept).
pub fn hand_over(
    app: &dyn Host,
    rq: tiny_http::Request,
    req: Request,
    resp: Response,
    route: Option<usize>,
    started: Instant,
    deferred: Deferred,
) {
    match deferred {
        Deferred::Stream(s) => stream::start(app, rq, req, resp, route, started, s),
        Deferred::Claim(p) => waiters::park(app, rq, req, resp, route, started, p),
    }
}
