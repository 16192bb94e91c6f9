//! dashboard-backend patch: the connection layer in front of the workers (SPEC §5b).
//!
//! One thread per open socket (from the task pool) reads one request head, hands the
//! request to the workers, and waits until that request is done — its body reader
//! given back and its reply handed over — before it writes the reply and reads the
//! next head. Upstream parsed pipelined requests ahead into an unbounded queue and had
//! the workers write to the socket; here:
//!
//! - a connection has at most one request in flight: pipelined requests wait, unread,
//!   in the socket, and the request queue holds at most one entry per connection;
//! - workers never touch the socket to write: they hand over the reply and move on; it
//!   is written by this thread, and a client that does not take it within the read
//!   timeout loses the connection (a slow reader holds its own thread, never a worker);
//! - nothing is sized by a number the client announced: the head is read into a buffer
//!   capped at `max_head_bytes`, bodies stream through a fixed buffer, chunk-size and
//!   trailer lines are capped, and a body nobody read is not drained: the connection
//!   is closed after the reply (with a short lingering read, so the reply is not lost
//!   to a reset);
//! - the open-connection guard lives as long as the socket, so open sockets, not parsed
//!   requests, count against `max_connections`;
//! - when the server stops accepting, idle connections close and busy ones close after
//!   their reply.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, Method};
use crate::limits::{Budget, Clock, ConnectionLimits, ConnectionStats, OpenGuard};
use crate::Request;

/// Request heads are read in steps of this much (and the buffer kept between requests
/// is shrunk back to it).
const READ_STEP: usize = 4096;
/// A chunk-size line (with extensions) or a trailer line longer than this is refused.
const MAX_CHUNK_LINE: usize = 1024;
/// Trailer section of a chunked body: bytes in all.
const MAX_TRAILERS: usize = 16 * 1024;
/// More header lines than this get 431 (as Apache's `LimitRequestFields`).
pub(crate) const MAX_HEADERS: usize = 100;
/// After a reply that ends the connection, unread input is discarded for at most this
/// long (and this much) so the client reads the reply before the close resets it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// What a worker hands back for the connection thread to write.
pub(crate) struct Reply {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Body,
    /// Close the connection after this reply.
    pub(crate) close: bool,
}

/// A reply body, borrowed from the binary or owned, or a stream.
pub enum Body {
    Empty,
    Static(&'static [u8]),
    Owned(Vec<u8>),
    /// A body of unknown length that the connection thread pulls from its source and
    /// writes as it comes (server-sent events), each piece under the read timeout; the
    /// connection closes when the source ends or the client stops taking the bytes.
    /// The worker that answered with it has long moved on.
    Stream(Box<dyn StreamSource>),
}

/// dashboard-backend patch: where a `Body::Stream` comes from. Runs on the
/// connection's own thread (never a worker's).
pub trait StreamSource: Send {
    /// The next bytes to write, blocking until there are some; `None` ends the body,
    /// and with it the connection. An empty piece is a tick (return one every second
    /// or so while idle): the connection thread then checks the client is still there.
    fn next_bytes(&mut self) -> Option<Vec<u8>>;
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Empty | Body::Stream(_) => &[],
            Body::Static(b) => b,
            Body::Owned(v) => v,
        }
    }

    /// The length for `Content-Length`; `None` for a stream (delimited by the close).
    pub(crate) fn len(&self) -> Option<usize> {
        match self {
            Body::Stream(_) => None,
            b => Some(b.bytes().len()),
        }
    }
}

/// Whether the client has closed its side (or reset): a non-blocking peek. Bytes it
/// sent after its request (pipelined) stay unread and count as alive.
fn peer_closed(sock: &TcpStream) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let got = sock.peek(&mut b);
    let _ = sock.set_nonblocking(false);
    match got {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::TimedOut),
    }
}

/// Writes a stream body piece by piece until its source ends, the server stops, or
/// the client does not take a slice of it within the read timeout (a slow subscriber is
/// dropped: its connection is reset, and its source, with its memory, is freed).
fn pump(sock: &TcpStream, source: &mut dyn StreamSource, limits: &ConnectionLimits, clock: &Clock) {
    while let Some(piece) = source.next_bytes() {
        if piece.is_empty() {
            // A tick of an idle stream: a client that went away frees its place now
            // rather than at the next write.
            if peer_closed(sock) {
                return;
            }
            continue;
        }
        // The deadline is per slice: a subscriber is dropped when it stops taking
        // bytes for the read timeout, not for being slower than a big piece.
        for slice in piece.chunks(STREAM_SLICE) {
            let deadline = Instant::now() + limits.read_timeout;
            if write_all(sock, &[slice], deadline).is_err() {
                clock.stats().note_timed_out();
                // Reset, not close: a plain close leaves what the kernel still queues
                // for the subscriber (up to tcp_wmem's maximum, 4 MiB) in FIN-WAIT-1
                // for as long as the client holds the connection without reading.
                let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
                return;
            }
        }
    }
}

/// A stream's piece is written in slices of this much, each under the read timeout.
const STREAM_SLICE: usize = 64 * 1024;

/// The rendezvous of one request between its connection thread and a worker: the
/// worker hands the reply over; the connection thread waits for it.
pub(crate) struct Exchange {
    state: Mutex<ExchangeState>,
    done: Condvar,
    stats: Arc<ConnectionStats>,
    /// The socket, only to look whether the client is still there (`client_gone`):
    /// its connection thread does not touch it while the request is out.
    sock: Option<Arc<TcpStream>>,
}

#[derive(Default)]
struct ExchangeState {
    reply: Option<Reply>,
    /// The request's writer is gone: no more reply can come.
    writer_gone: bool,
}

impl Exchange {
    fn new(stats: Arc<ConnectionStats>, sock: Option<Arc<TcpStream>>) -> Arc<Exchange> {
        Arc::new(Exchange {
            state: Mutex::new(ExchangeState::default()),
            done: Condvar::new(),
            stats,
            sock,
        })
    }

    /// The client has closed its side of the connection (or reset it) while the
    /// request waits for its reply (a parked long poll). Costs one non-blocking peek.
    pub(crate) fn client_gone(&self) -> bool {
        self.sock.as_ref().is_some_and(|s| peer_closed(s))
    }

    /// The server has stopped accepting: this connection ends after its reply.
    pub(crate) fn closing(&self) -> bool {
        self.stats.closing()
    }

    fn lock(&self) -> MutexGuard<'_, ExchangeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands over the reply to be written (the first one wins).
    pub(crate) fn reply(&self, reply: Reply) {
        let mut s = self.lock();
        if s.reply.is_none() && !s.writer_gone {
            s.reply = Some(reply);
        }
    }

    fn writer_gone(&self) {
        self.lock().writer_gone = true;
        self.done.notify_all();
    }

    /// Blocks until the request's writer is gone; the reply, if one was given.
    fn wait(&self) -> Option<Reply> {
        let mut s = self.lock();
        while !s.writer_gone {
            s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.reply.take()
    }
}

/// The request's writer: collects what a generic `Response` writes and hands it over
/// when dropped. `Request::respond_parts` bypasses it (no copy of the body).
pub(crate) struct Outbox {
    exchange: Arc<Exchange>,
    buf: Vec<u8>,
}

impl Write for Outbox {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            // A generic response does not say whether it keeps the connection open
            // (upstream's raw_print writes no Connection header): close after it.
            let head = std::mem::take(&mut self.buf);
            self.exchange.reply(Reply {
                head,
                body: Body::Empty,
                close: true,
            });
        }
        self.exchange.writer_gone();
    }
}

/// Bytes read from the socket and not yet consumed, and the socket behind them. The
/// first `READ_STEP` bytes of buffer are the connection's own; more (a long head) is
/// taken from the shared budget, and given back between requests.
pub(crate) struct Input {
    sock: Arc<TcpStream>,
    clock: Arc<Clock>,
    buf: Vec<u8>,
    pos: usize,
    budget: Budget,
}

impl Input {
    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads one step more from the socket into the buffer, keeping at most `cap`
    /// bytes buffered. Ok(0) at end of stream; `OutOfMemory` when over `cap` or when
    /// the shared budget is spent.
    fn fill(&mut self, cap: usize) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let room = cap.saturating_sub(self.buf.len()).min(READ_STEP);
        if room == 0 {
            return Err(io::Error::new(ErrorKind::OutOfMemory, "line too long"));
        }
        let old = self.buf.len();
        let want = old + room;
        if want > self.buf.capacity() {
            // Beyond the first step, twice the growth (the parsed head copies it).
            let over = want.saturating_sub(READ_STEP.max(self.buf.capacity())) * 2;
            if over > 0 && !self.budget.take(over) {
                return Err(io::Error::new(ErrorKind::OutOfMemory, "head budget spent"));
            }
            self.buf.reserve_exact(want - old);
        }
        self.buf.resize(want, 0);
        let got = self.clock.read_from(&mut &*self.sock, &mut self.buf[old..]);
        self.buf.truncate(old + *got.as_ref().unwrap_or(&0));
        got
    }

    /// Raw bytes: the buffered ones first, then straight from the socket.
    fn read_raw(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let have = self.buffered();
        if !have.is_empty() {
            let n = have.len().min(out.len());
            out[..n].copy_from_slice(&have[..n]);
            self.consume(n);
            return Ok(n);
        }
        self.clock.read_from(&mut &*self.sock, out)
    }

    /// One CRLF-terminated line of at most `max` bytes, without the CRLF.
    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            let have = self.buffered();
            if let Some(i) = have[scanned..].windows(2).position(|w| w == b"\r\n") {
                let line = have[..scanned + i].to_vec();
                self.consume(scanned + i + 2);
                return Ok(line);
            }
            if have.len() > max + 1 {
                return Err(invalid("chunk-size or trailer line too long"));
            }
            scanned = have.len().saturating_sub(1);
            if self.fill(max + 2)? == 0 {
                return Err(eof());
            }
        }
    }

    /// Back to a modest buffer between requests, and the budget given back.
    fn shrink(&mut self) {
        if self.buf.capacity() > READ_STEP && self.buffered().len() <= READ_STEP {
            let rest = self.buffered().to_vec();
            self.buf = Vec::with_capacity(READ_STEP);
            self.buf.extend_from_slice(&rest);
            self.pos = 0;
        }
        if self.buf.capacity() <= READ_STEP {
            self.budget.release();
        }
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

fn eof() -> io::Error {
    io::Error::new(
        ErrorKind::UnexpectedEof,
        "the connection closed before the body was complete",
    )
}

/// How the body of a request is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
}

/// A body read ahead by the connection thread, so a client dribbling it holds only
/// its own thread, never a worker. The memory is the shared budget's until the
/// request is dropped.
pub(crate) struct BodyReader {
    data: Vec<u8>,
    pos: usize,
    /// Why reading stopped early (timeout, cut off, bad chunking): returned once the
    /// data is consumed, so the application answers it.
    error: Option<io::Error>,
    _budget: Budget,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return match self.error.take() {
                Some(e) => Err(e),
                None => Ok(0),
            };
        }
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// What reading a body ahead gave.
struct ReadAhead {
    data: Vec<u8>,
    /// The whole body was consumed from the socket: the next request starts after it.
    complete: bool,
    error: Option<io::Error>,
    budget: Budget,
}

/// How long a body waits for the shared budget before it counts as not received.
const BUDGET_POLL: Duration = Duration::from_millis(10);

/// Reads a body of at most `max` bytes (one byte more marks it too large) into
/// memory taken from the shared budget; waits for budget while others hold it, up
/// to the read deadline.
fn read_ahead(input: &mut Input, framing: Framing, max: usize, stats: &Arc<ConnectionStats>) -> ReadAhead {
    let mut out = ReadAhead {
        data: Vec::new(),
        complete: false,
        error: None,
        budget: Budget::new(stats.clone()),
    };
    let limit = max.saturating_add(1);
    let mut chunk = match framing {
        Framing::Length(n) if n as u128 > max as u128 => return out,
        Framing::Length(n) => Chunk::Data(n),
        Framing::Chunked => Chunk::Size,
    };
    let mut step = [0u8; 16 * 1024];
    loop {
        if out.data.len() >= limit {
            return out; // too large: the application answers 413
        }
        let want = match decode(input, &mut chunk, framing) {
            Ok(Some(w)) => w,
            Ok(None) => {
                out.complete = true;
                return out;
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let want = want.min(step.len() as u64).min((limit - out.data.len()) as u64) as usize;
        while !out.budget.take(want) {
            if let Err(e) = input.clock.check_deadline() {
                out.error = Some(e);
                return out;
            }
            std::thread::sleep(BUDGET_POLL);
        }
        match input.read_raw(&mut step[..want]) {
            Ok(0) => {
                out.error = Some(eof());
                return out;
            }
            Ok(n) => {
                out.data.extend_from_slice(&step[..n]);
                if let Chunk::Data(left) = &mut chunk {
                    *left -= n as u64;
                }
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    Trailers(usize),
}

/// Advances the framing to the next data bytes: how many may be read now, or `None`
/// at the end of the body. Chunk-size and trailer lines are bounded.
fn decode(input: &mut Input, chunk: &mut Chunk, framing: Framing) -> io::Result<Option<u64>> {
    loop {
        match *chunk {
            Chunk::Data(0) if framing != Framing::Chunked => return Ok(None),
            Chunk::Data(0) => {
                if !input.line(0)?.is_empty() {
                    return Err(invalid("chunk data longer than its size"));
                }
                *chunk = Chunk::Size;
            }
            Chunk::Data(left) => return Ok(Some(left)),
            Chunk::Size => {
                let line = input.line(MAX_CHUNK_LINE)?;
                let size = parse_chunk_size(&line)?;
                *chunk = if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Trailers(seen) => {
                let line = input.line(MAX_CHUNK_LINE)?;
                if line.is_empty() {
                    return Ok(None);
                }
                if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(invalid("malformed trailer"));
                }
                let seen = seen + line.len() + 2;
                if seen > MAX_TRAILERS {
                    return Err(invalid("chunked trailers too large"));
                }
                *chunk = Chunk::Trailers(seen);
            }
        }
    }
}

/// `1a;ext=x` → 26. At most 15 hex digits (no overflow), nothing else before `;`,
/// no CR, LF or NUL anywhere in the line (a bare LF there is a framing ambiguity).
pub(crate) fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(invalid("malformed chunk size"));
    }
    let digits = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    let digits = trim_ows(digits);
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("malformed chunk size"));
    }
    let s = std::str::from_utf8(digits).map_err(|_| invalid("malformed chunk size"))?;
    u64::from_str_radix(s, 16).map_err(|_| invalid("malformed chunk size"))
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) version: HTTPVersion,
    pub(crate) headers: Vec<Header>,
}

/// Why a head could not be read; each but `Closed` is answered before closing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// End of stream, reset, or the idle timeout between requests: close silently.
    Closed,
    /// Started but not complete within the read timeout: 408.
    TimedOut,
    /// Over `max_head_bytes` or `MAX_HEADERS`: 431.
    TooLarge,
    /// 400 with this message.
    Malformed(&'static str),
}

/// Reads one request head (after any empty lines, RFC 9112 §2.2).
fn read_head(input: &mut Input, max: usize) -> Result<Head, HeadError> {
    let mut scanned: usize = 0;
    loop {
        let have = input.buffered();
        let blank = have
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            input.consume(blank);
            scanned = 0;
            continue;
        }
        let from = scanned.saturating_sub(3);
        if let Some(i) = have[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i;
            let head = parse_head(&have[..end]);
            input.consume(end + 4);
            return head;
        }
        if have.len() >= max {
            return Err(HeadError::TooLarge);
        }
        scanned = have.len();
        match input.fill(max) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::TimedOut => return Err(HeadError::TimedOut),
            Err(e) if e.kind() == ErrorKind::OutOfMemory => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Closed),
        }
    }
}

/// Parses the bytes of a head (without its final blank line). Pure, for the fuzzer.
pub fn parse_head_bytes(bytes: &[u8]) -> Result<(), &'static str> {
    match parse_head(bytes) {
        Ok(h) => framing(&h.headers).map(|_| ()).map_err(|_| "ambiguous framing"),
        Err(HeadError::Malformed(m)) => Err(m),
        Err(_) => Err("too large"),
    }
}

fn parse_head(bytes: &[u8]) -> Result<Head, HeadError> {
    if !bytes.is_ascii() {
        return Err(HeadError::Malformed("request head is not ASCII"));
    }
    // ASCII, so valid UTF-8.
    let text = std::str::from_utf8(bytes).map_err(|_| HeadError::Malformed("request head is not ASCII"))?;
    let mut lines = text.split("\r\n");
    let (method, path, version) = parse_request_line(lines.next().unwrap_or(""))?;
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        headers.push(parse_header(line)?);
    }
    Ok(Head {
        method,
        path,
        version,
        headers,
    })
}

/// `METHOD SP target SP HTTP/1.x`, exactly (RFC 9112 §3): no extra words, no stray
/// whitespace or CR.
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), HeadError> {
    const BAD: HeadError = HeadError::Malformed("malformed request line");
    let mut parts = line.split(' ');
    let (Some(m), Some(target), Some(v), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(BAD);
    };
    if m.is_empty() || !m.bytes().all(is_tchar) || target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(BAD);
    }
    let version = match v {
        "HTTP/1.0" => HTTPVersion(1, 0),
        "HTTP/1.1" => HTTPVersion(1, 1),
        "HTTP/2.0" | "HTTP/2" | "HTTP/3.0" | "HTTP/3" => {
            return Err(HeadError::Malformed("only HTTP/1.0 and HTTP/1.1 are supported"))
        }
        _ => return Err(BAD),
    };
    let method = m.parse().map_err(|_| BAD)?;
    Ok((method, target.to_owned(), version))
}

/// `name: value` with a token name and no control characters but HTAB in the value;
/// obsolete line folding is refused (RFC 9112 §5, RFC 9110 §5.5).
fn parse_header(line: &str) -> Result<Header, HeadError> {
    const BAD: HeadError = HeadError::Malformed("malformed header");
    let (name, value) = line.split_once(':').ok_or(BAD)?;
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(BAD);
    }
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(BAD);
    }
    Header::from_str(&format!("{name}:{}", value.trim_matches([' ', '\t']))).map_err(|_| BAD)
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The body's framing; `Err` when it is ambiguous (RFC 9112 §6.3), `None` for no body.
fn framing(headers: &[Header]) -> Result<Option<Framing>, ()> {
    if crate::client::ambiguous_framing(headers) {
        return Err(());
    }
    if headers.iter().any(|h| h.field.equiv("Transfer-Encoding")) {
        return Ok(Some(Framing::Chunked));
    }
    match headers.iter().find(|h| h.field.equiv("Content-Length")) {
        // ambiguous_framing checked: at most 19 digits, so it fits a u64.
        Some(h) => Ok(Some(Framing::Length(
            h.value.as_str().trim_matches([' ', '\t']).parse().map_err(|_| ())?,
        ))),
        None => Ok(None),
    }
}

/// Whether a `Connection` header lists `token` (comma-separated, any case).
fn connection_has(headers: &[Header], token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.field.equiv("Connection"))
        .flat_map(|h| h.value.as_str().split(','))
        .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when asked for
/// `keep-alive` (RFC 9112 §9.3). A request to upgrade the protocol ends it.
fn wants_keep_alive(head: &Head) -> bool {
    if connection_has(&head.headers, "close") || connection_has(&head.headers, "upgrade") {
        return false;
    }
    head.version >= HTTPVersion(1, 1) || connection_has(&head.headers, "keep-alive")
}

/// Everything one connection thread needs.
pub(crate) struct Conn {
    pub(crate) sock: TcpStream,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) clock: Arc<Clock>,
    pub(crate) guard: OpenGuard,
}

/// Serves one connection until it closes. `dispatch` hands a request to the workers.
pub(crate) fn serve(conn: Conn, dispatch: &dyn Fn(Request)) {
    // The guard is dropped last: the socket counts as open until it is closed.
    let Conn {
        sock,
        remote,
        limits,
        clock,
        guard: _open,
    } = conn;
    let sock = Arc::new(sock);
    let stats = clock.stats_arc();
    let mut input = Input {
        sock: sock.clone(),
        clock: clock.clone(),
        buf: Vec::new(),
        pos: 0,
        budget: Budget::new(stats.clone()),
    };
    loop {
        clock.between_requests();
        if !input.buffered().is_empty() {
            // A pipelined request has begun: the read deadline, not the idle one.
            clock.got_bytes();
        }
        let head = match read_head(&mut input, limits.max_head_bytes) {
            Ok(h) => h,
            Err(HeadError::Closed) => return,
            Err(HeadError::TimedOut) => {
                return refuse(&sock, &limits, 408, "request not received in time");
            }
            Err(HeadError::TooLarge) => {
                return refuse(&sock, &limits, 431, "request line and headers too large");
            }
            Err(HeadError::Malformed(m)) => return refuse(&sock, &limits, 400, m),
        };
        clock.got_bytes();
        let framing = match framing(&head.headers) {
            Ok(Some(Framing::Chunked)) if head.version < HTTPVersion(1, 1) => {
                // RFC 9112 §6.1: chunked on HTTP/1.0 is faulty framing.
                return refuse(&sock, &limits, 400, "chunked transfer coding needs HTTP/1.1");
            }
            Ok(f) => f,
            Err(()) => return refuse(&sock, &limits, 400, "ambiguous message framing"),
        };
        let will_read = match framing {
            None | Some(Framing::Length(0)) => false,
            Some(Framing::Length(n)) => n as u128 <= limits.max_body_bytes as u128,
            Some(Framing::Chunked) => true,
        };
        let mut expects = head.headers.iter().filter(|h| h.field.equiv("Expect"));
        if let Some(first) = expects.next() {
            let ok = |h: &Header| h.value.as_str().eq_ignore_ascii_case("100-continue");
            if !ok(first) || expects.any(|h| !ok(h)) {
                return refuse(&sock, &limits, 417, "unsupported Expect header");
            }
            // Only when the body will be read: a refused one is not asked for.
            if will_read && head.version >= HTTPVersion(1, 1) {
                let deadline = Instant::now() + limits.read_timeout;
                if write_all(&sock, &[b"HTTP/1.1 100 Continue\r\n\r\n"], deadline).is_err() {
                    return;
                }
            }
        }
        let ahead = match framing {
            Some(f) if will_read => read_ahead(&mut input, f, limits.max_body_bytes, &stats),
            Some(Framing::Length(n)) if n > 0 => ReadAhead {
                data: Vec::new(),
                complete: false,
                error: None,
                budget: Budget::new(stats.clone()),
            },
            _ => ReadAhead {
                data: Vec::new(),
                complete: true,
                error: None,
                budget: Budget::new(stats.clone()),
            },
        };
        let complete = ahead.complete;
        let keep_alive = wants_keep_alive(&head) && !limits_closing(&clock);
        let exchange = Exchange::new(stats.clone(), Some(sock.clone()));
        let body = BodyReader {
            data: ahead.data,
            pos: 0,
            error: ahead.error,
            _budget: ahead.budget,
        };
        let outbox = Outbox {
            exchange: exchange.clone(),
            buf: Vec::new(),
        };
        let body_length = match framing {
            Some(Framing::Length(n)) => Some(std::convert::TryFrom::try_from(n).unwrap_or(usize::MAX)),
            Some(Framing::Chunked) => None,
            None => Some(0),
        };
        dispatch(crate::request::from_connection(
            head,
            remote,
            body,
            outbox,
            body_length,
            keep_alive,
            exchange.clone(),
        ));
        let Some(reply) = exchange.wait() else {
            let _ = sock.shutdown(Shutdown::Both);
            return;
        };
        let deadline = Instant::now() + limits.read_timeout;
        if write_all(&sock, &[&reply.head, reply.body.bytes()], deadline).is_err() {
            clock.stats().note_timed_out();
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
        let mut reply = reply;
        if let Body::Stream(source) = &mut reply.body {
            pump(&sock, &mut **source, &limits, &clock);
            drop(reply);
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
        let close = reply.close;
        drop(reply);
        if !complete || close || !keep_alive || limits_closing(&clock) {
            linger(&sock);
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
        input.shrink();
    }
}

fn limits_closing(clock: &Clock) -> bool {
    clock.stats().closing()
}

/// The status line and headers of a reply, with `Date`, `Content-Length` (also for
/// HEAD, the length a GET would get) and `Connection`.
pub(crate) fn reply_head(
    version: &HTTPVersion,
    status: u16,
    headers: &[(&str, &str)],
    body_len: Option<usize>,
    close: bool,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    let v = if *version == HTTPVersion(1, 0) { "1.0" } else { "1.1" };
    let reason = crate::common::StatusCode(status).default_reason_phrase();
    let _ = write!(h, "HTTP/{v} {status} {reason}\r\nDate: ");
    date(&mut h);
    h.extend_from_slice(b"\r\n");
    for (k, val) in headers {
        // A name or value that would break the framing is dropped, not sent.
        let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
        if bad(k) || bad(val) || k.is_empty() {
            continue;
        }
        let _ = write!(h, "{k}: {val}\r\n");
    }
    if let (false, Some(body_len)) = (matches!(status, 100..=199 | 204 | 304), body_len) {
        let _ = write!(h, "Content-Length: {body_len}\r\n");
    }
    if close {
        h.extend_from_slice(b"Connection: close\r\n");
    } else if *version == HTTPVersion(1, 0) {
        h.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// The `Date` header's value, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let sec = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != sec || c.1.is_empty() {
            *c = (sec, httpdate::HttpDate::from(now).to_string());
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

/// Writes the connection layer's own error reply, then closes.
fn refuse(sock: &TcpStream, limits: &ConnectionLimits, status: u16, message: &str) {
    let (content_type, body) = (limits.error_body)(status, message);
    let head = format!(
        "HTTP/1.1 {} {}\r\nServer: dashboard-backend\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status,
        crate::common::StatusCode(status).default_reason_phrase(),
        content_type,
        body.len()
    );
    let deadline = Instant::now() + limits.read_timeout.min(LINGER);
    if write_all(sock, &[head.as_bytes(), &body], deadline).is_ok() {
        linger(sock);
    }
    let _ = sock.shutdown(Shutdown::Both);
}

/// Half-closes, then reads and discards what the client still sends (for at most
/// `LINGER` and `LINGER_BYTES`), so that closing with unread input does not reset the
/// connection before the client has read our reply (RFC 9112 §9.6).
fn linger(sock: &TcpStream) {
    if sock.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut seen = 0;
    while seen < LINGER_BYTES && Instant::now() < until {
        match (&*sock).read(&mut sink) {
            Ok(0) => return,
            Ok(n) => seen += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return,
        }
    }
}

/// Writes `parts` in order, giving up at `deadline`. The socket's SO_SNDTIMEO (the
/// connection tick) bounds each blocked write, so the deadline is looked at often.
pub(crate) fn write_all(sock: &TcpStream, parts: &[&[u8]], deadline: Instant) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    while first < parts.len() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, "reply not taken in time"));
        }
        let slices: Vec<IoSlice<'_>> = parts[first..].iter().map(|p| IoSlice::new(p)).collect();
        match (&*sock).write_vectored(&slices) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "connection closed")),
            Ok(mut n) => {
                while first < parts.len() && n >= parts[first].len() {
                    n -= parts[first].len();
                    first += 1;
                }
                if n > 0 {
                    parts[first] = &parts[first][n..];
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"1A;name=value").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"-1").is_err());
        assert!(parse_chunk_size(b"0x10").is_err());
        assert!(parse_chunk_size(b"1000000000000000").is_err()); // 16 digits
        assert!(parse_chunk_size(b"fffffffffffffff").is_ok());
    }

    #[test]
    fn heads() {
        assert!(parse_head_bytes(b"GET / HTTP/1.1\r\nHost: x").is_ok());
        assert!(parse_head_bytes(b"GET / HTTP/2.0").is_err());
        assert!(parse_head_bytes(b"GET / HTTP/1.1\r\n folded").is_err());
        assert!(parse_head_bytes(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2").is_err());
        assert!(parse_head_bytes(b"GET /\xff HTTP/1.1").is_err());
    }
}

/// The accept loop of a server with limits. It survives every error: accept failures
/// (EMFILE, ECONNABORTED, ...) are counted and retried after a short pause, a thread
/// that cannot be started drops that one connection, and a panic in here restarts the
/// loop. It ends when `close` is set, dropping the listener (a socket systemd passed
/// stays open in systemd, its backlog kept for the next process).
pub(crate) fn accept_loop(
    listener: crate::Listener,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    close: Arc<std::sync::atomic::AtomicBool>,
    dispatch: Arc<dyn Fn(Request) + Send + Sync>,
) {
    let limits = Arc::new(limits);
    let pool = crate::util::TaskPool::new();
    loop {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            accept_until_closed(&listener, &limits, &stats, &close, &pool, &dispatch)
        }));
        match run {
            Ok(()) => break,
            Err(_) => {
                stats.note_accept_error();
                log::error!("the accept loop panicked; restarting it");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    stats.note_accept_stopped();
}

fn accept_until_closed(
    listener: &crate::Listener,
    limits: &Arc<ConnectionLimits>,
    stats: &Arc<ConnectionStats>,
    close: &std::sync::atomic::AtomicBool,
    pool: &crate::util::TaskPool,
    dispatch: &Arc<dyn Fn(Request) + Send + Sync>,
) {
    use std::sync::atomic::Ordering::Acquire;
    // SO_RCVTIMEO/SO_SNDTIMEO: how often a blocked read or write looks at its deadline.
    let tick = limits
        .read_timeout
        .min(limits.idle_timeout)
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(10));
    let mut last_error_log: Option<Instant> = None;
    while !close.load(Acquire) {
        let (sock, remote) = match listener.accept() {
            Ok((crate::connection::Connection::Tcp(s), remote)) => (s, remote),
            // Not served with limits (never the case in dashboard-backend).
            Ok(_) => continue,
            Err(e) => {
                stats.note_accept_error();
                let now = Instant::now();
                if last_error_log.is_none_or(|t| now.duration_since(t).as_secs() >= 10) {
                    log::error!("Error accepting new client (will retry): {}", e);
                    last_error_log = Some(now);
                }
                if !matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::Interrupted) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            }
        };
        let Some(guard) = stats.admit(limits.max_connections) else {
            stats.note_rejected();
            let _ = sock.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = (&sock).write_all(&crate::refusal(limits));
            let _ = sock.shutdown(Shutdown::Both);
            continue;
        };
        let _ = sock.set_read_timeout(Some(tick));
        let _ = sock.set_write_timeout(Some(tick));
        let conn = Conn {
            sock,
            remote,
            limits: limits.clone(),
            clock: Clock::new(limits, stats.clone()),
            guard,
        };
        let dispatch = dispatch.clone();
        let mut conn = Some(conn);
        let spawned = pool.try_spawn(Box::new(move || {
            if let Some(conn) = conn.take() {
                serve(conn, &*dispatch);
            }
        }));
        if spawned.is_err() {
            // The closure and its connection were dropped: the socket is closed.
            stats.note_accept_error();
        }
    }
}

/// For the fuzzer (`fuzz/fuzz_targets/http_conn.rs`): feeds `bytes` as one client's
/// whole input through the real path — `serve` on a loopback socket, head parsing,
/// framing, the chunked decoder, keep-alive and pipelining — with a dispatch that
/// reads each body (at most 64 KiB) and answers it. Returns the replies' bytes.
#[doc(hidden)]
pub fn fuzz_one(bytes: &[u8]) -> Vec<u8> {
    use std::sync::OnceLock;
    static LISTENER: OnceLock<std::net::TcpListener> = OnceLock::new();
    let listener = LISTENER.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener")
    });
    let addr = listener.local_addr().expect("local address");
    let input = bytes.to_vec();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).expect("connect");
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = c.write_all(&input);
        let _ = c.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        out
    });
    let (sock, remote) = listener.accept().expect("accept");
    let limits = ConnectionLimits {
        read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        max_connections: 1,
        max_head_bytes: 8 * 1024,
        max_body_bytes: 64 * 1024,
        error_body: |status, msg| ("text/plain", format!("{status} {msg}").into_bytes()),
        priority: |_| false,
    };
    let stats = Arc::new(ConnectionStats::default());
    let guard = stats.admit(1).expect("one connection");
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = sock.set_write_timeout(Some(Duration::from_millis(200)));
    let conn = Conn {
        sock,
        remote: Some(remote),
        clock: Clock::new(&limits, stats.clone()),
        limits: Arc::new(limits),
        guard,
    };
    serve(conn, &|mut rq: Request| {
        let mut body = Vec::new();
        let got = rq.as_reader().take(64 * 1024).read_to_end(&mut body);
        let status = if got.is_ok() { 200 } else { 400 };
        // A HEAD reply announces the length a GET would get and sends no body; an
        // empty body keeps the checker's framing (Content-Length) simple.
        if *rq.method() == Method::Head {
            body.clear();
        }
        let _ = rq.respond_parts(status, &[("Content-Type", "text/plain")], Body::Owned(body), false);
    });
    assert_eq!(stats.open(), 0, "the connection is counted until it closes");
    client.join().expect("client thread")
}
