//! On SQLite, each connection's own thread answers its requests itself while a place
//! is free (`WORKERS` for reads, `WRITE_THREADS` for writes; probes need none): the
//! request is read, handled and written on one thread, with no hand-over to a worker
//! and back (two futex wake-ups and context switches a request; answering inline
//! took get_task from 36 to 65 thousand requests a second on the 2-core bench box).
//! A request that finds no place free queues for the pools below, as every request
//! did before, so the handlers running at once stay bounded by `max_handlers`
//! however many connections are open, and a flood of slow requests still queues.
//!
//! The worker pool: `WORKERS` threads block on tiny_http's queue (`recv_timeout`, so
//! each wakes now and then to see the stop flag), read the request, run the pipeline
//! inside `catch_unwind`, and write the response — always our own envelope, even
//! after a panic (a request dropped unanswered would get tiny_http's bare 500).
//!
//! Writes (POST, PATCH, DELETE) are handed to a second fixed pool of `WRITE_THREADS`
//! threads. A write spends its time waiting for the group commit's fsync; if it held
//! one of the few `WORKERS`, a commit batch could never hold more writes than there
//! are workers, and reads would queue behind fsyncs. With the hand-off, reads keep
//! flowing and a batch holds every write that arrived during the previous fsync.
//!
//! Health probes (`/health`, `/health/live`, `/health/ready` and their aliases) have
//! a queue and `PROBE_THREADS` threads of their own: a load balancer or systemd asking
//! whether we live must not wait behind requests that hold every worker (eight
//! dashboards scraping `/metrics`, a slow export). `/health/db` is not among them: it
//! waits on the database by design. So that a wedged pool still shows, every worker
//! stamps each pass through its queue, and readiness, `/health` and liveness answer
//! 503 when no worker has come back for `WORKERS_STALLED` (`WORKERS_DEAD` for
//! liveness).

pub(crate) mod app;
pub(crate) mod cors;
pub(crate) mod pipeline;
pub(crate) mod probe;
pub(crate) mod ratelimit;
// The wire types live below the router and the handlers; their old paths stay.
pub use crate::wire::{request, response};

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::ApiError;
pub(crate) use app::App;
use request::Request;
use response::Response;

/// How often an idle worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Threads that carry writes through the group commit (mostly asleep on it).
pub(crate) const WRITE_THREADS: usize = 64;
/// Writes waiting for a write thread before workers feel back-pressure.
const WRITE_QUEUE: usize = 1024;
/// Threads that answer only health probes (each answer takes microseconds).
pub(crate) const PROBE_THREADS: usize = 2;
/// A probe with more header lines than this goes to the workers: the probe lane is
/// for load balancers' small requests, not a cheap queue for a flood of big heads.
const PROBE_MAX_HEADERS: usize = 32;

/// The requests that go to the probe threads: a bodiless GET or HEAD of a probe path
/// whose answer comes from memory (the health cache), never from a slow query. Not
/// the watchdog's own probe: it is there to prove that the workers answer.
pub(crate) fn is_probe(rq: &tiny_http::Request) -> bool {
    use tiny_http::Method::{Get, Head};
    let path = rq.url().split('?').next().unwrap_or("");
    matches!(rq.method(), Get | Head)
        && rq.body_length().unwrap_or(0) == 0
        && rq.headers().len() <= PROBE_MAX_HEADERS
        && !rq
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding"))
        && !is_watchdog_probe(rq)
        && matches!(
            path,
            "/health"
                | "/healthz"
                | "/health/live"
                | "/health/liveness"
                | "/health/ready"
                | "/health/readiness"
        )
}

/// The most handlers that can run at once with `workers` workers: the pools' threads
/// and as many places again on connections' own threads (`Inline`).
pub(crate) fn max_handlers(workers: usize) -> usize {
    2 * (workers + WRITE_THREADS) + PROBE_THREADS
}

/// How many requests may be answered on their connections' own threads at once:
/// as many reads as there are workers, as many writes as write threads. Beyond
/// that a request queues for the pools as before, so the number of handlers running
/// at once stays bounded (twice the pools) however many connections are open.
struct Inline {
    reads: AtomicUsize,
    writes: AtomicUsize,
    max_reads: usize,
}

/// A place among the requests answered inline; given back on drop.
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

fn take_place(used: &AtomicUsize, max: usize) -> Option<Place<'_>> {
    used.fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
        (n < max).then_some(n + 1)
    })
    .ok()
    .map(|_| Place(used))
}

impl Inline {
    /// Answers `rq` on the calling thread (its connection's) if a place is free;
    /// otherwise gives it back to be queued. Health probes need no place: they are
    /// answered from memory. The watchdog's probe always goes to the workers: it is
    /// there to prove that they answer.
    fn serve(&self, app: &App, rq: tiny_http::Request) -> Option<tiny_http::Request> {
        if is_probe(&rq) {
            serve_one(app, rq);
            return None;
        }
        if is_watchdog_probe(&rq) {
            return Some(rq);
        }
        let place = match is_write(&rq) {
            true => take_place(&self.writes, WRITE_THREADS),
            false => take_place(&self.reads, self.max_reads),
        };
        match place {
            Some(_place) => {
                serve_one(app, rq);
                None
            }
            None => Some(rq),
        }
    }
}

fn is_watchdog_probe(rq: &tiny_http::Request) -> bool {
    rq.headers()
        .iter()
        .any(|h| h.field.equiv("User-Agent") && h.value.as_str() == probe::PROBE_AGENT)
}

/// Starts `n` workers serving `server`, and the write threads behind them. The
/// write threads leave once every worker has left and the write queue is empty.
/// Most requests never reach them: each connection's thread answers its own
/// requests while places are free (`Inline`), which saves two thread hand-overs a
/// request; the pools take what arrives beyond that.
pub(crate) fn spawn_workers(
    server: Arc<tiny_http::Server>,
    app: Arc<App>,
    n: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    // Not on PostgreSQL: there, with 32 connection threads busy answering health
    // probes inline, a database round trip (a ping) took up to 2.3 s on the bench
    // box (PostgreSQL on the same 2 cores), and `/health` p99 went 1.3 -> 267 ms.
    // Until that is understood, PostgreSQL requests take the pools as before.
    if !app.config.is_postgres() {
        let inline = Inline {
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            max_reads: n,
        };
        let inline_app = app.clone();
        server.serve_inline(Box::new(move |rq| inline.serve(&inline_app, rq)));
    }
    let (tx, rx) = sync_channel::<tiny_http::Request>(WRITE_QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let mut handles = Vec::with_capacity(n + WRITE_THREADS);
    for i in 0..n {
        let (server, app, tx) = (server.clone(), app.clone(), tx.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || worker(&server, &app, &tx))?,
        );
    }
    // Probe and write threads run short handlers: 256 KiB of stack keeps 64 cheap.
    let small = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .stack_size(256 * 1024)
            .spawn(f)
    };
    for i in 0..PROBE_THREADS {
        let (server, app) = (server.clone(), app.clone());
        handles.push(small(
            format!("probe-{i}"),
            Box::new(move || probe_thread(&server, &app)),
        )?);
    }
    for i in 0..WRITE_THREADS {
        let (app, rx) = (app.clone(), rx.clone());
        handles.push(small(
            format!("write-{i}"),
            Box::new(move || write_thread(&app, &rx)),
        )?);
    }
    Ok(handles)
}

/// Writes, and any request whose body may still be on the socket, go to the write
/// threads: a client dribbling a body (up to READ_TIMEOUT_SECONDS) must hold one of
/// the 64 mostly-sleeping write threads, never one of the few read workers that
/// answer `/health`. (tiny_http reads bodies of up to 1 KiB before handing over.)
fn is_write(rq: &tiny_http::Request) -> bool {
    use tiny_http::Method::{Delete, Patch, Post};
    matches!(rq.method(), Post | Patch | Delete)
        || rq.body_length().is_some_and(|n| n > 0)
        || rq.headers().iter().any(|h| {
            h.field.equiv("Transfer-Encoding")
                || (h.field.equiv("Connection")
                    && h.value.as_str().to_ascii_lowercase().contains("upgrade"))
        })
}

/// Serves reads here; hands writes to the write threads.
fn dispatch(app: &App, rq: tiny_http::Request, writes: &SyncSender<tiny_http::Request>) {
    if !is_write(&rq) {
        return serve_one(app, rq);
    }
    if let Err(e) = writes.send(rq) {
        // Only possible if every write thread died; serve it here rather than drop it.
        serve_one(app, e.0);
    }
}

fn write_thread(app: &App, queue: &Mutex<Receiver<tiny_http::Request>>) {
    loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match next {
            Ok(rq) => serve_one(app, rq),
            Err(_) => return, // every worker has left and the queue is empty
        }
    }
}

fn worker(server: &tiny_http::Server, app: &App, writes: &SyncSender<tiny_http::Request>) {
    // Each pass is stamped: the probes, answered elsewhere, tell from it whether the
    // workers still answer (lifecycle::WORKERS_STALLED).
    let recv = |s: &tiny_http::Server| {
        app.life.worker_pass();
        s.recv_timeout(POLL)
    };
    serve_queue(server, app, recv, |rq| dispatch(app, rq, writes));
}

fn probe_thread(server: &tiny_http::Server, app: &App) {
    serve_queue(
        server,
        app,
        |s| s.recv_priority_timeout(POLL),
        |rq| serve_one(app, rq),
    );
}

/// Takes requests from one of the server's queues until the server has stopped and
/// every connection is gone.
fn serve_queue(
    server: &tiny_http::Server,
    app: &App,
    recv: impl Fn(&tiny_http::Server) -> std::io::Result<Option<tiny_http::Request>>,
    serve: impl Fn(tiny_http::Request),
) {
    let connections = server.connection_stats();
    loop {
        match recv(server) {
            Ok(Some(rq)) => serve(rq),
            // Shutting down (SPEC §6): the listener is closed; every connection still
            // open may bring one more request, so leave only once all are gone.
            Ok(None) if app.life.stopping() => {
                if connections.accept_stopped() && connections.open() == 0 {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::warn!(target: "http", error:% = e; "receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Serves one request start to finish.
pub(crate) fn serve_one(app: &App, mut rq: tiny_http::Request) {
    let _inflight = app.life.begin_request();
    let started = Instant::now();
    let mut req = Request::read(&mut rq, app.config.max_body_bytes);
    req.request_id = pipeline::request_id(req.header("x-request-id"));
    let outcome = match req.body_error.take() {
        // The request never arrived whole (timeout, cut off, bad chunking): that is
        // its one answer, before routing or auth look at a partial request.
        Some(e @ request::BodyError::Read(_)) => {
            Ok((Response::error(&ApiError::from(e), &req.request_id), None))
        }
        other => {
            req.body_error = other;
            catch_unwind(AssertUnwindSafe(|| pipeline::handle(app, &req)))
        }
    };
    let (mut resp, route) = outcome.unwrap_or_else(|_| {
        log::error!(target: "http", request_id = req.request_id.as_str(), path = req.path.as_str(); "handler panicked");
        (Response::error(&ApiError::internal(), &req.request_id), None)
    });
    resp.headers.push(("X-Request-ID", req.request_id.clone()));
    if let Some(c) = req
        .header("x-correlation-id")
        .filter(|c| pipeline::sane_id(c))
    {
        resp.headers.push(("X-Correlation-ID", c.to_string()));
    }
    // Draining: ask keep-alive clients (HAProxy) to reconnect elsewhere.
    let close = app.life.phase() != crate::lifecycle::Phase::Ready;
    // live (SPEC §9): a stream or a parked claim is answered from elsewhere.
    if let Some(deferred) = crate::live::take_deferred() {
        if resp.status < 300 {
            return crate::live::hand_over(app, rq, req, resp, route, started, deferred);
        }
    }
    // Recorded before the reply is handed over: a client that reads /metrics right
    // after its answer must find that answer counted.
    pipeline::record(app, &req, route, resp.status, started.elapsed());
    response::send(rq, resp, close);
}
