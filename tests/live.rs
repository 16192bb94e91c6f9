//! SPEC §9 backend: long-poll claims and the event stream, from the outside. Runs on
//! either backend (`TEST_BACKEND=postgres` for PostgreSQL).

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::sse::{self, await_gauge, gauge, Sse};
use crate::harness::{Resp, TestServer};

/// The value of a gauge in /metrics.
fn auth(s: &TestServer) -> Vec<(String, String)> {
    s.key
        .as_ref()
        .map(|k| vec![("Authorization".to_string(), format!("Bearer {k}"))])
        .unwrap_or_default()
}

/// A claim in its own thread: the answer and when it arrived.
fn claim_async(s: &TestServer, pid: i64, body: Value) -> std::thread::JoinHandle<(Resp, Instant)> {
    let addr = s.addr;
    let headers = auth(s);
    std::thread::spawn(move || {
        let bytes = body.to_string();
        let mut req = format!(
            "POST /projects/{pid}/tasks/claim HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            bytes.len()
        );
        for (k, v) in &headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&bytes);
        let r = crate::harness::raw(addr, req.as_bytes());
        (r, Instant::now())
    })
}

fn open_stream(s: &TestServer, pid: i64, query: &str, extra: &[(&str, &str)]) -> Sse {
    let sock = TcpStream::connect(s.addr).expect("connect");
    open_stream_on(sock, s, pid, query, extra)
}

fn open_stream_on(
    sock: TcpStream,
    s: &TestServer,
    pid: i64,
    query: &str,
    extra: &[(&str, &str)],
) -> Sse {
    let auth = auth(s);
    let mut headers: Vec<(&str, &str)> =
        auth.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.extend_from_slice(extra);
    sse::open_on(sock, "GET", pid, query, &headers)
}

fn new_task(s: &TestServer, pid: i64, title: &str) -> i64 {
    let r = s.post(
        &format!("/projects/{pid}/tasks"),
        &json!({ "title": title }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().expect("id")
}

/// Every event id of project `pid`, from the feed.
fn feed_ids(s: &TestServer, pid: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let r = s.get(&format!("/projects/{pid}/events?after={after}&limit=500"));
        assert_eq!(r.status, 200);
        let items = r.json()["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return ids;
        }
        for e in items {
            after = e["id"].as_i64().expect("id");
            ids.push(after);
        }
    }
}

#[test]
fn a_waiter_gets_a_task_created_later_at_once() {
    let s = TestServer::start();
    let pid = s.project("waiting");
    // Five rounds: the wake-up must come from the task's creation, not from the
    // once-a-second re-check. The re-check alone would answer 0–1000 ms after the
    // creation (median ~500 ms); the wake-up answers in milliseconds. So: every
    // round under 500 ms and the median under 100 ms — robust on a loaded CI
    // machine, where one round can stall. (Issue #16 asks for 50 ms: the lags
    // printed below are 5–42 ms on a quiet machine.)
    let mut lags = Vec::new();
    for round in 0..5 {
        let waiter = claim_async(&s, pid, json!({"agent": "w", "wait_seconds": 10}));
        await_gauge(&s, "claim_waiters", 1, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(200));
        let before = Instant::now();
        let id = new_task(&s, pid, &format!("late work {round}"));
        let created = Instant::now();
        let (r, got) = waiter.join().expect("waiter");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["id"].as_i64(), Some(id));
        assert_eq!(r.json()["assignee"], "w");
        assert!(got >= before);
        lags.push(got.saturating_duration_since(created));
    }
    eprintln!("waiter answered after the task's creation: {lags:?}");
    assert!(
        lags.iter().all(|l| *l < Duration::from_millis(500)),
        "{lags:?}"
    );
    let mut sorted = lags.clone();
    sorted.sort();
    assert!(sorted[2] < Duration::from_millis(100), "median: {lags:?}");
    // The count drops just after the answer is handed over: wait for it.
    await_gauge(&s, "claim_waiters", 0, Duration::from_secs(5));
    // Nothing left: a short wait times out with 204.
    let t0 = Instant::now();
    let (r, _) = claim_async(&s, pid, json!({"agent": "w", "wait_seconds": 1}))
        .join()
        .expect("claim");
    assert_eq!(r.status, 204);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "answered after {:?}",
        t0.elapsed()
    );
    // wait_seconds is checked like the rest of the body.
    let r = s.post(
        &format!("/projects/{pid}/tasks/claim"),
        &json!({"agent": "w", "wait_seconds": 61}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.code(), "validation_failed");
}

#[test]
fn waiters_are_served_in_arrival_order_and_each_task_goes_to_one() {
    let s = TestServer::start();
    let pid = s.project("fifo");
    let n = 6;
    let mut waiters = Vec::new();
    for i in 0..n {
        waiters.push(claim_async(
            &s,
            pid,
            json!({"agent": format!("w{i}"), "wait_seconds": 20}),
        ));
        await_gauge(&s, "claim_waiters", i + 1, Duration::from_secs(5));
    }
    // Two more than there are tasks: the last two must time out empty-handed.
    let late: Vec<_> = (0..2)
        .map(|i| {
            let h = claim_async(
                &s,
                pid,
                json!({"agent": format!("late{i}"), "wait_seconds": 3}),
            );
            await_gauge(&s, "claim_waiters", n + 1 + i, Duration::from_secs(5));
            h
        })
        .collect();
    let tasks: Vec<i64> = (0..n)
        .map(|i| new_task(&s, pid, &format!("t{i}")))
        .collect();
    let got: Vec<i64> = waiters
        .into_iter()
        .map(|h| {
            let (r, _) = h.join().expect("waiter");
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["id"].as_i64().expect("id")
        })
        .collect();
    // The oldest waiter gets the best (oldest) task, and so on.
    assert_eq!(
        got, tasks,
        "waiters in arrival order get tasks in claim order"
    );
    for h in late {
        let (r, _) = h.join().expect("late waiter");
        assert_eq!(r.status, 204, "{}", r.text());
    }
    assert_eq!(gauge(&s, "claim_waiters"), 0);
}

#[test]
fn a_resumed_stream_sees_every_event_exactly_once_under_writes() {
    let s = TestServer::start();
    let pid = s.project("stream");
    let mut first = open_stream(&s, pid, "", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("text/event-stream"));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (addr, key) = (s.addr, s.key.clone());
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..60 {
                    let body = json!({ "title": format!("w{w}-{i}") }).to_string();
                    let mut req = format!(
                        "POST /projects/{pid}/tasks HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                        body.len()
                    );
                    if let Some(k) = &key {
                        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
                    }
                    req.push_str("\r\n");
                    req.push_str(&body);
                    let r = crate::harness::raw(addr, req.as_bytes());
                    assert_eq!(r.status, 201, "{}", r.text());
                    ids.push(r.json()["id"].as_i64().expect("id"));
                }
                ids
            })
        })
        .collect();
    let mut seen: Vec<i64> = Vec::new();
    while seen.len() < 40 {
        let e = first.next().expect("an event");
        assert_eq!(e.data["id"].as_i64(), Some(e.id));
        assert_eq!(e.data["type"].as_str(), Some(e.kind.as_str()));
        seen.push(e.id);
    }
    // The client goes away mid-stream (and events keep coming), then resumes.
    drop(first);
    let last = *seen.last().expect("one");
    let mut second = open_stream(&s, pid, "", &[("Last-Event-ID", &last.to_string())]);
    assert_eq!(second.status, 200);
    for w in writers {
        w.join().expect("writer");
    }
    let all = feed_ids(&s, pid);
    let end = *all.last().expect("events");
    while seen.last() != Some(&end) {
        let e = second.next().expect("an event after the resume");
        seen.push(e.id);
    }
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event came twice");
    assert_eq!(seen, all, "the stream's events are the feed's, in order");
    // ?after= resumes too.
    let mut third = open_stream(&s, pid, "", &[]);
    drop(third.next());
    let mid = all[all.len() / 2];
    let mut fourth = open_stream(&s, pid, &format!("?after={mid}"), &[]);
    assert_eq!(
        fourth.next().map(|e| e.id),
        all.iter().copied().find(|&i| i > mid)
    );
}

/// A connection with a small receive window, for a subscriber that never reads.
fn small_window(s: &TestServer) -> TcpStream {
    let sock = TcpStream::connect(s.addr).expect("connect");
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket we own, with a valid int option.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock
}

#[test]
fn a_subscriber_that_never_reads_is_dropped() {
    let s = TestServer::start_with(&[("READ_TIMEOUT_SECONDS", "2")]);
    let pid = s.project("slow");
    let tid = new_task(&s, pid, "big");
    // A small receive window, and nothing ever read.
    let slow = open_stream_on(small_window(&s), &s, pid, "", &[]);
    assert_eq!(slow.status, 200);
    let mut fast = open_stream(&s, pid, "", &[]);
    await_gauge(&s, "http_streams_open", 2, Duration::from_secs(5));
    let timed_out_before = gauge(&s, "http_connections_timed_out_total");
    // The one that reads gets everything (project and task created, 80 updates).
    let reader = std::thread::spawn(move || {
        for _ in 0..82 {
            fast.next()
                .expect("the reading subscriber gets every event");
        }
        fast
    });
    // Events of ~100 KB each: far more than the socket buffers hold. What the
    // stalled subscriber's connection holds shows in http_streams_buffered_bytes.
    let big = "x".repeat(99_000);
    let mut held = 0;
    for i in 0..80 {
        let r = s.patch(
            &format!("/tasks/{tid}"),
            &json!({ "description": format!("{i}{big}") }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        held = held.max(gauge(&s, "http_streams_buffered_bytes"));
    }
    let fast = reader.join().expect("reader");
    // A piece of ~100 KB events stalled in front of a socket that takes nothing.
    assert!(
        held >= 90_000,
        "http_streams_buffered_bytes peaked at {held}"
    );
    // The one that does not read is dropped within the read timeout of its writes
    // stalling, and what it held is freed with it (the reader has taken all its
    // bytes, so nothing is held at all); the server keeps serving.
    await_gauge(&s, "http_streams_open", 1, Duration::from_secs(10));
    await_gauge(
        &s,
        "http_streams_buffered_bytes",
        0,
        Duration::from_secs(10),
    );
    assert_eq!(s.get("/health").status, 200);
    // Its connection was closed for not taking its bytes, and reset: the kernel
    // keeps nothing more for it. (A plain close left ~3 MB queued for it in
    // FIN-WAIT-1 for as long as it kept the connection: it could read them all.)
    assert!(gauge(&s, "http_connections_timed_out_total") > timed_out_before);
    let mut sock = slow.into_socket();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (mut after_drop, mut buf) = (0, vec![0u8; 64 * 1024]);
    let end = loop {
        match std::io::Read::read(&mut sock, &mut buf) {
            Ok(0) => break None,
            Ok(n) => after_drop += n,
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(
        end,
        Some(std::io::ErrorKind::ConnectionReset),
        "the dropped subscriber could still read {after_drop} bytes, then {end:?}"
    );
    // The reading one is the one still open.
    let mut fast = fast;
    let id = new_task(&s, pid, "after the drop");
    let e = fast.next().expect("the reading subscriber is still served");
    assert_eq!(e.data["task_id"].as_i64(), Some(id));
    drop(fast);
    await_gauge(&s, "http_streams_open", 0, Duration::from_secs(20));
}

/// SPEC §9: "a comment line every 15 s" on a quiet stream (real time: ~15 s), and
/// the stream stays open and serving after it.
#[test]
fn a_quiet_stream_gets_a_keep_alive_comment_every_15_s() {
    let s = TestServer::start();
    let pid = s.project("quiet");
    // Resumed after the project's only event: nothing to send, so only comments come.
    let last = *feed_ids(&s, pid).last().expect("the project's event");
    let mut st = open_stream(&s, pid, "", &[("Last-Event-ID", &last.to_string())]);
    assert_eq!(st.status, 200);
    st.reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(25)))
        .expect("timeout");
    // The opening comment, then silence until the keep-alive.
    let mut comments = Vec::new();
    while comments.len() < 2 {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut st.reader, &mut line)
            .expect("the stream stays open past the keep-alive");
        assert!(n > 0, "the stream ended; comments so far: {comments:?}");
        let line = line.trim_end().to_string();
        if line.starts_with(':') {
            comments.push((line, Instant::now()));
        } else {
            assert!(
                line.is_empty() || line.starts_with("retry:"),
                "only comments on a quiet stream, got {line:?}"
            );
        }
    }
    assert_eq!(comments[0].0, ": open");
    assert_eq!(comments[1].0, ": keep-alive");
    let gap = comments[1].1.duration_since(comments[0].1);
    eprintln!("keep-alive comment {gap:?} after the stream opened");
    assert!(
        gap >= Duration::from_secs(14) && gap <= Duration::from_secs(17),
        "keep-alive after {gap:?}, expected ~15 s"
    );
    // Still open, still serving.
    assert_eq!(gauge(&s, "http_streams_open"), 1);
    let id = new_task(&s, pid, "after the keep-alive");
    let e = st.next().expect("an event after the keep-alive");
    assert_eq!(
        (e.kind.as_str(), e.data["task_id"].as_i64()),
        ("created", Some(id))
    );
}

/// "…dropped and its memory freed" (issue #16): rounds of subscribers that never
/// read, each stalled on a piece of ~100 KB events until the read timeout drops it.
/// After every round nothing is held (`http_streams_buffered_bytes` is 0, the open
/// streams are back to none), and the server's resident memory stops growing after
/// the first rounds: a leak of what each dropped stream held (~300 KB) would add
/// ~4.7 MB a round. Nor does a stalled stream hold much more than its piece.
#[test]
fn dropped_subscribers_leave_no_memory_behind() {
    const ROUNDS: usize = 8;
    const PER_ROUND: usize = 16;
    let s = TestServer::start_with(&[("READ_TIMEOUT_SECONDS", "1")]);
    let pid = s.project("dropped");
    let tid = new_task(&s, pid, "big");
    // ~5 MB of events: more than the kernel buffers for a socket (tcp_wmem's
    // maximum, 4 MiB by default), which would otherwise take the whole feed and
    // leave nothing stalled.
    let big = "x".repeat(99_000);
    for i in 0..50 {
        let r = s.patch(
            &format!("/tasks/{tid}"),
            &json!({ "description": format!("{i}{big}") }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut rss = vec![gauge(&s, "process_resident_memory_bytes")];
    let mut peaks = Vec::new();
    for _ in 0..ROUNDS {
        // Each reads the feed from the start, and stalls.
        let subs: Vec<Sse> = (0..PER_ROUND)
            .map(|_| open_stream_on(small_window(&s), &s, pid, "", &[]))
            .collect();
        assert!(subs.iter().all(|x| x.status == 200));
        let mut peak = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while gauge(&s, "http_streams_open") > 0 {
            peak = peak.max(gauge(&s, "http_streams_buffered_bytes"));
            assert!(Instant::now() < deadline, "slow subscribers not dropped");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(gauge(&s, "http_streams_buffered_bytes"), 0);
        drop(subs);
        peaks.push(peak);
        rss.push(gauge(&s, "process_resident_memory_bytes"));
    }
    let mib = |b: i64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "held at the peak of each round: {peaks:?}; RSS before and after each round (MiB): {:?}",
        rss.iter()
            .map(|&b| format!("{:.1}", mib(b)))
            .collect::<Vec<_>>()
    );
    // Each round's subscribers really held something before they were dropped.
    assert!(peaks.iter().all(|&p| p >= 100_000), "{peaks:?}");
    // What the rounds cost at all: the pieces held were ~4.7 MB; reading the feed in
    // pages of 200 such events (before FIRST_BATCH in src/live/stream.rs) took RSS up
    // ~90 MiB on either backend (now ~35 MiB on SQLite, whose readers' page caches
    // fill too, ~15 MiB on PostgreSQL).
    let most = rss.iter().max().copied().unwrap_or(0) - rss[0];
    assert!(
        most < 56 << 20,
        "RSS rose {:.1} MiB for {PER_ROUND} subscribers stalled at a time",
        mib(most)
    );
    // The allocator settles within ~4 rounds (RSS plateaus, later when other tests
    // run beside this one); a leak would add ~4.7 MB a round, 14 MB over the last 3.
    let growth = rss[ROUNDS] - rss[ROUNDS - 3];
    assert!(
        growth < 6 << 20,
        "RSS grew {:.1} MiB over the last 3 rounds of {PER_ROUND} dropped subscribers",
        mib(growth)
    );
}

#[test]
fn max_streams_caps_streams_and_waiters() {
    let s = TestServer::start_with(&[("MAX_STREAMS", "2")]);
    let pid = s.project("capped");
    let a = open_stream(&s, pid, "", &[]);
    let b = open_stream(&s, pid, "", &[]);
    assert_eq!((a.status, b.status), (200, 200));
    let c = open_stream(&s, pid, "", &[]);
    assert_eq!(c.status, 503);
    assert!(c.header("retry-after").is_some());
    drop((a, b, c));
    await_gauge(&s, "http_streams_open", 0, Duration::from_secs(20));
    assert_eq!(open_stream(&s, pid, "", &[]).status, 200);
    // A project that does not exist: 404, no place taken.
    assert_eq!(open_stream(&s, 999_999, "", &[]).status, 404);

    let w: Vec<_> = (0..2)
        .map(|i| {
            let h = claim_async(&s, pid, json!({"agent": "w", "wait_seconds": 5}));
            await_gauge(&s, "claim_waiters", i + 1, Duration::from_secs(5));
            h
        })
        .collect();
    let r = s.post(
        &format!("/projects/{pid}/tasks/claim"),
        &json!({"agent": "x", "wait_seconds": 5}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.code(), "unavailable");
    assert!(r.header("retry-after").is_some());
    // Without waiting, a claim is not capped.
    let r = s.post(
        &format!("/projects/{pid}/tasks/claim"),
        &json!({"agent": "x"}),
    );
    assert_eq!(r.status, 204);
    new_task(&s, pid, "one");
    new_task(&s, pid, "two");
    for h in w {
        assert_eq!(h.join().expect("waiter").0.status, 200);
    }
}

#[test]
fn sigterm_answers_waiters_and_ends_streams_within_the_drain() {
    let s = TestServer::start_with(&[("SHUTDOWN_DRAIN_SECONDS", "2")]);
    let pid = s.project("bye");
    let mut streams: Vec<Sse> = (0..5).map(|_| open_stream(&s, pid, "", &[])).collect();
    let waiters: Vec<_> = (0..20)
        .map(|_| claim_async(&s, pid, json!({"agent": "w", "wait_seconds": 60})))
        .collect();
    await_gauge(&s, "claim_waiters", 20, Duration::from_secs(10));
    await_gauge(&s, "http_streams_open", 5, Duration::from_secs(10));
    let t0 = Instant::now();
    crate::harness::signal(s.pid(), "TERM");
    for h in waiters {
        let (r, at) = h.join().expect("waiter");
        assert_eq!(r.status, 204, "{}", r.text());
        assert!(
            at.duration_since(t0) < Duration::from_secs(2),
            "a waiter was answered after the drain"
        );
    }
    for st in &mut streams {
        // Every stream ends (the initial comment and the project's event, then EOF).
        while st.next().is_some() {}
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a stream outlived the drain"
        );
    }
    let status = s.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

/// Two instances on one PostgreSQL database; on SQLite, None (and says it skipped).
fn two_instances() -> Option<(TestServer, TestServer)> {
    if !crate::harness::postgres() {
        eprintln!("SKIPPED on sqlite: one instance only (TEST_BACKEND=postgres runs it)");
        return None;
    }
    let a = TestServer::start();
    let b = TestServer::spawn(
        crate::harness::temp_dir("srv-b"),
        a.db.clone(),
        a.key.clone(),
        &[],
    );
    Some((a, b))
}

#[test]
fn instances_wake_each_other_through_postgres() {
    let Some((a, b)) = two_instances() else {
        return;
    };
    let pid = a.project("shared");
    let mut stream = open_stream(&a, pid, "", &[]);
    assert_eq!(stream.next().map(|e| e.kind), Some("created".to_string()));
    let waiter = claim_async(&a, pid, json!({"agent": "on-a", "wait_seconds": 10}));
    await_gauge(&a, "claim_waiters", 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let id = new_task(&b, pid, "made on b");
    let created = Instant::now();
    let (r, got) = waiter.join().expect("waiter");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"].as_i64(), Some(id));
    let lag = got.saturating_duration_since(created);
    eprintln!("cross-instance wake-up after {lag:?}");
    // LISTEN/NOTIFY is immediate; the once-a-second re-check is the upper bound.
    assert!(lag < Duration::from_millis(1200), "woken after {lag:?}");
    let e = stream.next().expect("b's event on a's stream");
    assert_eq!(
        (e.kind.as_str(), e.data["task_id"].as_i64()),
        ("created", Some(id))
    );
    let e = stream.next().expect("the claim on a's stream");
    assert_eq!(e.kind, "claimed");
}

/// Creates a task with its own connection (for writer threads); its id.
fn create_on(addr: std::net::SocketAddr, key: Option<&str>, pid: i64, title: &str) -> i64 {
    let body = json!({ "title": title }).to_string();
    let mut req = format!(
        "POST /projects/{pid}/tasks HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let r = crate::harness::raw(addr, req.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().expect("id")
}

/// SPEC §9/§10: a stream read on one instance, cut, and resumed with Last-Event-ID
/// on another, while writers on both instances keep committing (concurrently, so
/// commits land out of id order), sees every event exactly once, in the feed's order.
#[test]
fn a_stream_resumed_on_another_instance_sees_every_event_once() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some((a, b)) = two_instances() else {
        return;
    };
    let pid = a.project("two instances");
    let stop = Arc::new(AtomicBool::new(false));
    // Writes per writer: two writers on each instance.
    let written: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let addr = if w % 2 == 0 { a.addr } else { b.addr };
            let (key, stop, written) = (a.key.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Acquire) {
                    create_on(addr, key.as_deref(), pid, &format!("w{w}-{i}"));
                    written[w].fetch_add(1, Ordering::AcqRel);
                    i += 1;
                }
            })
        })
        .collect();
    let total = |w: &Vec<AtomicUsize>| -> Vec<usize> {
        w.iter().map(|n| n.load(Ordering::Acquire)).collect()
    };
    let mut first = open_stream(&a, pid, "", &[]);
    assert_eq!(first.status, 200);
    let mut seen: Vec<i64> = Vec::new();
    while seen.len() < 60 {
        seen.push(first.next().expect("an event on a").id);
    }
    // Cut mid-stream; the writers go on while nobody listens.
    drop(first);
    let at_cut = total(&written);
    std::thread::sleep(Duration::from_millis(300));
    let last = *seen.last().expect("one");
    let mut second = open_stream(&b, pid, "", &[("Last-Event-ID", &last.to_string())]);
    assert_eq!(second.status, 200);
    let resumed_at = seen.len();
    while seen.len() < resumed_at + 60 {
        seen.push(second.next().expect("an event on b").id);
    }
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().expect("writer");
    }
    let at_end = total(&written);
    // Both instances wrote during the cut and after the resume.
    assert!(
        at_cut.iter().zip(&at_end).all(|(c, e)| e > c),
        "every writer wrote after the cut: {at_cut:?} -> {at_end:?}"
    );
    let all = feed_ids(&a, pid);
    assert_eq!(all, feed_ids(&b, pid), "both instances' feeds agree");
    let end = *all.last().expect("events");
    while seen.last() != Some(&end) {
        seen.push(
            second
                .next()
                .expect("an event after the writers stopped")
                .id,
        );
    }
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event came twice");
    assert_eq!(
        seen, all,
        "the streams' events are the feed's, in order, none missed"
    );
    eprintln!(
        "{} events; tasks by writer (on a, b, a, b): {:?}; resumed on b after id {last}",
        seen.len(),
        at_end
    );
}

#[test]
fn a_waiter_that_hung_up_gets_no_task() {
    let s = TestServer::start();
    let pid = s.project("hangup");
    let body = json!({"agent": "gone", "wait_seconds": 30}).to_string();
    let mut req = format!(
        "POST /projects/{pid}/tasks/claim HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in auth(&s) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut gone = TcpStream::connect(s.addr).expect("connect");
    gone.write_all(req.as_bytes()).expect("send");
    await_gauge(&s, "claim_waiters", 1, Duration::from_secs(5));
    drop(gone);
    let there = claim_async(&s, pid, json!({"agent": "there", "wait_seconds": 10}));
    await_gauge(&s, "claim_waiters", 2, Duration::from_secs(5));
    let id = new_task(&s, pid, "for the one still there");
    let (r, _) = there.join().expect("waiter");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["id"].as_i64(), r.json()["assignee"].as_str()),
        (Some(id), Some("there"))
    );
    await_gauge(&s, "claim_waiters", 0, Duration::from_secs(5));
}

/// A bad resume point is refused before a stream opens: an empty or non-numeric
/// Last-Event-ID, and a bad `?after=` even when the header comes with it (found by
/// schemathesis: both were accepted).
#[test]
fn a_bad_resume_point_is_refused() {
    let s = TestServer::start();
    let pid = s.project("resume");
    let auth = format!("Bearer {}", s.key.as_deref().expect("key"));
    let path = format!("/projects/{pid}/events/stream");
    for (header, query) in [("", ""), ("x", ""), ("0", "?after=9223372036854775808")] {
        let r = s.send(
            "GET",
            &format!("{path}{query}"),
            &[("Authorization", &auth), ("Last-Event-ID", header)],
            None,
        );
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request".into()),
            "{header:?} {query}"
        );
    }
}

/// Caught-up streams of a project ask for the same page after every commit: one read
/// of the store serves them all. Before, each of 500 streams read for itself and
/// PostgreSQL ran 6 800 transactions a second for 40 creates (an outside attack,
/// issue #14); here 40 streams and 10 creates, each event seen by every stream.
#[test]
fn caught_up_streams_share_one_read_of_the_feed() {
    let s = TestServer::start();
    let pid = s.project("shared");
    let n = 40;
    let mut streams: Vec<Sse> = (0..n).map(|_| open_stream(&s, pid, "", &[])).collect();
    await_gauge(&s, "http_streams_open", n as i64, Duration::from_secs(10));
    // The project's "created" event, seen by all: every stream is caught up.
    for st in &mut streams {
        assert!(st.next().is_some());
    }
    let queries = |s: &TestServer| gauge(s, "db_queries_total");
    let before = queries(&s);
    for i in 0..10 {
        let id = new_task(&s, pid, &format!("t{i}"));
        for st in &mut streams {
            let e = st.next().expect("event");
            assert_eq!(e.data["task_id"].as_i64(), Some(id));
        }
    }
    let used = queries(&s) - before;
    // 10 creates and a read of /metrics are a few dozen; 40 streams reading for
    // themselves are 400 more.
    assert!(used < 100, "{used} queries for 10 events to {n} streams");
}
