//! SPEC §10, issue #14: a *network cut* between the server and PostgreSQL (packets
//! silently dropped, no RST: a firewall, a dead host, a partition) answers 503 +
//! Retry-After within a bounded time, turns readiness 503, leaves liveness alone and
//! the process alive, and the service recovers by itself once the path is back.
//!
//! Between the server and PostgreSQL runs a TCP proxy (a thread of this test; the
//! server's `DATABASE_URL` names it). Cutting it does what a dropped link does at the
//! TCP level, not just at the byte level: a proxy that merely stopped copying bytes
//! would still have its kernel acknowledge every segment and answer every keepalive,
//! which is a server that hangs, not a network that is gone. So each of the proxy's
//! sockets, and its listener, gets a classic BPF socket filter that drops every
//! incoming packet (`SO_ATTACH_FILTER`, no privileges needed): the kernel discards
//! them before TCP sees them, so nothing is acknowledged, keepalive probes go
//! unanswered, and new connections' SYNs are lost, exactly as on a cut cable. The
//! proxy also stops copying. Healing detaches the filters and copying resumes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{self, Resp, TestServer};

/// How long a request that needs the database may take to answer 503 after the cut.
/// The defaults detect a dead peer in about 10 s (tcp_user_timeout 10 s, keepalives
/// after 5 s idle); one request may meet two dead connections (the retry at BEGIN),
/// and the machine is loaded. Without detection it is ~15 minutes.
const DETECT: Duration = Duration::from_secs(50);

/// Makes the kernel drop every packet arriving for `fd` (on) or stop doing so (off).
fn drop_all(fd: RawFd, on: bool) {
    // SAFETY: setsockopt on a socket we own, with a pointer to a properly sized value
    // that lives across the call; the kernel copies the one-instruction program.
    let r = unsafe {
        if on {
            // BPF_RET | BPF_K with k = 0: accept zero bytes of the packet, i.e. drop it.
            let mut code = [libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0,
            }];
            let prog = libc::sock_fprog {
                len: 1,
                filter: code.as_mut_ptr(),
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &prog as *const libc::sock_fprog as *const libc::c_void,
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        } else {
            let zero: libc::c_int = 0;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                &zero as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    let err = std::io::Error::last_os_error();
    // A socket the peer already closed has nothing to filter any more.
    let already_gone = !on && err.raw_os_error() == Some(libc::ENOENT);
    if r != 0 && !already_gone {
        panic!(
            "socket filter {} on fd {fd}: {err}",
            if on { "attach" } else { "detach" }
        );
    }
}

/// The TCP proxy between the server and PostgreSQL.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// The listener and every proxied socket (kept open: a cut closes nothing).
    socks: Arc<Mutex<Vec<Arc<TcpStream>>>>,
    listener: Arc<TcpListener>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").expect("bind the proxy"));
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let socks: Arc<Mutex<Vec<Arc<TcpStream>>>> = Arc::default();
        let (l, c, s) = (listener.clone(), cut.clone(), socks.clone());
        std::thread::spawn(move || {
            for down in l.incoming() {
                let Ok(down) = down else { continue };
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (down, up) = (Arc::new(down), Arc::new(up));
                {
                    let mut all = s.lock().expect("socks");
                    if c.load(Ordering::SeqCst) {
                        drop_all(down.as_raw_fd(), true);
                        drop_all(up.as_raw_fd(), true);
                    }
                    all.push(down.clone());
                    all.push(up.clone());
                }
                pump(down.clone(), up.clone(), c.clone());
                pump(up, down, c.clone());
            }
        });
        Proxy {
            addr,
            cut,
            socks,
            listener,
        }
    }

    /// Cuts (true) or heals (false) the path, for packets and for bytes.
    fn set_cut(&self, on: bool) {
        let all = self.socks.lock().expect("socks");
        self.cut.store(on, Ordering::SeqCst);
        drop_all(self.listener.as_raw_fd(), on);
        for s in all.iter() {
            drop_all(s.as_raw_fd(), on);
        }
    }
}

/// Copies `from` to `to` while the path is up; holds what it read while it is cut.
fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>, cut: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        from.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let mut held = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if cut.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !held.is_empty() {
                if (&*to).write_all(&held).is_err() {
                    break;
                }
                held.clear();
            }
            match (&*from).read(&mut buf) {
                Ok(0) => break,
                Ok(n) if cut.load(Ordering::SeqCst) => held.extend_from_slice(&buf[..n]),
                Ok(n) => {
                    if (&*to).write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}

/// One request with a long read timeout (the harness gives up after 30 s, and a hang
/// is exactly what this test must see): the response, or None if none came in time,
/// and how long it took.
fn timed(
    s: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (Option<Resp>, Duration) {
    let t = Instant::now();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    let body = body.map(|b| b.to_string());
    if let Some(b) = &body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.as_deref().unwrap_or(""));
    let mut c = TcpStream::connect(s.addr).expect("connect to the server");
    c.set_read_timeout(Some(DETECT + Duration::from_secs(30)))
        .expect("timeout");
    c.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    (harness::parse(&buf), t.elapsed())
}

/// A request expected to answer 503 + Retry-After within `DETECT` of `cut_at`.
fn refused_in_time(
    s: &Arc<TestServer>,
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<Value>,
    cut_at: Instant,
) -> std::thread::JoinHandle<()> {
    let s = s.clone();
    std::thread::spawn(move || {
        let (r, took) = timed(&s, method, &path, body.as_ref());
        let since_cut = cut_at.elapsed();
        let r = r.unwrap_or_else(|| panic!("{what}: no answer in {took:?} after the cut"));
        eprintln!(
            "netcut: {what} answered {} after {took:?} ({since_cut:?} since the cut)",
            r.status
        );
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        assert!(
            r.header("retry-after").is_some(),
            "{what}: a 503 without Retry-After"
        );
        assert!(
            since_cut < DETECT,
            "{what}: 503 only {since_cut:?} after the cut"
        );
    })
}

#[test]
fn netcut_to_postgres_answers_503_in_bounded_time_and_recovers() {
    if !harness::postgres() {
        eprintln!(
            "SKIPPED on sqlite: needs PostgreSQL behind a TCP proxy \
             (netcut_to_postgres_answers_503_in_bounded_time_and_recovers)"
        );
        return;
    }
    let dir = harness::temp_dir("netcut");
    let db = dir.join("data").join("dashboard.db");
    let real = harness::database_url(&db).expect("a PostgreSQL URL");
    // postgres://postgres@127.0.0.1:PORT/NAME?sslmode=disable
    let hostport = real
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(hp, _)| hp.to_string())
        .expect("host:port in the URL");
    let proxy = Proxy::start(hostport.parse().expect("an address"));
    let via_proxy = real.replacen(&hostport, &proxy.addr.to_string(), 1);
    let s = Arc::new(TestServer::spawn(
        dir,
        db,
        None,
        &[
            ("AUTH_DISABLED", "true"),
            ("DATABASE_URL", &via_proxy),
            ("DATABASE_POOL_SIZE", "4"),
            ("DASHBOARD_BACKEND_TEST_HOOKS", "1"),
        ],
    ));
    let pid = s.project("netcut");
    for i in 0..8 {
        let r = s.post(
            &format!("/projects/{pid}/tasks"),
            &json!({"title": format!("before {i}")}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }

    // A server that is alive but slow is not taken for a dead one: a statement that
    // runs past the dead-peer timeout (10 s) on a healthy link completes.
    let (slow, took) = timed(&s, "POST", "/_test/busy-writer?ms=14000", None);
    let slow = slow.expect("an answer to the slow statement");
    assert_eq!(
        slow.status,
        204,
        "a 14 s statement on a live link: {}",
        slow.text()
    );
    eprintln!("netcut: a 14 s statement on a live link completed in {took:?}");

    // Mid-operation: a transaction the server is waiting on (pg_sleep) when the
    // link goes: nothing unacknowledged on the client's side, only keepalives can
    // tell the peer is gone.
    let waiting = {
        let s = s.clone();
        std::thread::spawn(move || timed(&s, "POST", "/_test/busy-writer?ms=55000", None))
    };
    std::thread::sleep(Duration::from_secs(1));
    proxy.set_cut(true);
    let cut_at = Instant::now();
    eprintln!("netcut: the link is cut");

    // A write and a read after the cut: their statements go out unacknowledged.
    let write = refused_in_time(
        &s,
        "a write",
        "POST",
        format!("/projects/{pid}/tasks"),
        Some(json!({"title": "during the cut"})),
        cut_at,
    );
    let read = refused_in_time(
        &s,
        "a read",
        "GET",
        format!("/projects/{pid}/tasks?limit=5"),
        None,
        cut_at,
    );

    // Liveness stays prompt throughout; readiness turns 503.
    let mut not_ready = None;
    while cut_at.elapsed() < DETECT {
        let (live, took) = timed(&s, "GET", "/health/live", None);
        let live = live.expect("liveness answers");
        assert_eq!(live.status, 200, "liveness: {}", live.text());
        assert!(
            took < Duration::from_secs(10),
            "liveness took {took:?} during the cut"
        );
        let (ready, _) = timed(&s, "GET", "/health/ready", None);
        if let Some(r) = ready.filter(|r| r.status == 503) {
            assert_eq!(r.json()["reason"], "database", "{}", r.text());
            not_ready = Some(cut_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let not_ready =
        not_ready.unwrap_or_else(|| panic!("readiness still not 503 {DETECT:?} after the cut"));
    eprintln!("netcut: readiness 503 after {not_ready:?}");

    write.join().expect("the write during the cut");
    read.join().expect("the read during the cut");
    let (r, took) = waiting.join().expect("the waiting transaction");
    let since_cut = took.saturating_sub(Duration::from_secs(1));
    let r = r.unwrap_or_else(|| panic!("the waiting transaction: no answer in {took:?}"));
    eprintln!(
        "netcut: the waiting transaction answered {} about {since_cut:?} after the cut",
        r.status
    );
    assert_eq!(r.status, 503, "the waiting transaction: {}", r.text());
    assert!(
        since_cut < DETECT,
        "the waiting transaction: 503 only {since_cut:?} after the cut"
    );

    // Still the same process, still answering.
    let (live, _) = timed(&s, "GET", "/health/live", None);
    assert_eq!(live.map(|r| r.status), Some(200), "liveness after the cut");
    assert!(
        !s.log_text().contains("panicked"),
        "a panic during the cut: {}",
        s.log_text()
    );

    // Heal: writes succeed again without a restart, and readiness comes back.
    proxy.set_cut(false);
    let healed_at = Instant::now();
    eprintln!("netcut: the link is back");
    let mut written = None;
    while healed_at.elapsed() < Duration::from_secs(60) {
        let (r, _) = timed(
            &s,
            "POST",
            &format!("/projects/{pid}/tasks"),
            Some(&json!({"title": "after the cut"})),
        );
        if let Some(r) = r.filter(|r| r.status == 201) {
            written = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let written = written.expect("no successful write within 60 s of healing");
    eprintln!(
        "netcut: writes succeed again {:?} after healing",
        healed_at.elapsed()
    );
    assert_eq!(written.json()["title"], "after the cut");
    let mut ready = false;
    while healed_at.elapsed() < Duration::from_secs(90) && !ready {
        ready = timed(&s, "GET", "/health/ready", None)
            .0
            .is_some_and(|r| r.status == 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ready, "readiness never came back after healing");
    // Nothing acknowledged was lost: the eight writes before the cut and the one after.
    let listed = s.get(&format!("/projects/{pid}/tasks?limit=100"));
    assert_eq!(listed.status, 200, "{}", listed.text());
    let titles: Vec<String> = listed.json()["items"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|t| t["title"].as_str().unwrap_or("").to_string())
        .collect();
    for i in 0..8 {
        assert!(
            titles.contains(&format!("before {i}")),
            "lost before {i}: {titles:?}"
        );
    }
    assert!(titles.contains(&"after the cut".to_string()), "{titles:?}");
}
