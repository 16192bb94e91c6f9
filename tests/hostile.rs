//! Bad input everywhere (SPEC §5: "no input, however malformed, yields a 5xx or a
//! dropped connection"): a table of hostile requests, each with the answer it must
//! get, and 200+ random and mutated payloads on raw sockets — while a well-formed
//! neighbour keeps being served on its own keep-alive connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{parse, Resp, TestServer};

/// What the server did with one payload.
#[derive(Debug)]
enum Outcome {
    /// Closed without a byte (allowed only where the table says so).
    Closed,
    Answered(Resp),
    /// Bytes that do not parse as an HTTP response.
    Garbled(Vec<u8>),
}

/// Sends `bytes`, half-closes (the client has nothing more to say), reads to EOF.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    // The server may answer and close before it has read everything (431, 400):
    // a reset on write is then part of the exchange, not a failure.
    let _ = c.write_all(bytes);
    let _ = c.shutdown(Shutdown::Write);
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    if buf.is_empty() {
        return Outcome::Closed;
    }
    match parse(&buf) {
        Some(r) => Outcome::Answered(r),
        None => Outcome::Garbled(buf),
    }
}

/// A client on one keep-alive connection, asking `GET /health` until told to stop;
/// counts successes and anything else.
struct Neighbour {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    bad: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Neighbour {
    fn start(addr: SocketAddr) -> Neighbour {
        let (stop, ok, bad) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, o, b) = (stop.clone(), ok.clone(), bad.clone());
        let thread = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = vec![0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let sent = c.write_all(b"GET /health/live HTTP/1.1\r\nHost: n\r\n\r\n");
                let n = sent.and_then(|_| c.read(&mut buf)).unwrap_or(0);
                if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200") {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    b.fetch_add(1, Ordering::Relaxed);
                    c = TcpStream::connect(addr).expect("reconnect");
                    c.set_read_timeout(Some(Duration::from_secs(5)))
                        .expect("timeout");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Neighbour {
            stop,
            ok,
            bad,
            thread: Some(thread),
        }
    }

    /// Stops the loop; returns (served, failed).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("neighbour");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed),
        )
    }
}

/// Every 4xx carries the JSON error envelope with a code.
fn assert_envelope(name: &str, r: &Resp) {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{name}: {} body is not JSON ({e}): {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )
    });
    assert!(
        v["error"]["code"].is_string() && v["request_id"].is_string(),
        "{name}: {} without the error envelope: {v}",
        r.status
    );
}

/// `Some(status)`: that answer; `None`: a clean close without an answer.
type Expect = &'static [Option<u16>];

fn post(path: &str, key: &str, ct: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "POST {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {key}\r\nContent-Type: {ct}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn get(path: &str, key: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {key}\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

fn nested(depth: usize) -> String {
    format!(
        "{{\"title\":\"t\",\"metadata\":{}1{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

#[test]
fn a_table_of_hostile_requests_each_gets_its_4xx_or_a_clean_close() {
    let s = TestServer::start();
    let k = s.key.clone().expect("key");
    let p = s.project("hostile");
    let t = s
        .post(
            &format!("/projects/{p}/tasks"),
            &serde_json::json!({"title": "a task"}),
        )
        .json()["id"]
        .as_i64()
        .expect("task id");
    let tasks = format!("/projects/{p}/tasks");
    let json = "application/json";
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_path = format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(80_000));
    let framed = |headers: &str, body: &str| {
        format!(
            "POST {tasks} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {k}\r\n\
             Content-Type: application/json\r\n{headers}Connection: close\r\n\r\n{body}"
        )
        .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        // ---- broken HTTP on the wire ----
        ("binary garbage", b"\x00\x01\x02\x03\xff\r\n\r\n".to_vec(), &[Some(400)]),
        // Empty lines before a request line are skipped (RFC 9112 §2.2); then EOF.
        ("empty request line", b"\r\n\r\n".to_vec(), &[None]),
        ("method only", b"GET\r\n\r\n".to_vec(), &[Some(400)]),
        ("no version", b"GET /health\r\n\r\n".to_vec(), &[Some(400)]),
        ("unknown version", b"GET /health HTTP/9.9\r\n\r\n".to_vec(), &[Some(400)]),
        ("HTTP/2.0 on an HTTP/1 socket", b"GET /health HTTP/2.0\r\n\r\n".to_vec(), &[Some(400)]),
        ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[Some(400)]),
        ("lone LF line endings", b"GET /health HTTP/1.1\n\n".to_vec(), &[None, Some(400)]),
        ("header without a colon", b"GET /health HTTP/1.1\r\nHost h\r\n\r\n".to_vec(), &[Some(400)]),
        ("non-ASCII header value", b"GET /health HTTP/1.1\r\nX-A: \xff\xfe\r\n\r\n".to_vec(), &[Some(400)]),
        ("unknown method", b"BREW /health HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), &[Some(405)]),
        ("100 KB header", huge_header.into_bytes(), &[Some(431)]),
        ("150 headers", many_headers.into_bytes(), &[Some(431)]),
        ("80 KB path", long_path.into_bytes(), &[Some(431)]),
        ("truncated head then EOF", b"GET /health HTTP/1.1\r\nHost: h\r\n".to_vec(), &[None]),
        ("Content-Length and Transfer-Encoding", framed("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), &[Some(400)]),
        ("two different Content-Lengths", framed("Content-Length: 5\r\nContent-Length: 6\r\n", "{}"), &[Some(400)]),
        ("Content-Length not a number", framed("Content-Length: abc\r\n", "{}"), &[Some(400)]),
        ("negative Content-Length", framed("Content-Length: -1\r\n", "{}"), &[Some(400)]),
        ("Content-Length of 25 digits", framed("Content-Length: 9999999999999999999999999\r\n", "{}"), &[Some(400)]),
        ("Content-Length over MAX_BODY_BYTES", framed("Content-Length: 999999999\r\n", "{}"), &[Some(413)]),
        ("Transfer-Encoding gzip", framed("Transfer-Encoding: gzip\r\n", "{}"), &[Some(400)]),
        ("Transfer-Encoding chunked twice", framed("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), &[Some(400)]),
        ("invalid chunk size", framed("Transfer-Encoding: chunked\r\n", "zz\r\n{}\r\n0\r\n\r\n"), &[Some(400)]),
        ("chunk longer than declared", framed("Transfer-Encoding: chunked\r\n", "2\r\n{\"title\":\"x\"}\r\n0\r\n\r\n"), &[Some(400)]),
        ("chunked body cut off", framed("Transfer-Encoding: chunked\r\n", "10\r\n{\"ti"), &[None, Some(400)]),
        ("body shorter than Content-Length", framed("Content-Length: 2000\r\n", "{\"title\":\"x\"}"), &[None, Some(400)]),
        ("unsupported Expect", framed("Expect: teapot\r\nContent-Length: 2\r\n", "{}"), &[Some(417)]),
        // ---- bad bodies ----
        ("invalid UTF-8 in JSON", post(&tasks, &k, json, b"{\"title\":\"\xff\xfe\"}"), &[Some(400)]),
        ("JSON nested 5 000 deep", post(&tasks, &k, json, nested(5000).as_bytes()), &[Some(400)]),
        ("JSON nested 40 deep (parses, over the limit)", post(&tasks, &k, json, nested(40).as_bytes()), &[Some(400), Some(422)]),
        ("number that overflows f64", post(&tasks, &k, json, b"{\"title\":\"x\",\"priority\":1e400}"), &[Some(400)]),
        ("priority beyond i64", post(&tasks, &k, json, b"{\"title\":\"x\",\"priority\":99999999999999999999999}"), &[Some(400), Some(422)]),
        ("priority as a string", post(&tasks, &k, json, b"{\"title\":\"x\",\"priority\":\"high\"}"), &[Some(422)]),
        ("unknown field", post(&tasks, &k, json, b"{\"title\":\"x\",\"owner_id\":1}"), &[Some(422)]),
        ("body is an array", post(&tasks, &k, json, b"[1,2,3]"), &[Some(400), Some(422)]),
        ("body is a string", post(&tasks, &k, json, b"\"title\""), &[Some(400), Some(422)]),
        ("trailing garbage after JSON", post(&tasks, &k, json, b"{\"title\":\"x\"} trailing"), &[Some(400)]),
        ("empty JSON body", post(&tasks, &k, json, b""), &[Some(400)]),
        ("wrong content type", post(&tasks, &k, "text/plain", b"{\"title\":\"x\"}"), &[Some(415)]),
        ("title of 501 characters", post(&tasks, &k, json, format!("{{\"title\":\"{}\"}}", "x".repeat(501)).as_bytes()), &[Some(422)]),
        ("51 labels", post(&tasks, &k, json, format!("{{\"title\":\"x\",\"labels\":[{}]}}", (0..51).map(|i| format!("\"l{i}\"")).collect::<Vec<_>>().join(",")).as_bytes()), &[Some(422)]),
        ("lone surrogate escape", post(&tasks, &k, json, b"{\"title\":\"\\ud800\"}"), &[Some(400), Some(422)]),
        // ---- bad query values, cursors and ids ----
        ("limit not a number", get(&format!("{tasks}?limit=abc"), &k, ""), &[Some(400)]),
        ("negative limit", get(&format!("{tasks}?limit=-1"), &k, ""), &[Some(400)]),
        ("limit beyond u64", get(&format!("{tasks}?limit=99999999999999999999999"), &k, ""), &[Some(400)]),
        ("bad percent escape", get(&format!("{tasks}?status=%zz"), &k, ""), &[Some(400)]),
        ("percent-encoded invalid UTF-8", get(&format!("{tasks}?status=%ff%fe"), &k, ""), &[Some(400)]),
        ("unknown status filter", get(&format!("{tasks}?status=exploded"), &k, ""), &[Some(400)]),
        ("cursor of NUL bytes", get(&format!("{tasks}?cursor=%00%00"), &k, ""), &[Some(400)]),
        ("cursor of random base64", get(&format!("{tasks}?cursor=QUFBQUFBQUFBQUFB"), &k, ""), &[Some(400)]),
        ("cursor 10 KB long", get(&format!("{tasks}?cursor={}", "A".repeat(10_000)), &k, ""), &[Some(400)]),
        ("task id beyond i64", get("/tasks/99999999999999999999", &k, ""), &[Some(400), Some(404)]),
        ("negative task id", get("/tasks/-1", &k, ""), &[Some(404)]),
        ("task id zero", get("/tasks/0", &k, ""), &[Some(404)]),
        ("project id with letters", get("/projects/12ab/tasks", &k, ""), &[Some(404)]),
        ("dot-dot path", get("/projects/../../etc/passwd", &k, ""), &[Some(404)]),
        ("task under the wrong project", get(&format!("/projects/{}/tasks/{t}", p + 1000), &k, ""), &[Some(404)]),
        // ---- bad credentials and headers ----
        ("10 KB bearer token", get("/projects", &"k".repeat(10_000), ""), &[Some(401)]),
        ("Basic auth scheme", b"GET /projects HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\nConnection: close\r\n\r\n".to_vec(), &[Some(401)]),
        ("If-Match garbage", format!("PATCH /tasks/{t} HTTP/1.1\r\nAuthorization: Bearer {k}\r\nIf-Match: \"zz\"\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{{\"title\":\"y\"}}").into_bytes(), &[Some(400), Some(412)]),
    ];
    assert!(cases.len() >= 40, "the table has {} cases", cases.len());

    let neighbour = Neighbour::start(s.addr);
    let mut failures = Vec::new();
    for (name, bytes, expect) in &cases {
        let outcome = exchange(s.addr, bytes);
        let got = match &outcome {
            Outcome::Closed => None,
            Outcome::Answered(r) => Some(r.status),
            Outcome::Garbled(b) => {
                failures.push(format!(
                    "{name}: garbled answer {:?}",
                    String::from_utf8_lossy(b)
                ));
                continue;
            }
        };
        if !expect.contains(&got) {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
        if let Outcome::Answered(r) = &outcome {
            if r.status >= 400 {
                assert_envelope(name, r);
            }
        }
    }
    let (served, failed) = neighbour.finish();
    assert!(
        failures.is_empty(),
        "hostile table:\n{}",
        failures.join("\n")
    );
    assert_eq!(failed, 0, "the well-formed neighbour failed {failed} times");
    assert!(served > 0);
    // Nothing was created by any of it: the one task made above is still alone.
    let list = s.get(&format!("{tasks}?limit=500")).json();
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    assert!(!s.log_text().contains("panicked"), "a handler panicked");
}

/// xorshift64*: the same payloads on every run, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random payload: raw bytes, or a valid request with bytes flipped, inserted,
/// deleted, truncated or lines duplicated.
fn payload(rng: &mut Rng, templates: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(4) == 0 {
        let n = rng.below(2048) + 1;
        return (0..n).map(|_| rng.next() as u8).collect();
    }
    let mut p = templates[rng.below(templates.len())].clone();
    for _ in 0..rng.below(6) + 1 {
        if p.is_empty() {
            break;
        }
        let at = rng.below(p.len());
        match rng.below(6) {
            0 => p[at] = rng.next() as u8,
            1 => p.insert(at, b"\r\n:\0 %{}\"\\"[rng.below(10)]),
            2 => {
                p.remove(at);
            }
            3 => p.truncate(at),
            4 => {
                let chunk: Vec<u8> = p[at..].iter().take(64).copied().collect();
                p.splice(at..at, chunk);
            }
            _ => p[at] ^= 0x20,
        }
    }
    p
}

#[test]
fn two_hundred_random_payloads_on_raw_sockets_get_no_5xx() {
    let s = TestServer::start();
    let k = s.key.clone().expect("key");
    let p = s.project("garbage");
    let tasks = format!("/projects/{p}/tasks");
    let templates = vec![
        b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        get(&format!("{tasks}?limit=5&status=pending"), &k, ""),
        post(&tasks, &k, "application/json", br#"{"title":"t","priority":3,"labels":["a"],"metadata":{"k":[1,2]}}"#),
        post(&format!("{tasks}/claim"), &k, "application/json", br#"{"agent_id":"a","lease_seconds":30}"#),
        format!(
            "POST {tasks} HTTP/1.1\r\nAuthorization: Bearer {k}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\nd\r\n{{\"title\":\"c\"}}\r\n0\r\n\r\n"
        )
        .into_bytes(),
        b"OPTIONS /projects HTTP/1.1\r\nOrigin: http://x\r\nAccess-Control-Request-Method: POST\r\n\r\n".to_vec(),
    ];
    let neighbour = Neighbour::start(s.addr);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let (mut answered, mut closed) = (0, 0);
    for i in 0..240 {
        let bytes = payload(&mut rng, &templates);
        match exchange(s.addr, &bytes) {
            Outcome::Closed => closed += 1,
            Outcome::Answered(r) => {
                answered += 1;
                assert!(
                    r.status < 500,
                    "payload {i} got {}: {:?}\n{:?}",
                    r.status,
                    String::from_utf8_lossy(&bytes),
                    String::from_utf8_lossy(&r.body)
                );
                if r.status >= 400 {
                    assert_envelope(&format!("payload {i}"), &r);
                }
            }
            Outcome::Garbled(b) => panic!(
                "payload {i}: garbled answer {:?} to {:?}",
                String::from_utf8_lossy(&b),
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    let (served, failed) = neighbour.finish();
    assert_eq!(failed, 0, "the well-formed neighbour failed {failed} times");
    assert!(
        served > 0 && answered > 100,
        "answered {answered}, closed {closed}"
    );
    assert_eq!(s.get("/health").status, 200);
    assert!(!s.log_text().contains("panicked"), "a handler panicked");
}
