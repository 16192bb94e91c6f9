//! Attacks on the work-queue semantics (SPEC §5a) from the outside, on either backend
//! (`TEST_BACKEND=postgres`). Each test names the property it tries to break; a test
//! that fails shows a bug (see the attack report on branch `attack`).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{self, Resp, TestServer};

fn claim(s: &TestServer, pid: i64, body: Value) -> Resp {
    harness::claim(s, pid, &body)
}

fn task(s: &TestServer, pid: i64, body: Value) -> Value {
    harness::task(s, pid, &body)
}

fn project(s: &TestServer, body: Value) -> i64 {
    harness::project_with(s, &body)
}

fn get(s: &TestServer, id: &Value) -> Value {
    let r = s.get(&format!("/tasks/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn etag(t: &Value) -> String {
    format!("\"{}\"", t["version"])
}

/// `PATCH /tasks/{id}` as an operator (`If-Match` with the task's current version).
fn force(s: &TestServer, id: &Value, body: Value) -> Resp {
    let t = get(s, id);
    s.call_with(
        "PATCH",
        &format!("/tasks/{id}"),
        Some(&body),
        &[("If-Match", &etag(&t))],
    )
}

fn server_errors(s: &TestServer) -> Vec<String> {
    s.log_text()
        .lines()
        .filter(|l| l.contains("\"status\":5") || l.contains("panicked"))
        .map(String::from)
        .collect()
}

/// PostgreSQL: a dependent re-wired (`PATCH depends_on`) while its dependency
/// completes must not answer 5xx. The PATCH locks the dependent then takes FOR SHARE
/// on the dependency; the completion locks the dependency then updates its
/// dependents' `deps_waiting`: opposite orders, so PostgreSQL can find a deadlock
/// (40P01 → `Busy` → 503, after deadlock_timeout). Whatever interleaving, the
/// dependent must end claimable once its dependency completed.
#[test]
fn attack_rewire_while_dependency_completes() {
    let s = Arc::new(TestServer::start());
    let mut bad = Vec::new();
    for round in 0..30 {
        // A project per round: a round cut short by a 5xx leaves nothing behind.
        let pid = project(&s, json!({"name": format!("rewire-{round}")}));
        let x = task(&s, pid, json!({"title": format!("x{round}")}));
        let d = task(
            &s,
            pid,
            json!({"title": format!("d{round}"), "depends_on": [x["id"]]}),
        );
        let c = claim(&s, pid, json!({"agent": "a", "lease_seconds": 60}));
        assert_eq!(c.status, 200, "{}", c.text());
        let c = c.json();
        assert_eq!(c["id"], x["id"]);
        let token = c["lease_token"].as_str().expect("token").to_string();
        let go = Arc::new(Barrier::new(2));
        let completer = {
            let (s, go, id) = (s.clone(), go.clone(), x["id"].clone());
            std::thread::spawn(move || {
                go.wait();
                s.post(
                    &format!("/tasks/{id}/complete"),
                    &json!({"lease_token": token, "result": {"ok": true}}),
                )
            })
        };
        let rewirer = {
            let (s, go, d, x) = (s.clone(), go.clone(), d.clone(), x["id"].clone());
            std::thread::spawn(move || {
                go.wait();
                s.call_with(
                    "PATCH",
                    &format!("/tasks/{}", d["id"]),
                    Some(&json!({"depends_on": [x], "priority": 1})),
                    &[("If-Match", &etag(&d))],
                )
            })
        };
        let (a, b) = (
            completer.join().expect("thread"),
            rewirer.join().expect("thread"),
        );
        if a.status >= 500 || b.status >= 500 {
            let text = |r: &Resp| r.text().chars().take(120).collect::<String>();
            bad.push(format!(
                "round {round}: complete {} {} / patch {} {}",
                a.status,
                text(&a),
                b.status,
                text(&b)
            ));
            continue;
        }
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(b.status, 200, "{}", b.text());
        let got = claim(&s, pid, json!({"agent": "b"}));
        assert_eq!(
            got.status,
            200,
            "round {round}: the dependent never became claimable: {}",
            get(&s, &d["id"])
        );
        assert_eq!(got.json()["id"], d["id"]);
        let tok = got.json()["lease_token"].clone();
        let r = s.post(
            &format!("/tasks/{}/complete", d["id"]),
            &json!({"lease_token": tok}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(bad.is_empty(), "5xx under a rewire/complete race: {bad:#?}");
}

/// The lease token is stored only as its SHA-256 (SPEC §5a, migration 0005: "a
/// database read shows no lease anyone could use"). A claim sent with an
/// Idempotency-Key stores its whole answer for replay, token included, in plain
/// text in `idempotency_keys.body`.
#[test]
fn attack_idempotent_claim_keeps_no_plaintext_token_in_the_database() {
    let s = TestServer::start();
    let pid = s.project("idem-claim");
    task(&s, pid, json!({"title": "secret work"}));
    let r = s.call_with(
        "POST",
        &format!("/projects/{pid}/tasks/claim"),
        Some(&json!({"agent": "a1", "lease_seconds": 60})),
        &[("Idempotency-Key", "claim-1")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["lease_token"].as_str().expect("token").to_string();
    let bodies: Vec<Vec<u8>> = match harness::database_url(&s.db) {
        Some(url) => {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            c.query("SELECT body FROM idempotency_keys", &[])
                .expect("query")
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
        None => {
            let c = rusqlite::Connection::open(&s.db).expect("open");
            let mut st = c
                .prepare("SELECT body FROM idempotency_keys")
                .expect("prepare");
            st.query_map([], |r| r.get(0))
                .expect("query")
                .collect::<rusqlite::Result<Vec<Vec<u8>>>>()
                .expect("rows")
        }
    };
    assert!(!bodies.is_empty(), "the claim's answer was stored");
    for b in &bodies {
        assert!(
            !String::from_utf8_lossy(b).contains(&token),
            "the live lease token is readable in idempotency_keys: {}",
            String::from_utf8_lossy(b)
        );
    }
    // And it is live: whoever reads the table can complete the task.
    let id = r.json()["id"].clone();
    assert_eq!(get(&s, &id)["status"], "in_progress");
}

/// A dependent re-armed (`PATCH` blocked → pending) while its dependency is still
/// cancelled counts the cancelled task as one it waits for: it is `pending` but can
/// never be claimed, and nothing will ever change that (a cancelled task never
/// completes; once pruned, nothing ripples). It must either stay `blocked` (or the
/// PATCH be refused) or run; a dependency deleted unfinished is counted as
/// satisfied on re-arm, so the two paths disagree too.
#[test]
fn attack_rearm_after_cancelled_dependency_is_not_stuck_waiting() {
    let s = TestServer::start();
    let pid = s.project("rearm");
    let x = task(&s, pid, json!({"title": "x"}));
    let d = task(&s, pid, json!({"title": "d", "depends_on": [x["id"]]}));
    let r = force(&s, &x["id"], json!({"status": "cancelled"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&s, &d["id"])["status"], "blocked");
    let r = force(&s, &d["id"], json!({"status": "pending"}));
    let after = get(&s, &d["id"]);
    if r.status == 200 && after["status"] == "pending" {
        // Re-armed: then it must be claimable (like after a deleted dependency).
        let c = claim(&s, pid, json!({"agent": "a"}));
        let stats = s.get(&format!("/projects/{pid}/stats")).json();
        assert_eq!(
            c.status, 200,
            "re-armed task is pending but never claimable (deps_waiting stuck): {after}; \
             stats {stats}"
        );
    } else {
        assert_eq!(after["status"], "blocked", "{} {after}", r.status);
    }
}

/// `attempt` never exceeds `max_attempts`: lowering `max_attempts` below the
/// attempts already made (a PATCH while the task is pending between retries) must
/// not let a claim hand out attempt 3 of 1.
#[test]
fn attack_max_attempts_lowered_below_attempt() {
    let s = TestServer::start();
    let pid = project(&s, json!({"name": "maxat", "retry_backoff_seconds": 0}));
    let t = task(&s, pid, json!({"title": "flaky", "max_attempts": 3}));
    let id = &t["id"];
    for _ in 0..2 {
        let c = claim(&s, pid, json!({"agent": "a"}));
        assert_eq!(c.status, 200, "{}", c.text());
        let tok = c.json()["lease_token"].clone();
        let r = s.post(
            &format!("/tasks/{id}/fail"),
            &json!({"lease_token": tok, "error": {"e": 1}, "retry": true}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(get(&s, id)["attempt"], 2);
    let r = force(&s, id, json!({"max_attempts": 1}));
    if r.status != 200 {
        return; // refused: the invariant holds
    }
    // Backoff 0 ± jitter: due at once.
    std::thread::sleep(Duration::from_millis(50));
    let c = claim(&s, pid, json!({"agent": "a"}));
    if c.status == 200 {
        let t = c.json();
        assert!(
            t["attempt"].as_i64() <= t["max_attempts"].as_i64(),
            "claim handed out attempt {} of max_attempts {}",
            t["attempt"],
            t["max_attempts"]
        );
    }
}

/// No path leaks a live lease token: not GET, list, events, stats, /metrics, error
/// bodies of a stale holder, nor the server log or access log.
#[test]
fn attack_lease_tokens_do_not_leak() {
    let s = TestServer::start();
    let pid = project(&s, json!({"name": "leak", "retry_backoff_seconds": 0}));
    let a = task(&s, pid, json!({"title": "a"}));
    task(&s, pid, json!({"title": "b"}));
    let c = claim(
        &s,
        pid,
        json!({"agent": "a1", "limit": 2, "lease_seconds": 60}),
    );
    assert_eq!(c.status, 200, "{}", c.text());
    let tokens: Vec<String> = c.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["lease_token"].as_str().expect("token").to_string())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    // Touch every path with a token: wrong tokens, heartbeats, PATCH with the header.
    let id = &a["id"];
    let r = s.post(
        &format!("/tasks/{id}/complete"),
        &json!({"lease_token": "0".repeat(32)}),
    );
    assert_eq!(r.code(), "lease_lost");
    s.post(
        &format!("/tasks/{id}/heartbeat"),
        &json!({"lease_token": tokens[0]}),
    );
    s.call_with(
        "PATCH",
        &format!("/tasks/{id}"),
        Some(&json!({"priority": 3})),
        &[("Lease-Token", &tokens[1])],
    );
    let texts = [
        s.get(&format!("/tasks/{id}")).text(),
        s.get(&format!("/projects/{pid}/tasks?limit=100")).text(),
        s.get(&format!("/projects/{pid}/events?limit=500")).text(),
        s.get(&format!("/projects/{pid}/stats")).text(),
        s.get("/metrics").text(),
        r.text(),
    ];
    std::thread::sleep(Duration::from_millis(200));
    let log = s.log_text();
    for tok in &tokens {
        for t in &texts {
            assert!(!t.contains(tok.as_str()), "token leaked: {t}");
        }
        assert!(!log.contains(tok.as_str()), "token in the server log");
    }
}

/// Idempotency keys are scoped to the API key: another key sending the same
/// Idempotency-Key and body runs its own request and never sees the first answer.
#[test]
fn attack_idempotency_keys_are_not_shared_between_api_keys() {
    let s = TestServer::start();
    let other = harness::create_key(&s.db, "other", "write");
    let pid = s.project("scope");
    let body = json!({"title": "mine"});
    let path = format!("/projects/{pid}/tasks");
    let first = s.call_with("POST", &path, Some(&body), &[("Idempotency-Key", "k-1")]);
    assert_eq!(first.status, 201, "{}", first.text());
    let auth = format!("Bearer {other}");
    let bytes = body.to_string().into_bytes();
    let second = s.send(
        "POST",
        &path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "k-1"),
        ],
        Some(&bytes),
    );
    assert_eq!(second.status, 201, "{}", second.text());
    assert!(second.header("idempotent-replayed").is_none());
    assert_ne!(first.json()["id"], second.json()["id"]);
    // A failed request stores nothing: the same key then runs for real.
    let bad = s.call_with(
        "POST",
        "/projects/999999/tasks",
        Some(&body),
        &[("Idempotency-Key", "k-2")],
    );
    assert_eq!(bad.status, 404, "{}", bad.text());
    let bad2 = s.call_with(
        "POST",
        "/projects/999999/tasks",
        Some(&body),
        &[("Idempotency-Key", "k-2")],
    );
    assert_eq!(bad2.status, 404);
    assert!(bad2.header("idempotent-replayed").is_none());
    // Odd but legal keys, and one byte too long.
    for k in ["a b", "~!@#$%^&*()", &"k".repeat(255)] {
        let r = s.call_with(
            "POST",
            &path,
            Some(&json!({"title": k})),
            &[("Idempotency-Key", k)],
        );
        assert_eq!(r.status, 201, "{k}: {}", r.text());
    }
    let r = s.call_with(
        "POST",
        &path,
        Some(&body),
        &[("Idempotency-Key", &"k".repeat(256))],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(server_errors(&s).is_empty(), "{:?}", server_errors(&s));
}

/// PostgreSQL with two server instances on one database: agents claiming batches
/// through both, with leases short enough that both sweepers and every claim's own
/// sweep race over them, never hold one task at once, and each expiry is one event.
#[test]
fn attack_two_instances_never_hand_out_one_task_twice() {
    if !harness::postgres() {
        eprintln!("SKIPPED on sqlite: two instances need PostgreSQL (attack_two_instances)");
        return;
    }
    // Workers in a loop on a time budget: the per-key rate limit is not under test.
    let unlimited = [("RATE_LIMIT_PER_MINUTE", "0")];
    let a = Arc::new(TestServer::start_with(&unlimited));
    let b = Arc::new(TestServer::spawn(
        harness::temp_dir("srv-b"),
        a.db.clone(),
        a.key.clone(),
        &unlimited,
    ));
    let pid = project(&a, json!({"name": "two", "default_max_attempts": 100}));
    let n = 60;
    let tasks: Vec<Value> = (0..n).map(|i| json!({"title": format!("t{i}")})).collect();
    let r = a.post(&format!("/projects/{pid}/tasks"), &Value::Array(tasks));
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    // Each worker claims batches with a 1 s lease and never completes half of them
    // (they expire and are swept); it completes the others at once. A holder who
    // completes successfully must be the only one: record (id, attempt).
    let stop = Instant::now() + Duration::from_secs(8);
    let handles: Vec<_> = (0..6)
        .map(|w| {
            let s = if w % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                let mut done = Vec::new();
                while Instant::now() < stop {
                    let c = claim(
                        &s,
                        pid,
                        json!({"agent": format!("w{w}"), "limit": 5, "lease_seconds": 1}),
                    );
                    assert!(c.status == 200 || c.status == 204, "{}", c.text());
                    if c.status == 204 {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    for t in c.json()["items"].as_array().expect("items") {
                        let id = t["id"].as_i64().expect("id");
                        if (id + t["attempt"].as_i64().expect("attempt")) % 2 == 0 {
                            continue; // abandoned: let it expire
                        }
                        let r = s.post(
                            &format!("/tasks/{id}/complete"),
                            &json!({"lease_token": t["lease_token"]}),
                        );
                        assert!(r.status == 200 || r.status == 409, "{}", r.text());
                        if r.status == 200 {
                            done.push(id);
                        }
                    }
                }
                done
            })
        })
        .collect();
    let mut done: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    let total = done.len();
    done.sort_unstable();
    done.dedup();
    assert_eq!(total, done.len(), "a task was completed twice");
    // Every claim of a task must follow the end of the previous one: events in
    // order alternate claimed → (completed | lease_expired).
    std::thread::sleep(Duration::from_secs(3));
    let mut cursor: Option<String> = None;
    let mut events = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/projects/{pid}/events?limit=500&cursor={c}"),
            None => format!("/projects/{pid}/events?limit=500"),
        };
        let page = a.get(&path).json();
        events.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut by_task: std::collections::HashMap<i64, Vec<(i64, String)>> = Default::default();
    for e in &events {
        if let Some(id) = e["task_id"].as_i64() {
            by_task.entry(id).or_default().push((
                e["id"].as_i64().expect("id"),
                e["type"].as_str().expect("type").into(),
            ));
        }
    }
    for (id, mut evs) in by_task {
        evs.sort();
        let mut held = false;
        for (_, ty) in &evs {
            match ty.as_str() {
                "claimed" => {
                    assert!(!held, "task {id} claimed while held: {evs:?}");
                    held = true;
                }
                "completed" | "lease_expired" => {
                    assert!(held, "task {id}: {ty} without a holder: {evs:?}");
                    held = false;
                }
                _ => {}
            }
        }
    }
    assert!(server_errors(&a).is_empty(), "{:?}", server_errors(&a));
    assert!(server_errors(&b).is_empty(), "{:?}", server_errors(&b));
}

/// PostgreSQL: every transaction gives up on a row lock after the session's
/// `lock_timeout` (5 s, connect.rs) and answers 503. An idempotent POST sets
/// `SET LOCAL lock_timeout = 0` after taking its key's lock (idempotency.rs), which
/// is "wait for ever" for the rest of its transaction: behind a stuck row lock it
/// holds its pool connection until `statement_timeout` (60 s).
#[test]
fn attack_idempotent_write_keeps_the_lock_timeout() {
    if !harness::postgres() {
        eprintln!("SKIPPED on sqlite: row locks are PostgreSQL's (attack_idempotent_write_keeps_the_lock_timeout)");
        return;
    }
    let s = Arc::new(TestServer::start());
    let pid = s.project("locktimeout");
    task(&s, pid, json!({"title": "held"}));
    let c = claim(&s, pid, json!({"agent": "a", "lease_seconds": 60})).json();
    let (id, token) = (c["id"].clone(), c["lease_token"].clone());
    let url = harness::database_url(&s.db).expect("url");
    let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let mut tx = db.transaction().expect("begin");
    tx.execute(
        "SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE",
        &[&id.as_i64().expect("id")],
    )
    .expect("lock the row");
    let timed = |key: Option<&'static str>| {
        let (s, id, token) = (s.clone(), id.clone(), token.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let extra: Vec<(&str, &str)> =
                key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
            let r = s.call_with(
                "POST",
                &format!("/tasks/{id}/heartbeat"),
                Some(&json!({"lease_token": token})),
                &extra,
            );
            (started.elapsed(), r.status)
        })
    };
    // One waiter only: PostgreSQL applies lock_timeout to each lock acquisition, and
    // a second waiter queued behind a first waits once for the first's tuple lock
    // and again for the row — up to twice the timeout whatever this code does.
    let idem = timed(Some("hb-1"));
    // Hold the lock well past the 5 s lock_timeout, then let go.
    std::thread::sleep(Duration::from_secs(9));
    tx.rollback().expect("release");
    let (idem_took, idem_status) = idem.join().expect("thread");
    assert!(
        idem_took < Duration::from_secs(8),
        "with an Idempotency-Key the write waited {idem_took:?} on a row lock \
         (status {idem_status})"
    );
}

/// Two re-wirings racing to close a cycle (A → B and B → A at once): at most one may
/// win, and the graph never holds the cycle (PostgreSQL serialises them with a
/// per-project advisory lock; SQLite has one writer).
#[test]
fn attack_concurrent_rewires_cannot_close_a_cycle() {
    let s = Arc::new(TestServer::start());
    let mut errors = Vec::new();
    for round in 0..20 {
        let pid = project(&s, json!({"name": format!("cycle-{round}")}));
        let a = task(&s, pid, json!({"title": "a"}));
        let b = task(&s, pid, json!({"title": "b"}));
        let go = Arc::new(Barrier::new(2));
        let spawn = |t: &Value, dep: &Value| {
            let (s, go, t, dep) = (s.clone(), go.clone(), t.clone(), dep["id"].clone());
            std::thread::spawn(move || {
                go.wait();
                s.call_with(
                    "PATCH",
                    &format!("/tasks/{}", t["id"]),
                    Some(&json!({"depends_on": [dep]})),
                    &[("If-Match", &etag(&t))],
                )
            })
        };
        let (x, y) = (spawn(&a, &b), spawn(&b, &a));
        let (x, y) = (x.join().expect("thread"), y.join().expect("thread"));
        assert!(
            !(x.status == 200 && y.status == 200),
            "round {round}: both re-wirings won: a cycle"
        );
        for r in [&x, &y] {
            if r.status >= 500 {
                errors.push(format!("round {round}: {} {}", r.status, r.text()));
            }
        }
        let (ga, gb) = (get(&s, &a["id"]), get(&s, &b["id"]));
        let cyc = ga["depends_on"] == json!([b["id"]]) && gb["depends_on"] == json!([a["id"]]);
        assert!(!cyc, "round {round}: stored cycle {ga} {gb}");
    }
    // Refusing with 5xx is not a cycle, but it is an error an agent cannot act on.
    assert!(
        errors.is_empty(),
        "5xx (deadlock) racing two re-wirings: {errors:#?}"
    );
}

/// The README's agent (examples/agent.py) claims with `"wait_seconds": 30` and, on
/// 204, claims again at once: it relies on the long poll of SPEC §9. A claim with
/// `wait_seconds` on an empty queue must hold until a task arrives (here after 1 s),
/// not answer 204 at once — else every idle agent spins on the writer, each spin a
/// stored idempotency record kept 24 h.
#[test]
fn attack_long_poll_claim_waits_for_work() {
    let s = Arc::new(TestServer::start());
    let pid = s.project("longpoll");
    let waiter = {
        let s = s.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = s.call_with(
                "POST",
                &format!("/projects/{pid}/tasks/claim"),
                Some(&json!({"agent": "a", "wait_seconds": 5})),
                &[("Idempotency-Key", "poll-1")],
            );
            (started.elapsed(), r.status, r.text())
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let t = task(&s, pid, json!({"title": "late"}));
    let (took, status, text) = waiter.join().expect("thread");
    assert_eq!(
        status, 200,
        "wait_seconds ignored: answered {status} after {took:?} ({text}); task {} was created 1 s in",
        t["id"]
    );
}

/// The SQLite writer commits many clients' jobs together; a job that fails after
/// writing rolls back the whole batch and its neighbours get 503 "a write committed
/// together with this one failed". Under a concurrent mix of good writes and every
/// kind of refused queue request (bad dependencies in a bulk create, cycles, stale
/// tokens, wrong versions, lease_held), no client may see that 503, and the server
/// must log no rolled-back batch.
#[test]
fn attack_refused_queue_writes_never_roll_back_a_batch() {
    // Eight writers in a loop for 4 s: on a fast machine they pass the default per-key
    // rate limit (6 000 a minute), which is not under test (CI once saw a 429).
    let s = Arc::new(TestServer::start_with(&[("RATE_LIMIT_PER_MINUTE", "0")]));
    let pid = project(&s, json!({"name": "mix", "retry_backoff_seconds": 0}));
    let other = s.project("other");
    let foreign = task(&s, other, json!({"title": "foreign"}))["id"].clone();
    let stop = Instant::now() + Duration::from_secs(4);
    let handles: Vec<_> = (0..8)
        .map(|w| {
            let (s, foreign) = (s.clone(), foreign.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut i = 0u64;
                while Instant::now() < stop {
                    i += 1;
                    let r = match (w + i) % 7 {
                        0 => s.post(
                            &format!("/projects/{pid}/tasks"),
                            &json!([{"title": "ok"}, {"title": "bad", "depends_on": [foreign]}]),
                        ),
                        1 => s.post(
                            &format!("/projects/{pid}/tasks"),
                            &json!([{"title": "a"}, {"title": "b", "labels": ["x"]}]),
                        ),
                        2 => {
                            let c = claim(&s, pid, json!({"agent": format!("w{w}"), "limit": 3}));
                            if c.status == 200 {
                                for t in c.json()["items"].as_array().expect("items").clone() {
                                    let path = format!("/tasks/{}", t["id"]);
                                    // Stale/wrong token, lease_held PATCH, then the real end.
                                    seen.push(s.post(
                                        &format!("{path}/complete"),
                                        &json!({"lease_token": "f".repeat(32)}),
                                    ));
                                    seen.push(s.patch(&path, &json!({"priority": 5})));
                                    let end = if i % 2 == 0 { "complete" } else { "fail" };
                                    seen.push(s.post(
                                        &format!("{path}/{end}"),
                                        &json!({"lease_token": t["lease_token"], "retry": true}),
                                    ));
                                }
                            }
                            c
                        }
                        3 => s.call_with(
                            "PATCH",
                            "/tasks/1",
                            Some(&json!({"depends_on": [1]})),
                            &[("If-Match", "\"999999\"")],
                        ),
                        4 => {
                            let a = task(&s, pid, json!({"title": "cyc"}));
                            let b =
                                task(&s, pid, json!({"title": "cyc2", "depends_on": [a["id"]]}));
                            s.patch(
                                &format!("/tasks/{}", a["id"]),
                                &json!({"depends_on": [b["id"]]}),
                            )
                        }
                        5 => s.post(
                            &format!("/projects/{pid}/tasks"),
                            &json!({"title": "x", "depends_on": [999_999_999]}),
                        ),
                        _ => s.post(
                            "/tasks/999999999/heartbeat",
                            &json!({"lease_token": "0".repeat(32)}),
                        ),
                    };
                    seen.push(r);
                }
                seen.into_iter()
                    .filter(|r| r.status >= 500)
                    .map(|r| format!("{} {}", r.status, r.text()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    assert!(
        errors.is_empty(),
        "5xx under a mix of refused writes: {errors:#?}"
    );
    let log = s.log_text();
    assert!(
        !log.contains("its batch was rolled back"),
        "a refused write rolled back a batch"
    );
}

/// `deps_waiting` must equal the dependencies not completed. A dependency moved
/// completed → failed (or cancelled) is counted back by no one (`Ripple::Block`
/// blocks pending dependents but does not add one to their count), yet moving it
/// back to completed takes one off again. A dependent that was in progress at the
/// time is not blocked, so its count drifts low: here D runs while its other
/// dependency Y is pending.
#[test]
fn attack_dependency_count_drifts_through_completed_failed_completed() {
    let s = TestServer::start();
    let pid = project(&s, json!({"name": "drift", "retry_backoff_seconds": 0}));
    let x = task(&s, pid, json!({"title": "x", "priority": 5}));
    let y = task(&s, pid, json!({"title": "y", "priority": 5}));
    let d = task(
        &s,
        pid,
        json!({"title": "d", "priority": 9, "depends_on": [x["id"], y["id"]]}),
    );
    for want in [&x, &y] {
        let c = claim(&s, pid, json!({"agent": "a"})).json();
        assert_eq!(c["id"], want["id"]);
        let r = s.post(
            &format!("/tasks/{}/complete", c["id"]),
            &json!({"lease_token": c["lease_token"]}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let c = claim(&s, pid, json!({"agent": "a"})).json();
    assert_eq!(c["id"], d["id"], "both dependencies done: d runs");
    let d_token = c["lease_token"].clone();
    // Operators, while d is in progress: x marked failed, y re-opened, x completed again.
    for (t, status) in [(&x, "failed"), (&y, "pending"), (&x, "completed")] {
        let r = force(&s, &t["id"], json!({"status": status}));
        assert_eq!(r.status, 200, "{status}: {}", r.text());
    }
    // d's attempt fails and goes back to pending (backoff 0).
    let r = s.post(
        &format!("/tasks/{}/fail", d["id"]),
        &json!({"lease_token": d_token, "retry": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get(&s, &y["id"])["status"], "pending");
    let next = claim(&s, pid, json!({"agent": "b"})).json();
    assert_ne!(
        next["id"], d["id"],
        "d was handed out while its dependency y is pending (deps_waiting drifted to 0)"
    );
    assert_eq!(next["id"], y["id"]);
}

/// A dependent that is in progress when its dependency is cancelled is not blocked
/// (`Ripple::Block` only touches pending dependents), and nothing looks again when
/// its attempt ends: it goes back to `pending` waiting for a cancelled task, for
/// good, instead of `blocked` with `dependency_failed` (SPEC §5a).
#[test]
fn attack_dependent_in_progress_misses_the_block() {
    let s = TestServer::start();
    let pid = project(&s, json!({"name": "missblock", "retry_backoff_seconds": 0}));
    let x = task(&s, pid, json!({"title": "x"}));
    let d = task(&s, pid, json!({"title": "d", "depends_on": [x["id"]]}));
    let c = claim(&s, pid, json!({"agent": "a"})).json();
    assert_eq!(c["id"], x["id"]);
    let r = s.post(
        &format!("/tasks/{}/complete", x["id"]),
        &json!({"lease_token": c["lease_token"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = claim(&s, pid, json!({"agent": "a"})).json();
    assert_eq!(c["id"], d["id"]);
    // While d runs, x is re-opened and then cancelled.
    for status in ["pending", "cancelled"] {
        let r = force(&s, &x["id"], json!({"status": status}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = s.post(
        &format!("/tasks/{}/fail", d["id"]),
        &json!({"lease_token": c["lease_token"], "retry": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let after = get(&s, &d["id"]);
    assert_eq!(
        after["status"], "blocked",
        "d waits for a cancelled dependency for good: {after}"
    );
}
