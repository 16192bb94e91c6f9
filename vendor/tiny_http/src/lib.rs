//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]
// dashboard-backend patch: upstream 0.12 ships these two warnings; left as shipped.
#![allow(dead_code, unused_imports)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use limits::{ConnectionLimits, ConnectionStats};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
pub mod conn;
mod connection;
mod limits;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // dashboard-backend patch: requests `ConnectionLimits::priority` picked out
    priority: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // dashboard-backend patch: counters of the connection layer
    stats: Arc<ConnectionStats>,

    // dashboard-backend patch: what `serve_inline` installed
    inline: Arc<std::sync::OnceLock<InlineHook>>,
}

/// dashboard-backend patch: `Server::serve_inline`'s hook. It gets every request on
/// its connection's own thread and either answers it there (returns `None`) or
/// gives it back (`Some`) to be queued for `recv` as without a hook.
pub type InlineHook = Box<dyn Fn(Request) -> Option<Request> + Send + Sync>;

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::from_listener_inner(listener.into(), ssl_config, None)
    }

    /// As `from_listener` (plain HTTP), with read and idle timeouts, a cap on open
    /// connections and a bound on request heads (dashboard-backend patch).
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::from_listener_inner(listener.into(), None, Some(limits))
    }

    /// Counters of the connection layer (open, accepted, rejected, timed out).
    pub fn connection_stats(&self) -> Arc<ConnectionStats> {
        self.stats.clone()
    }

    fn from_listener_inner(
        listener: Listener,
        ssl_config: Option<SslConfig>,
        limits: Option<ConnectionLimits>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        type SslContext = ();
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let stats = Arc::new(ConnectionStats::default());
        let inside_stats = stats.clone();
        // dashboard-backend patch: with limits, the connection layer of `conn.rs`.
        let priority = MessagesQueue::with_capacity(8);
        let inline: Arc<std::sync::OnceLock<InlineHook>> = Arc::default();
        if let Some(limits) = limits {
            let (queue, urgent, pick) = (messages.clone(), priority.clone(), limits.priority);
            let hook = inline.clone();
            let dispatch: Arc<dyn Fn(Request) + Send + Sync> = Arc::new(move |rq: Request| {
                let rq = match hook.get() {
                    Some(serve) => match serve(rq) {
                        Some(rq) => rq,
                        None => return,
                    },
                    None => rq,
                };
                if pick(&rq) {
                    urgent.push(rq.into())
                } else {
                    queue.push(rq.into())
                }
            });
            let stats = stats.clone();
            thread::Builder::new()
                .name("accept".into())
                .spawn(move || conn::accept_loop(server, limits, stats, inside_close_trigger, dispatch))?;
            return Ok(Server {
                messages,
                priority,
                close: close_trigger,
                listening_addr: local_addr,
                stats: inside_stats,
                inline,
            });
        }
        thread::spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();
            let stats = inside_stats;
            // SO_RCVTIMEO is the granularity of the deadlines `limits::Timed` enforces.
            let socket_timeouts = limits.as_ref().map(|l| {
                let tick = l.read_timeout.min(l.idle_timeout).max(Duration::from_millis(10));
                (Some(tick), Some(l.read_timeout.max(Duration::from_millis(10))))
            });
            let mut last_error_log: Option<std::time::Instant> = None;

            log::debug!("Running accept thread");
            while !inside_close_trigger.load(Relaxed) {
                let (sock, guard) = match server.accept() {
                    Ok((sock, _)) => match &limits {
                        None => (sock, None),
                        Some(l) => match stats.admit(l.max_connections) {
                            Some(guard) => (sock, Some((guard, l))),
                            None => {
                                stats.note_rejected();
                                sock.refuse(&refusal(l));
                                continue;
                            }
                        },
                    },
                    // Transient failures (out of file descriptors, a client gone
                    // before accept, a signal) must not end the server: upstream
                    // broke out of this loop here and the server never accepted
                    // again. Back off briefly on resource exhaustion and go on.
                    Err(e) if limits.is_some() || transient_accept_error(&e) => {
                        stats.note_accept_error();
                        let now = std::time::Instant::now();
                        if last_error_log.map_or(true, |t| now.duration_since(t).as_secs() >= 10) {
                            log::error!("Error accepting new client (will retry): {}", e);
                            last_error_log = Some(now);
                        }
                        if !matches!(
                            e.kind(),
                            IoErrorKind::ConnectionAborted | IoErrorKind::Interrupted
                        ) {
                            thread::sleep(Duration::from_millis(20));
                        }
                        continue;
                    }
                    Err(e) => {
                        log::error!("Error accepting new client: {}", e);
                        inside_messages.push(e.into());
                        break;
                    }
                };
                if let Some((read, write)) = socket_timeouts {
                    let _ = sock.set_timeouts(read, write);
                }

                let new_client = {
                    use util::RefinedTcpStream;
                    let (read_closable, write_closable) = match ssl {
                        None => RefinedTcpStream::new(sock),
                        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                        Some(ref ssl) => {
                            // trying to apply SSL over the connection
                            // if an error occurs, we just close the socket and resume listening
                            let sock = match ssl.accept(sock) {
                                Ok(s) => s,
                                Err(_) => continue,
                            };

                            RefinedTcpStream::new(sock)
                        }
                        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                        Some(ref _ssl) => unreachable!(),
                    };
                    match &guard {
                        None => ClientConnection::new(write_closable, read_closable),
                        Some((_, l)) => {
                            let clock = limits::Clock::new(l, stats.clone());
                            ClientConnection::new_with(write_closable, read_closable, Some((l, clock)))
                        }
                    }
                };
                let guard = guard.map(|(g, _)| g);

                let messages = inside_messages.clone();
                let mut client = Some(new_client);
                let mut guard = Some(guard);
                tasks_pool.spawn(Box::new(move || {
                    // counted as open until this task ends
                    let _open = guard.take();
                    if let Some(client) = client.take() {
                        // Synchronization is needed for HTTPS requests to avoid a deadlock
                        if client.secure() {
                            let (sender, receiver) = mpsc::channel();
                            for rq in client {
                                messages.push(rq.with_notify_sender(sender.clone()).into());
                                receiver.recv().unwrap();
                            }
                        } else {
                            for rq in client {
                                messages.push(rq.into());
                            }
                        }
                    }
                }));
            }
            log::debug!("Terminating accept thread");
        });

        // result
        Ok(Server {
            messages,
            priority,
            close: close_trigger,
            listening_addr: local_addr,
            stats,
            inline,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// dashboard-backend patch: as `recv_timeout`, for the requests
    /// `ConnectionLimits::priority` picked out (none without limits).
    pub fn recv_priority_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.priority.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// dashboard-backend patch: with limits, `hook` sees each request first, on the
    /// thread of its connection, before it is queued: a request answered there skips
    /// two thread hand-overs (to a worker and back). Set once; later calls are
    /// ignored and return false. Without limits the hook is never called.
    pub fn serve_inline(&self, hook: InlineHook) -> bool {
        self.inline.set(hook).is_ok()
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// dashboard-backend patch: stops accepting new connections (the accept thread
    /// ends and closes the listener); open connections close once idle or after
    /// their current reply. `connection_stats().open()` tells when all are gone.
    pub fn stop_accepting(&self) {
        self.stats.begin_closing();
        if self.close.swap(true, Relaxed) {
            return;
        }
        wake_accept(&self.listening_addr);
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.close.swap(true, Relaxed) {
            wake_accept(&self.listening_addr);
        }
        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Connects briefly to ourselves to unblock the accept thread.
fn wake_accept(listening_addr: &ListenAddr) {
    {
        let maybe_stream = match listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// accept(2) errors after which the listener is still good (dashboard-backend patch).
fn transient_accept_error(e: &IoError) -> bool {
    matches!(
        e.kind(),
        IoErrorKind::ConnectionAborted
            | IoErrorKind::ConnectionReset
            | IoErrorKind::Interrupted
            | IoErrorKind::WouldBlock
            | IoErrorKind::TimedOut
    ) || matches!(
        e.raw_os_error(),
        // EMFILE, ENFILE, ENOBUFS, ENOMEM, EPROTO, EPERM (firewall), ENETDOWN...
        Some(24) | Some(23) | Some(105) | Some(12) | Some(71) | Some(1) | Some(100) | Some(64)
            | Some(92) | Some(113) | Some(101)
    )
}

/// The 503 written to a connection over `max_connections` before closing it.
pub(crate) fn refusal(limits: &ConnectionLimits) -> Vec<u8> {
    let (content_type, body) = (limits.error_body)(503, "too many open connections; retry shortly");
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: {}\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        content_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}
