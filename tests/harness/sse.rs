//! A Server-Sent Events client on a raw socket, for the tests of the event stream
//! (`live.rs`, `attack_live.rs`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{parse, TestServer};

/// An open event stream.
pub struct Sse {
    pub reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// One event off a stream.
#[derive(Debug)]
pub struct Ev {
    pub id: i64,
    pub kind: String,
    pub data: Value,
}

/// Sends `{method} /projects/{pid}/events/stream{query}` with exactly `headers` on
/// `sock` and reads the answer's head (20 s read timeout).
pub fn open_on(
    mut sock: TcpStream,
    method: &str,
    pid: i64,
    query: &str,
    headers: &[(&str, &str)],
) -> Sse {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut req = format!("{method} /projects/{pid}/events/stream{query} HTTP/1.1\r\nHost: t\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes()).expect("send");
    let mut reader = BufReader::new(sock);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).expect("head") == 0 {
            break;
        }
        head.extend_from_slice(&line);
    }
    let r = parse(&head).expect("a response head");
    Sse {
        reader,
        status: r.status,
        headers: r.headers,
    }
}

impl Sse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next event (comments and `retry:` skipped); `None` at the end of the stream.
    pub fn next(&mut self) -> Option<Ev> {
        let (mut id, mut kind, mut data) = (None, None, String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if let (Some(id), Some(kind)) = (id, kind.take()) {
                    let data = serde_json::from_str(&data).expect("data is JSON");
                    return Some(Ev { id, kind, data });
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().expect("numeric id"));
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }

    pub fn into_socket(self) -> TcpStream {
        self.reader.into_inner()
    }
}

/// The value of a gauge in /metrics (`http_streams_open`, `claim_waiters`).
pub fn gauge(s: &TestServer, name: &str) -> i64 {
    let text = s.get("/metrics").text();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Polls until `gauge(name) == want` (or panics after `limit`).
pub fn await_gauge(s: &TestServer, name: &str, want: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let v = gauge(s, name);
        if v == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {v}, expected {want} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
