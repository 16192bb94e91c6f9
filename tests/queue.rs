//! Work-queue semantics (SPEC §5a) against the real binary, on either backend
//! (`TEST_BACKEND=postgres`): fencing tokens, lost leases and the dead letter,
//! retries with backoff, schedules, dependencies, batch claims, idempotency keys.

use std::sync::{Arc, Mutex};
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
    s.get(&format!("/tasks/{id}")).json()
}

fn ms(t: &Value) -> i64 {
    let s = t.as_str().expect("a timestamp");
    dashboard_backend::clock::parse_rfc3339(s).expect("rfc3339")
}

fn event_types(s: &TestServer, pid: i64, task: &Value) -> Vec<String> {
    s.get(&format!("/projects/{pid}/events?limit=500")).json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["task_id"] == *task)
        .map(|e| e["type"].as_str().expect("type").to_string())
        .collect()
}

/// A stale holder's complete, fail, heartbeat, PATCH and DELETE all get 409 and change
/// nothing; the new holder's succeed. The token is only in the claim's answer.
#[test]
fn a_stale_holder_is_fenced_out() {
    let s = TestServer::start();
    let pid = s.project("fence");
    let t = task(&s, pid, json!({"title": "work"}));
    let id = &t["id"];
    assert!(t.get("lease_token").is_none(), "no token outside a claim");
    let first = claim(&s, pid, json!({"agent": "a1", "lease_seconds": 1})).json();
    let stale = first["lease_token"].as_str().expect("token").to_string();
    assert_eq!(first["attempt"], 1);
    assert!(
        get(&s, id).get("lease_token").is_none(),
        "a read shows no token"
    );
    // Nobody heartbeats: the lease runs out, a1's token goes stale, a2 claims.
    std::thread::sleep(Duration::from_millis(1300));
    let hb = s.post(
        &format!("/tasks/{id}/heartbeat"),
        &json!({"lease_token": stale}),
    );
    assert_eq!(
        (hb.status, hb.code()),
        (409, "lease_lost".into()),
        "expired: lost"
    );
    let second = claim(&s, pid, json!({"agent": "a2", "lease_seconds": 60})).json();
    assert_eq!(second["id"], *id);
    assert_eq!(second["attempt"], 2);
    let fresh = second["lease_token"].as_str().expect("token").to_string();
    assert_ne!(fresh, stale);
    let before = get(&s, id);
    for (path, body) in [
        (
            "complete",
            json!({"lease_token": stale, "result": {"by": "a1"}}),
        ),
        ("fail", json!({"lease_token": stale, "error": "a1 gave up"})),
        ("heartbeat", json!({"lease_token": stale})),
        ("heartbeat", json!({"agent": "a1"})),
        ("complete", json!({"lease_token": "0".repeat(32)})),
    ] {
        let r = s.post(&format!("/tasks/{id}/{path}"), &body);
        assert_eq!((r.status, r.code()), (409, "lease_lost".into()), "{path}");
    }
    let patch = s.call_with(
        "PATCH",
        &format!("/tasks/{id}"),
        Some(&json!({"title": "hijacked"})),
        &[("Lease-Token", stale.as_str())],
    );
    assert_eq!((patch.status, patch.code()), (409, "lease_held".into()));
    let del = s.call_with("DELETE", &format!("/tasks/{id}"), None, &[]);
    assert_eq!((del.status, del.code()), (409, "lease_held".into()));
    assert_eq!(get(&s, id), before, "nothing changed");
    // The holder's token works for each.
    let hb = s.post(
        &format!("/tasks/{id}/heartbeat"),
        &json!({"lease_token": fresh}),
    );
    assert_eq!(hb.status, 200, "{}", hb.text());
    let patch = s.call_with(
        "PATCH",
        &format!("/tasks/{id}"),
        Some(&json!({"metadata": {"progress": 50}})),
        &[("Lease-Token", fresh.as_str())],
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    let done = s.post(
        &format!("/tasks/{id}/complete"),
        &json!({"lease_token": fresh, "result": {"by": "a2"}}),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let done = done.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"by": "a2"}));
    assert!(done["lease_expires_at"].is_null());
    // Completed: the token is spent.
    let again = s.post(
        &format!("/tasks/{id}/complete"),
        &json!({"lease_token": fresh}),
    );
    assert_eq!((again.status, again.code()), (409, "lease_lost".into()));
    let types = event_types(&s, pid, id);
    for kind in ["created", "claimed", "lease_expired", "completed"] {
        assert!(types.iter().any(|t| t == kind), "{kind} in {types:?}");
    }
}

/// An agent that dies (no heartbeat, no claim by anyone) loses its lease within
/// lease + 1 s; after max_attempts lost leases the task is a dead letter.
#[test]
fn lost_leases_are_swept_and_end_in_the_dead_letter() {
    let s = TestServer::start();
    let pid = project(&s, json!({"name": "sweep", "default_max_attempts": 2}));
    let t = task(&s, pid, json!({"title": "doomed"}));
    let id = &t["id"];
    assert_eq!(t["max_attempts"], 2);
    for attempt in 1..=2 {
        let c = claim(&s, pid, json!({"agent": "crasher", "lease_seconds": 1}));
        assert_eq!(c.status, 200, "attempt {attempt}: {}", c.text());
        let expires = ms(&c.json()["lease_expires_at"]);
        // Nobody claims: the sweeper alone must act, within a second of expiry.
        let deadline = Instant::now() + Duration::from_secs(5);
        let swept = loop {
            let now = get(&s, id);
            if now["status"] != "in_progress" {
                break now;
            }
            assert!(Instant::now() < deadline, "never swept: {now}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let lag = ms(&swept["updated_at"]) - expires;
        assert!((0..=1000).contains(&lag), "swept {lag} ms after expiry");
        assert_eq!(swept["error"]["reason"], "lease_expired");
        if attempt == 1 {
            assert_eq!(swept["status"], "pending", "claimable at once");
            assert!(swept["assignee"].is_null());
        } else {
            assert_eq!(swept["status"], "failed", "the dead letter");
            assert_eq!(swept["attempt"], 2);
        }
    }
    assert_eq!(claim(&s, pid, json!({"agent": "x"})).status, 204);
    let stats = s.get(&format!("/projects/{pid}/stats")).json();
    assert_eq!(
        (stats["dead"].clone(), stats["by_status"]["failed"].clone()),
        (json!(1), json!(1))
    );
    let expired = event_types(&s, pid, id)
        .iter()
        .filter(|t| *t == "lease_expired")
        .count();
    assert_eq!(expired, 2, "one event per sweep");
}

/// `fail` with retry schedules the next attempt after backoff × 2^(attempt−1), ±10 %;
/// `not_before` holds a task until it is due; `retry:false` fails at once.
#[test]
fn failures_back_off_and_schedules_hold() {
    let s = TestServer::start();
    let pid = project(
        &s,
        json!({"name": "retry", "retry_backoff_seconds": 2, "default_max_attempts": 5}),
    );
    let t = task(&s, pid, json!({"title": "flaky"}));
    let id = &t["id"];
    for attempt in 1..=2i64 {
        let c = claim(&s, pid, json!({"agent": "a"})).json();
        assert_eq!(c["id"], *id, "attempt {attempt}");
        let token = c["lease_token"].as_str().expect("token");
        let r = s.post(
            &format!("/tasks/{id}/fail"),
            &json!({"lease_token": token, "error": {"code": 500}}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let f = r.json();
        assert_eq!(f["status"], "pending");
        assert_eq!(f["error"]["reason"], "failed");
        assert_eq!(f["error"]["detail"], json!({"code": 500}));
        let delay = ms(&f["not_before"]) - ms(&f["updated_at"]);
        let want = 2000 * (1 << (attempt - 1));
        assert!(
            (delay - want).abs() <= want / 10 + 1,
            "attempt {attempt}: {delay} ms, want {want} ± 10 %"
        );
        // Not due yet: nothing to claim; due: claimable again.
        assert_eq!(claim(&s, pid, json!({"agent": "a"})).status, 204);
        let stats = s.get(&format!("/projects/{pid}/stats")).json();
        assert_eq!(
            (stats["scheduled"].clone(), stats["retrying"].clone()),
            (json!(1), json!(1))
        );
        let wait = ms(&f["not_before"]) - dashboard_backend::clock::now_ms();
        std::thread::sleep(Duration::from_millis(wait.max(0) as u64 + 50));
    }
    let c = claim(&s, pid, json!({"agent": "a"})).json();
    assert_eq!(c["attempt"], 3);
    let token = c["lease_token"].as_str().expect("token");
    let r = s.post(
        &format!("/tasks/{id}/fail"),
        &json!({"lease_token": token, "error": "fatal", "retry": false}),
    );
    assert_eq!(r.json()["status"], "failed");
    assert_eq!(r.json()["error"]["reason"], "failed");
    // A task scheduled for later is held until then, then claimed.
    let due = dashboard_backend::clock::now_ms() + 1500;
    let later = task(
        &s,
        pid,
        json!({"title": "later", "not_before": dashboard_backend::clock::rfc3339(due)}),
    );
    assert_eq!(claim(&s, pid, json!({"agent": "a"})).status, 204);
    std::thread::sleep(Duration::from_millis(1600));
    let c = claim(&s, pid, json!({"agent": "a"}));
    assert_eq!(c.json()["id"], later["id"]);
    let bad = s.post(
        &format!("/projects/{pid}/tasks"),
        &json!({"title": "x", "not_before": "tomorrow"}),
    );
    assert_eq!((bad.status, bad.code()), (422, "validation_failed".into()));
}

/// A → B → C runs in order under 20 concurrent claimers; a failure blocks the rest of
/// its chain; cycles and other projects' tasks are refused; PATCH re-arms.
#[test]
fn dependencies_run_in_order_and_failures_block() {
    let s = Arc::new(TestServer::start());
    let pid = s.project("deps");
    let a = task(&s, pid, json!({"title": "A", "priority": 1}));
    let b = task(
        &s,
        pid,
        json!({"title": "B", "priority": 2, "depends_on": [a["id"]]}),
    );
    let c = task(
        &s,
        pid,
        json!({"title": "C", "priority": 3, "depends_on": [b["id"]]}),
    );
    let stats = s.get(&format!("/projects/{pid}/stats")).json();
    assert_eq!(stats["waiting"], 2);
    let order = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (s, order) = (s.clone(), order.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while order.lock().expect("order").len() < 3 && Instant::now() < deadline {
                    let r = claim(&s, pid, json!({"agent": format!("w{i}")}));
                    if r.status != 200 {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    let t = r.json();
                    let title = t["title"].as_str().expect("title").to_string();
                    order.lock().expect("order").push(title);
                    let token = t["lease_token"].as_str().expect("token");
                    let done = s.post(
                        &format!("/tasks/{}/complete", t["id"]),
                        &json!({"lease_token": token}),
                    );
                    assert_eq!(done.status, 200, "{}", done.text());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(*order.lock().expect("order"), ["A", "B", "C"]);
    // A new chain whose head fails: B and C (transitively) are blocked.
    let a = task(&s, pid, json!({"title": "A2"}));
    let b = task(&s, pid, json!({"title": "B2", "depends_on": [a["id"]]}));
    let c2 = task(
        &s,
        pid,
        json!({"title": "C2", "depends_on": [b["id"], c["id"]]}),
    );
    let got = claim(&s, pid, json!({"agent": "w"})).json();
    assert_eq!(got["id"], a["id"]);
    let token = got["lease_token"].as_str().expect("token");
    let r = s.post(
        &format!("/tasks/{}/fail", a["id"]),
        &json!({"lease_token": token, "retry": false}),
    );
    assert_eq!(r.json()["status"], "failed");
    for t in [&b, &c2] {
        let now = get(&s, &t["id"]);
        assert_eq!(now["status"], "blocked", "{now}");
        assert_eq!(now["error"]["reason"], "dependency_failed");
        assert_eq!(now["error"]["dependency"], a["id"]);
        assert!(event_types(&s, pid, &t["id"]).contains(&"blocked".to_string()));
    }
    assert_eq!(claim(&s, pid, json!({"agent": "w"})).status, 204);
    // Cycles and foreign tasks are refused; nothing changes.
    let cyc = s.patch(
        &format!("/tasks/{}", a["id"]),
        &json!({"depends_on": [c2["id"]]}),
    );
    assert_eq!((cyc.status, cyc.code()), (422, "validation_failed".into()));
    assert_eq!(cyc.json()["error"]["details"][0]["field"], "depends_on");
    let other = s.project("other");
    let foreign = s.post(
        &format!("/projects/{other}/tasks"),
        &json!({"title": "x", "depends_on": [a["id"]]}),
    );
    assert_eq!(
        (foreign.status, foreign.code()),
        (422, "validation_failed".into())
    );
    // Re-armed by PATCH while A2 is still failed, B2 is blocked again at once (it
    // would never run); re-armed after A2, it waits for A2 and then runs.
    let rearm = s.patch(
        &format!("/tasks/{}", b["id"]),
        &json!({"status": "pending"}),
    );
    assert_eq!(rearm.json()["status"], "blocked", "{}", rearm.text());
    assert_eq!(rearm.json()["error"]["dependency"], a["id"]);
    s.patch(
        &format!("/tasks/{}", a["id"]),
        &json!({"status": "pending"}),
    );
    let rearm = s.patch(
        &format!("/tasks/{}", b["id"]),
        &json!({"status": "pending"}),
    );
    assert_eq!(rearm.json()["status"], "pending", "{}", rearm.text());
    assert_eq!(rearm.json()["error"], Value::Null);
    let got = claim(&s, pid, json!({"agent": "w"})).json();
    assert_eq!(got["id"], a["id"], "A2 first; B2 waits for it");
}

/// 20 agents × `limit: 10` over 2 000 tasks: each task taken exactly once.
#[test]
fn batch_claims_take_each_task_once() {
    let s = Arc::new(TestServer::start());
    let pid = s.project("batch");
    for chunk in 0..2 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({"title": format!("t{chunk}-{i}"), "priority": i % 7}))
            .collect();
        let r = s.post(&format!("/projects/{pid}/tasks"), &json!(tasks));
        assert_eq!(r.status, 201);
    }
    let agents: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let r = claim(&s, pid, json!({"agent": format!("b{i}"), "limit": 10}));
                    if r.status == 204 {
                        return got;
                    }
                    assert_eq!(r.status, 200, "{}", r.text());
                    let items = r.json()["items"].as_array().expect("items").clone();
                    assert!(!items.is_empty() && items.len() <= 10);
                    for t in items {
                        assert!(t["lease_token"].is_string());
                        got.push(t["id"].as_i64().expect("id"));
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<i64> = agents
        .into_iter()
        .flat_map(|a| a.join().expect("agent"))
        .collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((n, all.len()), (2000, 2000), "each task once");
    // Without limit the answer stays a single task.
    task(&s, pid, json!({"title": "one"}));
    let one = claim(&s, pid, json!({"agent": "x"})).json();
    assert!(one["id"].is_i64() && one.get("items").is_none());
}

/// The same POST sent 50 times at once with one Idempotency-Key creates one task and
/// every answer is the same; another body under that key is refused (422).
#[test]
fn an_idempotency_key_runs_a_post_once() {
    let s = Arc::new(TestServer::start());
    let pid = s.project("idem");
    let body = json!({"title": "once", "metadata": {"n": 1}});
    let path = format!("/projects/{pid}/tasks");
    let answers: Vec<Resp> = (0..50)
        .map(|_| {
            let (s, body, path) = (s.clone(), body.clone(), path.clone());
            std::thread::spawn(move || {
                s.call_with(
                    "POST",
                    &path,
                    Some(&body),
                    &[("Idempotency-Key", "create-once-1")],
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let first = &answers[0];
    assert_eq!(first.status, 201, "{}", first.text());
    for a in &answers {
        assert_eq!((a.status, a.text()), (first.status, first.text()));
        assert_eq!(a.header("location"), first.header("location"));
    }
    let replayed = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 49, "all but the first are replays");
    let list = s.get(&format!("/projects/{pid}/tasks")).json();
    assert_eq!(
        list["items"].as_array().expect("items").len(),
        1,
        "one task"
    );
    let other = s.call_with(
        "POST",
        &path,
        Some(&json!({"title": "another"})),
        &[("Idempotency-Key", "create-once-1")],
    );
    assert_eq!(
        (other.status, other.code()),
        (422, "idempotency_mismatch".into())
    );
    // Keys are per API key: another key's "create-once-1" is its own.
    let key2 = crate::harness::create_key(&s.db, "second", "write");
    let auth = format!("Bearer {key2}");
    let own = s.send(
        "POST",
        &path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "create-once-1"),
        ],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(own.status, 201);
    assert!(own.header("idempotent-replayed").is_none());
    // A claim replayed hands back the same task and token, not a second task.
    task(&s, pid, json!({"title": "claimable"}));
    let c1 = s.call_with(
        "POST",
        &format!("/projects/{pid}/tasks/claim"),
        Some(&json!({"agent": "a"})),
        &[("Idempotency-Key", "claim-1")],
    );
    let c2 = s.call_with(
        "POST",
        &format!("/projects/{pid}/tasks/claim"),
        Some(&json!({"agent": "a"})),
        &[("Idempotency-Key", "claim-1")],
    );
    // The replay is the same claim (no second task) with a fresh token: the first
    // may never have arrived, and none rests in the database meanwhile.
    let (c1, c2) = (c1.json(), c2.json());
    assert_eq!(c1["id"], c2["id"]);
    assert_ne!(c1["lease_token"], c2["lease_token"]);
    let old = s.post(
        &format!("/tasks/{}/complete", c1["id"]),
        &json!({"lease_token": c1["lease_token"]}),
    );
    assert_eq!((old.status, old.code()), (409, "lease_lost".into()));
    let new = s.post(
        &format!("/tasks/{}/complete", c2["id"]),
        &json!({"lease_token": c2["lease_token"]}),
    );
    assert_eq!(new.status, 200, "{}", new.text());
    let bad = s.call_with("POST", &path, Some(&body), &[("Idempotency-Key", "\u{7f}")]);
    assert_eq!(bad.status, 400);
}

/// Cancelling by PATCH (with If-Match) ends the lease; a paused project gives no work.
#[test]
fn cancel_ends_the_lease_and_paused_projects_give_no_work() {
    let s = TestServer::start();
    let pid = s.project("cancel");
    let t = task(&s, pid, json!({"title": "c"}));
    let id = &t["id"];
    let c = claim(&s, pid, json!({"agent": "a"})).json();
    let token = c["lease_token"].as_str().expect("token").to_string();
    let version = c["version"].to_string();
    let r = s.call_with(
        "PATCH",
        &format!("/tasks/{id}"),
        Some(&json!({"status": "cancelled"})),
        &[("If-Match", version.as_str())],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["lease_expires_at"].is_null());
    let late = s.post(
        &format!("/tasks/{id}/complete"),
        &json!({"lease_token": token}),
    );
    assert_eq!((late.status, late.code()), (409, "lease_lost".into()));
    assert!(event_types(&s, pid, id).contains(&"cancelled".to_string()));
    task(&s, pid, json!({"title": "waiting"}));
    let p = s.patch(&format!("/projects/{pid}"), &json!({"status": "paused"}));
    assert_eq!(p.json()["status"], "paused");
    assert_eq!(claim(&s, pid, json!({"agent": "a"})).status, 204);
    s.patch(&format!("/projects/{pid}"), &json!({"status": "active"}));
    assert_eq!(claim(&s, pid, json!({"agent": "a"})).status, 200);
}

/// SPEC §5c: a dependency on a task that was pruned counts as satisfied; one on a
/// task deleted while unfinished blocks its dependents, as a failure does.
#[test]
fn pruned_dependencies_are_satisfied_and_deleted_ones_block() {
    let s = TestServer::start_with(&[("TASK_RETENTION", "1s"), ("EVENT_RETENTION", "0")]);
    let pid = s.project("pruned");
    let a = task(&s, pid, json!({"title": "A"}));
    let x = task(&s, pid, json!({"title": "X"}));
    let b = task(
        &s,
        pid,
        json!({"title": "B", "depends_on": [a["id"], x["id"]]}),
    );
    let finish = |want: &Value| {
        let c = claim(&s, pid, json!({"agent": "w"})).json();
        assert_eq!(c["id"], want["id"], "{c}");
        let token = c["lease_token"].as_str().expect("token");
        let r = s.post(
            &format!("/tasks/{}/complete", c["id"]),
            &json!({"lease_token": token}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    finish(&a);
    // A is pruned (finished more than a second ago); B still waits for X.
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get(&format!("/tasks/{}", a["id"])).status != 404 {
        assert!(Instant::now() < deadline, "A was never pruned");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(&s, &b["id"])["status"], "pending");
    finish(&x);
    // X done and A gone: B runs (and a re-arm counts A as satisfied too).
    let rearm = s.patch(&format!("/tasks/{}", b["id"]), &json!({"priority": 1}));
    assert_eq!(rearm.status, 200);
    finish(&b);
    // A dependency deleted while unfinished blocks its dependents.
    let d = task(&s, pid, json!({"title": "D"}));
    let e = task(&s, pid, json!({"title": "E", "depends_on": [d["id"]]}));
    assert_eq!(
        s.call("DELETE", &format!("/tasks/{}", d["id"]), None)
            .status,
        204
    );
    let now = get(&s, &e["id"]);
    assert_eq!(now["status"], "blocked", "{now}");
    assert_eq!(now["error"]["reason"], "dependency_failed");
}

/// The last attempt's `fail` with retry is the dead letter (`max_attempts`, one
/// `failed` event); a PATCH may not point `depends_on` at another project's task;
/// a task an operator sets `in_progress` gets a lease, so the sweeper can take it back.
#[test]
fn the_last_attempt_dead_letters_and_operator_changes_keep_the_rules() {
    let s = TestServer::start();
    let pid = project(
        &s,
        json!({"name": "last", "default_max_attempts": 2, "retry_backoff_seconds": 0}),
    );
    let t = task(&s, pid, json!({"title": "flaky"}));
    let id = &t["id"];
    for attempt in 1..=2 {
        let c = claim(&s, pid, json!({"agent": "a"})).json();
        assert_eq!(
            (c["id"].clone(), c["attempt"].clone()),
            (id.clone(), json!(attempt))
        );
        let token = c["lease_token"].as_str().expect("token");
        let r = s.post(
            &format!("/tasks/{id}/fail"),
            &json!({"lease_token": token, "error": {"try": attempt}}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let f = r.json();
        if attempt == 1 {
            assert_eq!(f["status"], "pending", "{f}");
            assert_eq!(f["error"]["reason"], "failed");
        } else {
            assert_eq!(f["status"], "failed", "{f}");
            assert_eq!(f["error"]["reason"], "max_attempts");
            assert_eq!(f["error"]["detail"], json!({"try": 2}));
            assert!(f["lease_expires_at"].is_null());
        }
    }
    let types = event_types(&s, pid, id);
    let count = |kind: &str| types.iter().filter(|t| *t == kind).count();
    assert_eq!((count("retried"), count("failed")), (1, 1), "{types:?}");
    let stats = s.get(&format!("/projects/{pid}/stats")).json();
    assert_eq!(
        (stats["dead"].clone(), stats["retrying"].clone()),
        (json!(1), json!(0))
    );
    // depends_on at PATCH: another project's task is refused and nothing changes.
    let other = s.project("elsewhere");
    let foreign = task(&s, other, json!({"title": "theirs"}));
    let mine = task(&s, pid, json!({"title": "mine"}));
    let before = get(&s, &mine["id"]);
    let r = s.patch(
        &format!("/tasks/{}", mine["id"]),
        &json!({"depends_on": [foreign["id"]]}),
    );
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed".into()),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["error"]["details"][0]["field"], "depends_on");
    assert_eq!(get(&s, &mine["id"]), before, "nothing changed");
    // An operator's in_progress: a lease of PATCH_LEASE (300 s) the sweeper honours,
    // and no claim takes the task meanwhile.
    let started = dashboard_backend::clock::now_ms();
    let r = s.patch(
        &format!("/tasks/{}", mine["id"]),
        &json!({"status": "in_progress"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lease = ms(&r.json()["lease_expires_at"]) - started;
    assert!((299_000..=301_000).contains(&lease), "lease of {lease} ms");
    assert_eq!(claim(&s, pid, json!({"agent": "a"})).status, 204);
}

/// A burst of expiries larger than one sweep step: 6 000 leases claimed together,
/// nobody heartbeating or claiming after; each must be swept within 1 s of its
/// expiry (SPEC §5a), not one step of 500 per pause.
#[test]
fn a_burst_of_expired_leases_is_swept_within_a_second() {
    let s = TestServer::start();
    let pid = s.project("burst");
    for chunk in 0..6 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({"title": format!("t{chunk}-{i}")}))
            .collect();
        let r = s.post(&format!("/projects/{pid}/tasks"), &json!(tasks));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let mut expiry = std::collections::HashMap::new();
    loop {
        let r = claim(
            &s,
            pid,
            json!({"agent": "burst", "limit": 100, "lease_seconds": 8}),
        );
        if r.status == 204 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        for t in r.json()["items"].as_array().expect("items") {
            // Every lease is still live while the rest are claimed (else the burst
            // is not one, and a re-claim muddles the figures).
            assert_eq!(t["attempt"], 1, "claiming took longer than a lease: {t}");
            expiry.insert(t["id"].as_i64().expect("id"), ms(&t["lease_expires_at"]));
        }
    }
    assert_eq!(expiry.len(), 6000);
    let last = *expiry.values().max().expect("leases");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = s.get(&format!("/projects/{pid}/stats")).json();
        if stats["by_status"]["in_progress"].as_i64().unwrap_or(0) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never swept: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut late = Vec::new();
    for t in harness::all_tasks(&s, pid) {
        assert_eq!(t["status"], "pending", "{t}");
        let lag = ms(&t["updated_at"]) - expiry[&t["id"].as_i64().expect("id")];
        if !(0..=1000).contains(&lag) {
            late.push(lag);
        }
    }
    late.sort_unstable();
    assert!(
        late.is_empty(),
        "{} of 6000 swept outside [0, 1000] ms of expiry (last lease {last}); worst {:?}",
        late.len(),
        late.last()
    );
}

/// A task whose failed attempt re-arms it into `blocked` (a dependency of its own
/// was cancelled while it ran) blocks its pending dependents, as a failure would:
/// they can no more run than it can.
#[test]
fn a_task_re_armed_into_blocked_blocks_its_dependents() {
    let s = TestServer::start();
    let pid = s.project("rearm-blocked");
    let d = task(&s, pid, json!({"title": "d"}));
    let sd = task(&s, pid, json!({"title": "s", "depends_on": [d["id"]]}));
    let t = task(&s, pid, json!({"title": "t", "depends_on": [sd["id"]]}));
    let c = claim(&s, pid, json!({"agent": "a"})).json();
    assert_eq!(c["id"], d["id"]);
    let done = s.post(
        &format!("/tasks/{}/complete", d["id"]),
        &json!({"lease_token": c["lease_token"]}),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let c = claim(&s, pid, json!({"agent": "a"})).json();
    assert_eq!(c["id"], sd["id"]);
    // While s runs, an operator cancels d; then s's attempt fails with a retry.
    let r = s.patch(
        &format!("/tasks/{}", d["id"]),
        &json!({"status": "cancelled"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let f = s.post(
        &format!("/tasks/{}/fail", sd["id"]),
        &json!({"lease_token": c["lease_token"], "retry": true}),
    );
    assert_eq!(f.status, 200, "{}", f.text());
    assert_eq!(f.json()["status"], "blocked", "{}", f.text());
    let now = get(&s, &t["id"]);
    assert_eq!(now["status"], "blocked", "t waits on a blocked task: {now}");
    assert_eq!(now["error"]["reason"], "dependency_failed");
    assert_eq!(now["error"]["dependency"], sd["id"]);
    let stats = s.get(&format!("/projects/{pid}/stats")).json();
    assert_eq!(stats["by_status"]["blocked"], 2, "{stats}");
    assert_eq!(stats["waiting"], 0, "{stats}");
}
