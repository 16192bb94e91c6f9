//! An event stream: `text/event-stream` of one project's feed, read from the store
//! after the last id sent (so ordering and exactly-once come from the feed, which on
//! PostgreSQL never skips across instances), on the connection's own thread.
//!
//! Memory: a stream buffers nothing between its reads of the store. Each read becomes
//! one piece (at most `PIECE_BYTES` plus one event) that the connection thread writes
//! before it asks for the next; a subscriber that stops taking it is dropped after
//! the read timeout and the piece freed with the stream. `http_streams_buffered_bytes`
//! counts the pieces handed out and not yet written (they are given back when the
//! connection thread asks for more, or when the stream is dropped).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::hub::{SharedPage, Slot};
use super::{KEEPALIVE, RECHECK};
use crate::model::{Event, Page};
use crate::store::{Store, StoreError};
use crate::wire::{Request, Response};

/// Events read from the store at a time, at most.
const BATCH: usize = 200;
/// Events a stream's first read takes; each read after one whose piece stayed under
/// half of `PIECE_BYTES` takes twice as many (up to `BATCH`), one that filled a piece
/// takes as many as fitted. A read holds its whole page while it fills the piece, and
/// an event can be ~100 KB (a task's description): 200 of them were 20 MB for one
/// stream, and 16 subscribers catching up on such a feed took the server's RSS from
/// 23 to 116 MiB.
const FIRST_BATCH: usize = 8;
/// A piece handed to the connection thread stops after the event that reaches this
/// size (the rest follows at the next call): a stream holds about this much memory,
/// and about as much again while it reads the next page.
const PIECE_BYTES: usize = 256 * 1024;

pub struct EventStream {
    store: Arc<dyn Store>,
    pid: i64,
    /// The last event id sent (or the client's `Last-Event-ID`).
    after: i64,
    slot: Slot,
    keepalive_at: Instant,
    /// Look at the store this often even without a wake-up: every `RECHECK` when
    /// other instances may write (PostgreSQL), else at the keep-alive.
    recheck: std::time::Duration,
    recheck_at: Instant,
    /// The signal's generation at the last read of the feed (`None`: read again).
    read_gen: Option<u64>,
    /// Events the next read of the feed asks for (see `FIRST_BATCH`).
    batch: usize,
    opened: bool,
    /// Bytes of the last piece handed out (in `BUFFERED` until written or dropped).
    held: usize,
}

/// Bytes of every stream's piece handed to its connection thread and not yet
/// written (`http_streams_buffered_bytes`).
static BUFFERED: AtomicUsize = AtomicUsize::new(0);

/// Stream output held for connections now, not yet written to their sockets.
pub fn buffered_bytes() -> usize {
    BUFFERED.load(Ordering::Relaxed)
}

/// Longest an idle stream goes without a tick (to notice a client that left).
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

impl EventStream {
    pub fn new(store: Arc<dyn Store>, pid: i64, after: i64, slot: Slot) -> EventStream {
        let shared = store.backend() == "postgres";
        EventStream {
            store,
            pid,
            after,
            slot,
            keepalive_at: Instant::now() + KEEPALIVE,
            recheck: if shared { RECHECK } else { KEEPALIVE },
            recheck_at: Instant::now(),
            read_gen: None,
            batch: FIRST_BATCH,
            opened: false,
            held: 0,
        }
    }

    /// Counts `piece` as held until the next call (or the drop), and hands it out.
    fn hand_out(&mut self, piece: Vec<u8>) -> Option<Vec<u8>> {
        self.held = piece.len();
        BUFFERED.fetch_add(self.held, Ordering::Relaxed);
        Some(piece)
    }

    /// The connection thread asks for more only once it wrote the last piece.
    fn written(&mut self) {
        BUFFERED.fetch_sub(std::mem::take(&mut self.held), Ordering::Relaxed);
    }

    /// The events after `self.after`: the page another stream of the project read at
    /// this generation of the signal, if it asked the same (the same `after`, at least
    /// this stream's batch) less than half a `RECHECK` ago, or else a read of the
    /// store that the others may share (`hub::SharedPage`). A page of big events is
    /// not kept for the others: it stays this stream's (see `PIECE_BYTES`).
    fn read(&self, gen: u64) -> Result<Arc<Page<Event>>, StoreError> {
        let mut shared = self.slot.signal.feed();
        if let Some(s) = shared.as_ref() {
            if s.gen == gen
                && s.after == self.after
                && s.limit >= self.batch
                && s.at.elapsed() < RECHECK / 2
            {
                return Ok(s.page.clone());
            }
        }
        let page = Arc::new(self.store.list_events(self.pid, self.after, self.batch)?);
        let bytes: usize = page.items.iter().map(|e| e.changes.get().len() + 128).sum();
        *shared = (bytes <= PIECE_BYTES).then(|| SharedPage {
            gen,
            after: self.after,
            limit: self.batch,
            at: Instant::now(),
            page: page.clone(),
        });
        Ok(page)
    }
}

impl Drop for EventStream {
    /// Dropped with its connection (ended, left, or too slow): what it held is freed.
    fn drop(&mut self) {
        self.written();
    }
}

/// One event as SSE: `id`, `event` and `data` (the feed's JSON of the event, which
/// serde writes on one line).
pub fn write_event(out: &mut Vec<u8>, e: &Event) {
    let _ = write!(out, "id: {}\nevent: {}\n", e.id, e.kind);
    let json = serde_json::to_vec(e).unwrap_or_default();
    for line in json.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

impl tiny_http::conn::StreamSource for EventStream {
    fn next_bytes(&mut self) -> Option<Vec<u8>> {
        self.written();
        if !self.opened {
            // Something at once, so the client sees the stream is live; and how long
            // an EventSource should wait before reconnecting.
            self.opened = true;
            return self.hand_out(b"retry: 1000\n: open\n\n".to_vec());
        }
        if super::hub::hub().closing() {
            return None;
        }
        let gen = self.slot.signal.current();
        let now = Instant::now();
        if self.read_gen != Some(gen) || now >= self.recheck_at {
            self.read_gen = Some(gen);
            self.recheck_at = now + self.recheck;
            match self.read(gen) {
                Ok(page) if !page.items.is_empty() => {
                    // A shared page may hold more than this stream's batch.
                    let items = &page.items[..page.items.len().min(self.batch)];
                    let more = page.more || items.len() < page.items.len();
                    let mut out = Vec::with_capacity(items.len() * 256);
                    let (mut cut, mut used) = (false, 0);
                    for e in items {
                        write_event(&mut out, e);
                        self.after = e.id;
                        used += 1;
                        if out.len() >= PIECE_BYTES {
                            cut = true;
                            break;
                        }
                    }
                    self.batch = if cut {
                        used
                    } else if out.len() < PIECE_BYTES / 2 {
                        (self.batch * 2).min(BATCH)
                    } else {
                        self.batch
                    };
                    if more || cut {
                        self.read_gen = None; // the rest at the next call
                    }
                    self.keepalive_at = now + KEEPALIVE;
                    return self.hand_out(out);
                }
                Ok(_) => {}
                // The project was deleted: the stream ends.
                Err(StoreError::NotFound(_)) => return None,
                Err(e) => {
                    self.read_gen = None;
                    self.recheck_at = now + RECHECK;
                    log::warn!(target: "live", project = self.pid, error:% = e; "event stream cannot read the feed; retrying");
                }
            }
        }
        if now >= self.keepalive_at {
            self.keepalive_at = now + KEEPALIVE;
            return self.hand_out(b": keep-alive\n\n".to_vec());
        }
        let until = self.keepalive_at.min(self.recheck_at).min(now + TICK);
        self.slot
            .signal
            .wait(gen, until.saturating_duration_since(now));
        // A tick: the connection thread looks whether the client is still there.
        Some(Vec::new())
    }
}

/// Answers the request with the stream: the status line and headers go out now, the
/// events as they come, all written by the connection thread.
pub fn start(
    app: &dyn super::Host,
    rq: tiny_http::Request,
    req: Request,
    resp: Response,
    route: Option<usize>,
    started: Instant,
    s: EventStream,
) {
    app.record(&req, route, resp.status, started.elapsed());
    let mut headers: Vec<(&str, &str)> = vec![
        ("Content-Type", "text/event-stream"),
        ("Server", "dashboard-backend"),
    ];
    for (k, v) in &resp.headers {
        headers.push((k, v.as_str()));
    }
    let body = tiny_http::conn::Body::Stream(Box::new(s));
    let _ = rq.respond_parts(resp.status, &headers, body, true);
}
