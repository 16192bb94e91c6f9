//! Hostile clients: idle and slowloris connections, floods, browsers from elsewhere,
//! and a handler that panics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{raw, TestServer};

#[test]
fn six_hundred_idle_and_half_sent_connections_do_not_block_health() {
    let s = TestServer::start();
    let mut conns = Vec::new();
    for i in 0..600 {
        let mut c = TcpStream::connect(s.addr).expect("connect");
        if i % 2 == 0 {
            // slowloris: a request line and half a header, never finished
            c.write_all(b"GET /projects HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("write");
        }
        conns.push(c);
    }
    let t = Instant::now();
    let r = raw(s.addr, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "health took {:?} beside 600 idle connections",
        t.elapsed()
    );
    // The half-sent requests never reached a worker: a full one still gets through.
    assert_eq!(s.get("/projects").status, 200);
    let mut c = conns.pop().expect("conn");
    c.write_all(b"GET /health/live HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut buf = String::new();
    let _ = c.read_to_string(&mut buf);
    assert!(
        buf.starts_with("HTTP/1.0 200"),
        "an idle connection that wakes up is served: {buf:.40}"
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after_per_key() {
    let s = TestServer::start_with(&[("RATE_LIMIT_PER_MINUTE", "5")]);
    for _ in 0..5 {
        assert_eq!(s.get("/projects").status, 200);
    }
    let r = s.get("/projects");
    assert_eq!((r.status, r.code()), (429, "rate_limited".into()));
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait));
    // Another key has its own budget; health checks are never limited.
    let other = crate::harness::create_key(&s.db, "other", "read");
    assert_eq!(
        s.send(
            "GET",
            "/projects",
            &[("Authorization", &format!("Bearer {other}"))],
            None
        )
        .status,
        200
    );
    for _ in 0..20 {
        assert_eq!(s.send("GET", "/health/ready", &[], None).status, 200);
    }
}

#[test]
fn cors_preflight_and_headers_only_when_configured() {
    let s = TestServer::start_with(&[(
        "CORS_ORIGINS",
        "https://dash.example.com, https://ops.example.com",
    )]);
    let pre = s.send(
        "OPTIONS",
        "/projects/1/tasks",
        &[
            ("Origin", "https://dash.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://dash.example.com")
    );
    assert!(pre
        .header("access-control-allow-methods")
        .expect("methods")
        .contains("POST"));
    assert!(pre
        .header("access-control-allow-headers")
        .expect("headers")
        .contains("Authorization"));
    assert_eq!(pre.header("vary"), Some("Origin"));
    let get = s.call_with(
        "GET",
        "/projects",
        None,
        &[("Origin", "https://ops.example.com")],
    );
    assert_eq!(
        get.header("access-control-allow-origin"),
        Some("https://ops.example.com")
    );
    let evil = s.call_with(
        "GET",
        "/projects",
        None,
        &[("Origin", "https://evil.example.net")],
    );
    assert_eq!(evil.header("access-control-allow-origin"), None);
    assert_eq!(evil.header("vary"), Some("Origin"));

    let plain = TestServer::start();
    let r = plain.call_with(
        "GET",
        "/projects",
        None,
        &[("Origin", "https://dash.example.com")],
    );
    assert!(r
        .headers
        .iter()
        .all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control")));
    assert_eq!(r.header("vary"), None);
}

#[test]
fn a_panicking_handler_answers_500_and_the_worker_lives_on() {
    let s = TestServer::start_with(&[("DASHBOARD_BACKEND_TEST_HOOKS", "1"), ("WORKERS", "1")]);
    for _ in 0..3 {
        let r = s.send("GET", "/_test/panic", &[("X-Request-ID", "boom-1")], None);
        assert_eq!((r.status, r.code()), (500, "internal".into()));
        assert_eq!(r.json()["error"]["message"], "internal error");
    }
    assert_eq!(
        s.send("GET", "/health/ready", &[], None).status,
        200,
        "the only worker survived"
    );
    assert!(
        s.log_text().contains("boom-1"),
        "the panic is logged with the request id"
    );
}
