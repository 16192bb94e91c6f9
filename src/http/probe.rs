//! A minimal HTTP/1.0 GET for probing a server: `check` probes readiness and the
//! watchdog proves the worker pool answers. Bounded in time and in bytes read.
//! Also the watchdog probe's identity (token, header, User-Agent): the pipeline
//! leaves the probe out of metrics and logs, and must not reach up to `watchdog`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GETs `path` from `addr` with `headers`; returns the status code and the trimmed body.
pub fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    budget: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, budget)?;
    s.set_read_timeout(Some(budget))?;
    s.set_write_timeout(Some(budget))?;
    let mut head = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// User-Agent of the probe, for whoever reads a packet capture. It proves nothing:
/// any client can send it, so it never decides what is left out of metrics and logs.
pub const PROBE_AGENT: &str = "dashboard-backend-watchdog";

/// The header that carries this process's probe token.
pub const PROBE_HEADER: &str = "x-dashboard-probe";

/// 128 random bits from the OS, made once per process and never logged or sent
/// anywhere but to our own listener: only the watchdog's probe can present them.
/// `None` if the random source cannot be read (then nothing is left out).
pub fn probe_token() -> Option<&'static str> {
    static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| {
            use std::io::Read;
            let mut bytes = [0u8; 16];
            let read =
                std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
            read.ok()
                .map(|()| bytes.iter().map(|b| format!("{b:02x}")).collect())
        })
        .as_deref()
}

/// Is this request the watchdog's own probe? Only its requests are left out of
/// metrics and the access log (SPEC §4); a client sending the probe's User-Agent is
/// counted and logged like any other (issue #13).
pub fn is_probe(req: &crate::wire::Request) -> bool {
    match (probe_token(), req.header(PROBE_HEADER)) {
        (Some(token), Some(sent)) => {
            crate::auth::constant_time_eq(token.as_bytes(), sent.as_bytes())
        }
        _ => false,
    }
}
