//! dashboard-backend patch: per-connection limits for a server that faces the
//! internet (or HAProxy) directly. Upstream tiny_http 0.12 has no read or idle
//! timeouts, no cap on open connections and no bound on a request head, and its
//! accept thread exits on the first accept error (EMFILE). See `PATCHES.md`.

use std::io::{Error as IoError, ErrorKind, Read, Result as IoResult};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits applied to every accepted connection (`Server::from_listener_with_limits`).
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// A request's head and body must arrive within this from its first byte; also
    /// bounds each blocked write of a response (SO_SNDTIMEO).
    pub read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Connections beyond this many are answered 503 and closed at once.
    pub max_connections: usize,
    /// Request line plus headers larger than this get 431 and a close.
    pub max_head_bytes: usize,
    /// Bodies are read ahead by the connection up to this many bytes; a longer one is
    /// left unread (the application answers 413 and the connection closes).
    pub max_body_bytes: usize,
    /// Body of the responses the connection layer writes itself (400, 408, 431,
    /// 503): `(status, message) -> (content type, body)`.
    pub error_body: fn(u16, &str) -> (&'static str, Vec<u8>),
    /// Requests for which this is true (health probes) go to a queue of their own,
    /// read with `Server::recv_priority_timeout`, so that they never wait behind
    /// requests that hold every worker.
    pub priority: fn(&crate::Request) -> bool,
}

/// Counters of the connection layer, readable while the server runs.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    accept_errors: AtomicU64,
    /// The server stopped accepting: idle connections close, busy ones after their reply.
    closing: std::sync::atomic::AtomicBool,
    /// The accept loop has ended (its listener is closed).
    accept_stopped: std::sync::atomic::AtomicBool,
    /// Bytes of request heads and bodies held by all connections (`Budget`).
    buffered: AtomicUsize,
}

/// All connections together hold at most this many bytes of request heads beyond
/// their first 4 KiB and of request bodies read ahead of their workers.
pub(crate) const BUFFER_BUDGET: usize = 48 << 20;

/// Bytes taken from the shared budget; given back on drop.
pub(crate) struct Budget {
    stats: Arc<ConnectionStats>,
    held: usize,
}

impl Budget {
    pub(crate) fn new(stats: Arc<ConnectionStats>) -> Budget {
        Budget { stats, held: 0 }
    }

    /// Takes `n` more bytes if the budget allows; false when it is spent.
    pub(crate) fn take(&mut self, n: usize) -> bool {
        let prev = self.stats.buffered.fetch_add(n, Ordering::AcqRel);
        if prev + n > BUFFER_BUDGET {
            self.stats.buffered.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.held += n;
        true
    }

    /// Gives everything back.
    pub(crate) fn release(&mut self) {
        self.stats.buffered.fetch_sub(self.held, Ordering::AcqRel);
        self.held = 0;
    }

    pub(crate) fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.release();
    }
}

impl ConnectionStats {
    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections refused with 503 because `max_connections` were open.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    /// Connections closed by the read or idle timeout.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
    /// accept(2) failures survived (EMFILE, ECONNABORTED, ...).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }

    /// Whether the server has stopped accepting (connections close after their reply).
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
    /// Bytes of request heads and bodies buffered right now (bounded by the budget).
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Whether the accept loop has ended and closed its listener.
    pub fn accept_stopped(&self) -> bool {
        self.accept_stopped.load(Ordering::Acquire)
    }
    pub(crate) fn note_accept_stopped(&self) {
        self.accept_stopped.store(true, Ordering::Release);
    }
    pub(crate) fn begin_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn note_accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn note_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn note_timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection as open until the guard drops; `None` when full.
    pub(crate) fn admit(self: &Arc<Self>, max: usize) -> Option<OpenGuard> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(OpenGuard(self.clone()))
    }
}

/// Decrements the open-connection count when the connection's task ends.
pub(crate) struct OpenGuard(Arc<ConnectionStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a connection is in its request cycle, for the deadlines.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// A new connection that has sent nothing yet: it gets the read timeout, not the
    /// idle one, so a flood of silent connections cannot hold the slots for a minute.
    Fresh(Option<Instant>),
    /// Between requests; the idle clock starts at the first read attempt.
    Idle(Option<Instant>),
    /// A request has started arriving; it must be complete by this instant.
    Active(Instant),
}

/// The deadline state one connection's readers share.
#[derive(Debug)]
pub(crate) struct Clock {
    phase: Mutex<Phase>,
    read_timeout: Duration,
    idle_timeout: Duration,
    stats: Arc<ConnectionStats>,
}

impl Clock {
    pub(crate) fn new(limits: &ConnectionLimits, stats: Arc<ConnectionStats>) -> Arc<Clock> {
        Arc::new(Clock {
            phase: Mutex::new(Phase::Fresh(None)),
            read_timeout: limits.read_timeout,
            idle_timeout: limits.idle_timeout,
            stats,
        })
    }

    pub(crate) fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    pub(crate) fn stats_arc(&self) -> Arc<ConnectionStats> {
        self.stats.clone()
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new request may start now: back to the idle clock.
    pub(crate) fn between_requests(&self) {
        let mut p = self.phase();
        // A connection that has not spoken yet keeps its shorter first deadline.
        if !matches!(*p, Phase::Fresh(_)) {
            *p = Phase::Idle(None);
        }
    }

    /// The deadline for the next read, and whether it is the idle one.
    fn deadline(&self, now: Instant) -> (Instant, bool) {
        let mut p = self.phase();
        match *p {
            Phase::Idle(None) => {
                *p = Phase::Idle(Some(now));
                (now + self.idle_timeout, true)
            }
            Phase::Idle(Some(since)) => (since + self.idle_timeout, true),
            Phase::Fresh(None) => {
                *p = Phase::Fresh(Some(now));
                (now + self.read_timeout, true)
            }
            Phase::Fresh(Some(since)) => (since + self.read_timeout, true),
            Phase::Active(deadline) => (deadline, false),
        }
    }

    /// `TimedOut` once the current request's deadline has passed.
    pub(crate) fn check_deadline(&self) -> IoResult<()> {
        match *self.phase() {
            Phase::Active(deadline) if Instant::now() >= deadline => {
                self.stats.note_timed_out();
                Err(IoError::new(ErrorKind::TimedOut, "request not received in time"))
            }
            _ => Ok(()),
        }
    }

    /// A request has begun (bytes arrived, or a pipelined head was already buffered):
    /// from now on it must be complete within the read timeout.
    pub(crate) fn got_bytes(&self) {
        let mut p = self.phase();
        if let Phase::Idle(_) | Phase::Fresh(_) = *p {
            *p = Phase::Active(Instant::now() + self.read_timeout);
        }
    }
}

/// The error a reader returns once a deadline has passed. An idle connection is
/// closed silently; a request caught half-way gets 408 (`ErrorKind::TimedOut`).
pub(crate) fn is_idle_timeout(e: &IoError) -> bool {
    e.kind() == ErrorKind::ConnectionAborted && e.to_string() == IDLE
}
const IDLE: &str = "idle keep-alive timeout";

/// A socket reader that enforces the connection's deadlines. The socket's own
/// SO_RCVTIMEO bounds each blocking read; this turns those wake-ups into an idle
/// timeout between requests and a deadline for the whole request once it starts,
/// so a client dribbling a byte at a time cannot hold a connection open forever.
pub(crate) struct Timed<R> {
    inner: R,
    clock: Option<Arc<Clock>>,
}

impl<R> Timed<R> {
    pub(crate) fn new(inner: R, clock: Option<Arc<Clock>>) -> Timed<R> {
        Timed { inner, clock }
    }
}

impl<R: Read> Read for Timed<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        match &self.clock {
            None => self.inner.read(buf),
            Some(c) => c.read_from(&mut self.inner, buf),
        }
    }
}

impl Clock {
    /// Reads from `inner` (a socket with SO_RCVTIMEO set to the connection tick)
    /// within the connection's deadlines: the idle timeout between requests, the read
    /// timeout once a request has started; an idle connection of a server that stopped
    /// accepting is closed at the next tick.
    pub(crate) fn read_from<R: Read>(&self, inner: &mut R, buf: &mut [u8]) -> IoResult<usize> {
        let clock = self;
        loop {
            let now = Instant::now();
            let (deadline, idle) = clock.deadline(now);
            if idle && clock.stats.closing() {
                return Err(IoError::new(ErrorKind::ConnectionAborted, IDLE));
            }
            if now >= deadline {
                clock.stats.note_timed_out();
                return Err(if idle {
                    IoError::new(ErrorKind::ConnectionAborted, IDLE)
                } else {
                    IoError::new(ErrorKind::TimedOut, "request not received in time")
                });
            }
            match inner.read(buf) {
                Ok(0) => return Ok(0),
                Ok(n) => {
                    clock.got_bytes();
                    return Ok(n);
                }
                // SO_RCVTIMEO fired (EAGAIN) or a signal: look at the deadline again.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
