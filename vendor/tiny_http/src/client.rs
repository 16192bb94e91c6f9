use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;

use crate::common::{HTTPVersion, Method};
use crate::limits::{is_idle_timeout, Clock, ConnectionLimits, Timed};
use crate::util::RefinedTcpStream;
use std::sync::Arc;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<Timed<RefinedTcpStream>>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<Timed<RefinedTcpStream>>>,

    // dashboard-backend patch: deadlines, head size bound, error bodies
    clock: Option<Arc<Clock>>,
    max_head_bytes: usize,
    error_body: Option<fn(u16, &str) -> (&'static str, Vec<u8>)>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
pub(crate) enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    /// request line plus headers over `max_head_bytes`
    HeadTooLarge,
    /// HTTP/2.0 and later on this HTTP/1 socket
    UnsupportedVersion,
    ReadIoError(IoError),
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(write_socket: RefinedTcpStream, read_socket: RefinedTcpStream) -> ClientConnection {
        ClientConnection::new_with(write_socket, read_socket, None)
    }

    /// As `new`, with the deadlines and bounds of `limits` (dashboard-backend patch).
    pub(crate) fn new_with(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Option<(&ConnectionLimits, Arc<Clock>)>,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        let clock = limits.as_ref().map(|(_, c)| c.clone());
        let max_head_bytes = limits.as_ref().map_or(usize::MAX, |(l, _)| l.max_head_bytes);
        let error_body = limits.as_ref().map(|(l, _)| l.error_body);
        let read_socket = Timed::new(read_socket, clock.clone());

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            clock,
            max_head_bytes,
            error_body,
        }
    }

    /// Writes one of the connection layer's own error responses (the connection is
    /// closed after it), with the embedding application's body when it gave one.
    fn answer(&mut self, status: u16, message: &str, version: HTTPVersion) {
        use crate::{Header, Response, StatusCode};
        let writer = self.sink.next().unwrap();
        match self.error_body {
            Some(body) => {
                let (content_type, data) = body(status, message);
                let mut response = Response::from_data(data).with_status_code(StatusCode(status));
                if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
                    response.add_header(h);
                }
                response.raw_print(writer, version, &[], false, None).ok();
            }
            None => {
                let response = Response::new_empty(StatusCode(status));
                response.raw_print(writer, version, &[], false, None).ok();
            }
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    /// `budget` is what is left of `max_head_bytes`; going over it is an
    /// `ErrorKind::OutOfMemory` error (answered 431).
    fn read_next_line(&mut self, budget: &mut usize) -> IoResult<AsciiString> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(b) => b?,
                None => return Err(IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF")),
            };

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf)
                    .map_err(|_| IoError::new(ErrorKind::InvalidInput, "Header is not in ASCII"));
            }

            prev_byte_was_cr = byte == b'\r';

            if *budget == 0 {
                return Err(IoError::new(ErrorKind::OutOfMemory, "request head too large"));
            }
            *budget -= 1;
            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        if let Some(clock) = &self.clock {
            clock.between_requests();
        }
        let mut budget = self.max_head_bytes;
        let head_err = |e: IoError| {
            if e.kind() == ErrorKind::OutOfMemory {
                ReadError::HeadTooLarge
            } else {
                ReadError::ReadIoError(e)
            }
        };
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line(&mut budget).map_err(head_err)?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };
            if version > HTTPVersion(1, 1) {
                return Err(ReadError::UnsupportedVersion);
            }

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(&mut budget).map_err(head_err)?;

                    if line.is_empty() {
                        break;
                    };
                    // dashboard-backend patch: as Apache's LimitRequestFields
                    if headers.len() >= MAX_HEADERS && self.max_head_bytes != usize::MAX {
                        return Err(ReadError::HeadTooLarge);
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };
            if self.max_head_bytes != usize::MAX && ambiguous_framing(&headers) {
                return Err(ReadError::WrongHeader(version));
            }

            (method, path, version, headers)
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                // we don't know where the next request would start, so we have to close
                Err(ReadError::WrongRequestLine) => {
                    self.answer(400, "malformed request line", HTTPVersion(1, 1));
                    return None;
                }

                Err(ReadError::WrongHeader(ver)) => {
                    self.answer(400, "malformed header", ver);
                    return None;
                }

                // dashboard-backend patch: was a 505 followed by reading on, into the
                // body of the refused request; the contract is "no 5xx for bad input"
                Err(ReadError::UnsupportedVersion) => {
                    self.answer(400, "only HTTP/1.0 and HTTP/1.1 are supported", HTTPVersion(1, 1));
                    return None;
                }

                Err(ReadError::HeadTooLarge) => {
                    self.answer(431, "request line and headers too large", HTTPVersion(1, 1));
                    return None;
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    self.answer(408, "request not received in time", HTTPVersion(1, 1));
                    return None; // closing the connection
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::InvalidInput => {
                    self.answer(400, "request head is not ASCII", HTTPVersion(1, 1));
                    return None;
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    self.answer(417, "unsupported Expect header", ver);
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                // EOF, reset, or the idle keep-alive timeout: close without a word
                Err(ReadError::ReadIoError(ref err)) if is_idle_timeout(err) => return None,
                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// dashboard-backend patch: more header lines than this get 431.
const MAX_HEADERS: usize = 100;

/// dashboard-backend patch: a request whose body length is ambiguous is refused
/// (400 and close) instead of being guessed at, as RFC 9112 §6.3 allows: both
/// Content-Length and Transfer-Encoding, several different or unparsable
/// Content-Lengths, or a Transfer-Encoding other than a lone `chunked` (upstream
/// applied chunked to any value and ignored a bad Content-Length, so the body was
/// read as the next request).
pub(crate) fn ambiguous_framing(headers: &[crate::Header]) -> bool {
    let mut length: Option<&str> = None;
    let mut chunked = 0;
    for h in headers {
        if h.field.equiv("Content-Length") {
            let v = h.value.as_str().trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 19 {
                return true;
            }
            match length {
                Some(prev) if prev != v => return true,
                _ => length = Some(v),
            }
        } else if h.field.equiv("Transfer-Encoding") {
            if !h.value.as_str().trim().eq_ignore_ascii_case("chunked") {
                return true;
            }
            chunked += 1;
        }
    }
    chunked > 1 || (chunked == 1 && length.is_some())
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
pub(crate) fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
