//! Retention (SPEC §5c, issue #20): under a create/claim/complete load with short
//! windows the pruner deletes old finished tasks and old events, never a pending, in
//! progress or blocked task, keeps the counters equal to the rows, and says so in
//! /metrics and its log. Runs on either backend (`TEST_BACKEND`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{self, cli_env, have_tool, TestServer};

/// The value of an unlabelled series in /metrics text.
fn metric(s: &TestServer, name: &str) -> Option<f64> {
    let text = s.get("/metrics").text();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every event of `pid` (id, task id).
fn all_events(s: &TestServer, pid: i64) -> Vec<(i64, Option<i64>)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = s
            .get(&format!("/projects/{pid}/events?after={after}&limit=500"))
            .json();
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for e in &items {
            out.push((e["id"].as_i64().expect("id"), e["task_id"].as_i64()));
        }
        match items.last() {
            Some(last) if page["next_cursor"].is_string() => {
                after = last["id"].as_i64().expect("id")
            }
            _ => return out,
        }
    }
}

#[test]
fn pruner_deletes_old_finished_work_and_nothing_else() {
    let s = TestServer::start_with(&[
        ("TASK_RETENTION", "2s"),
        ("EVENT_RETENTION", "2s"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ]);
    let pid = s.project("retention");
    let other = s.project("idle");
    // Work that must survive however old it gets: pending, in progress, blocked.
    let create = |pid: i64, title: &str| -> i64 {
        let r = s.post(&format!("/projects/{pid}/tasks"), &json!({"title": title}));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_i64().expect("id")
    };
    let pending: Vec<i64> = (0..5).map(|i| create(other, &format!("keep{i}"))).collect();
    let blocked: Vec<i64> = (0..3)
        .map(|i| create(other, &format!("blocked{i}")))
        .collect();
    for id in &blocked {
        let r = s.patch(&format!("/tasks/{id}"), &json!({"status": "blocked"}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let busy = create(pid, "held");
    let claimed = s.post(
        &format!("/projects/{pid}/tasks/claim"),
        &json!({"agent": "holder", "lease_seconds": 600}),
    );
    assert_eq!(
        claimed.json()["id"].as_i64(),
        Some(busy),
        "{}",
        claimed.text()
    );

    // A constant load: create, claim, finish (completed, failed, cancelled), for a
    // few retention windows.
    let stop = AtomicBool::new(false);
    let finished = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (s, stop) = (&s, &stop);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let r = s.post(
                            &format!("/projects/{pid}/tasks"),
                            &json!({"title": format!("w{w}-{i}"), "labels": ["x", "y"]}),
                        );
                        assert_eq!(r.status, 201, "create: {}", r.text());
                        let c = s.post(
                            &format!("/projects/{pid}/tasks/claim"),
                            &json!({"agent": format!("a{w}"), "lease_seconds": 60}),
                        );
                        if c.status != 200 {
                            continue;
                        }
                        let id = c.json()["id"].as_i64().expect("id");
                        if id == busy {
                            continue;
                        }
                        let to =
                            ["completed", "completed", "failed", "cancelled"][(i % 4) as usize];
                        // The holder finishes it: its lease token lets the PATCH past
                        // the live lease (SPEC §5a).
                        let token = c.json()["lease_token"].as_str().expect("token").to_string();
                        let p = s.call_with(
                            "PATCH",
                            &format!("/tasks/{id}"),
                            Some(&json!({"status": to})),
                            &[("Lease-Token", token.as_str())],
                        );
                        assert_eq!(p.status, 200, "finish: {}", p.text());
                        done.push(id);
                    }
                    done
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(7));
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect::<Vec<i64>>()
    });
    assert!(
        finished.len() > 50,
        "the load ran ({} finished)",
        finished.len()
    );
    let pruned_during_load = metric(&s, "tasks_pruned_total").unwrap_or(0.0);
    assert!(
        pruned_during_load > 0.0,
        "the pruner deleted tasks while the load ran"
    );

    // Within two windows plus a run interval, every finished task is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let counted = harness::full_count(&s, pid);
        let left: i64 = ["completed", "failed", "cancelled"]
            .iter()
            .map(|st| counted.get(*st).copied().unwrap_or(0))
            .sum();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "finished tasks left after the windows: {counted:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in pending.iter().chain(&blocked).chain([&busy]) {
        let r = s.get(&format!("/tasks/{id}"));
        assert_eq!(r.status, 200, "task {id} was pruned: {}", r.text());
    }
    for id in finished.iter().take(20) {
        assert_eq!(s.get(&format!("/tasks/{id}")).status, 404, "task {id} kept");
    }
    // Counters equal the rows, in both projects.
    for p in [pid, other] {
        let counted = harness::full_count(&s, p);
        let stats = s.get(&format!("/projects/{p}/stats")).json();
        let mut total = 0;
        for (status, n) in stats["by_status"].as_object().expect("by_status") {
            let want = counted.get(status).copied().unwrap_or(0);
            assert_eq!(n.as_i64(), Some(want), "project {p}, {status}: {stats}");
            total += want;
        }
        assert_eq!(stats["total"].as_i64(), Some(total), "project {p}: {stats}");
        assert_eq!(
            stats["completed_last_hour"].as_i64(),
            Some(counted.get("completed").copied().unwrap_or(0)),
            "project {p}: {stats}"
        );
    }
    // Old events went too, and no event of a pruned task is left.
    let events = all_events(&s, pid);
    let gone: std::collections::HashSet<i64> = finished.iter().copied().collect();
    assert!(
        events
            .iter()
            .all(|(_, t)| t.is_none_or(|t| !gone.contains(&t))),
        "events of pruned tasks remain"
    );
    assert!(
        metric(&s, "events_pruned_total").unwrap_or(0.0) > finished.len() as f64,
        "events_pruned_total moved"
    );
    let text = s.get("/metrics").text();
    let space = if harness::postgres() {
        "db_dead_tuples{"
    } else {
        "db_free_pages{"
    };
    assert!(text.contains(space), "{space} missing from /metrics");
    // The series the example alerts read (packaging/examples/alerts.yml).
    let mut wanted = vec!["db_size_bytes{", "tasks_pruned_total{"];
    if !harness::postgres() {
        wanted.push("db_filesystem_avail_bytes{");
    }
    for name in wanted {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let log = s.log_text();
    let runs: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["target"] == "pruner" && v["msg"].as_str().is_some_and(|m| m.starts_with("pruned "))
        })
        .collect();
    assert!(
        runs.iter()
            .any(|v| v["tasks"].as_u64().is_some_and(|n| n > 0)
                && v["events"].as_u64().is_some_and(|n| n > 0)),
        "no pruning run logged with its counts: {log}"
    );
    // Steps stay short (SPEC §5c: well under 10 ms a transaction).
    let slowest = runs
        .iter()
        .filter_map(|v| v["max_step_ms"].as_f64())
        .fold(0.0, f64::max);
    eprintln!("{} runs logged, slowest step {slowest:.2} ms", runs.len());
}

#[test]
fn retention_values_are_checked_at_start() {
    for (var, value) in [
        ("TASK_RETENTION", "1w"),
        ("EVENT_RETENTION", "-5s"),
        ("TASK_RETENTION", "90"),
        ("EVENT_RETENTION", "1.5h"),
    ] {
        let out = cli_env(&["serve"], &[(var, value)]);
        assert_eq!(out.status.code(), Some(78), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("dashboard-backend: invalid {var} value {value:?}")),
            "{var}={value}: {err}"
        );
    }
    let out = cli_env(
        &["config"],
        &[("TASK_RETENTION", "12h"), ("EVENT_RETENTION", "0")],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("TASK_RETENTION"),
        ["TASK_RETENTION", "12h", "#", "environment"]
    );
    assert_eq!(
        line("EVENT_RETENTION"),
        ["EVENT_RETENTION", "0", "#", "environment"]
    );
    let out = cli_env(&["config"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("TASK_RETENTION")
            && l.contains("90d")
            && l.ends_with("default")),
        "{text}"
    );
}

/// The retention and disk alerts fire when they should and not otherwise
/// (`promtool test rules`, like `scripts/build-packages.sh`).
#[test]
fn alert_rules_pass_their_promtool_tests() {
    if !have_tool("promtool") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "tests/alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Two instances prune one database at once (PostgreSQL: a scale-out pair; SQLite:
/// two processes on one file): every finished task is deleted exactly once, so the
/// two `tasks_pruned_total` add up to the tasks finished, and the counters stay
/// equal to the rows.
#[test]
fn two_instances_prune_each_task_once() {
    let env = [
        ("TASK_RETENTION", "1s"),
        ("EVENT_RETENTION", "1s"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ];
    let a = TestServer::start_with(&env);
    let b = TestServer::spawn(
        harness::temp_dir("srv-b"),
        a.db.clone(),
        a.key.clone(),
        &env,
    );
    let pid = a.project("pair");
    let n = 300;
    let tasks: Vec<Value> = (0..n).map(|i| json!({"title": format!("t{i}")})).collect();
    let made = a.post(&format!("/projects/{pid}/tasks"), &json!(tasks));
    assert_eq!(made.status, 201, "{}", made.text());
    let ids: Vec<i64> = made.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), n);
    let keep = a.post(&format!("/projects/{pid}/tasks"), &json!({"title": "keep"}));
    let keep = keep.json()["id"].as_i64().expect("id");
    std::thread::scope(|scope| {
        for (half, s) in ids.chunks(n / 2).zip([&a, &b]) {
            scope.spawn(move || {
                for (i, id) in half.iter().enumerate() {
                    let to = ["completed", "failed", "cancelled"][i % 3];
                    let r = s.patch(&format!("/tasks/{id}"), &json!({"status": to}));
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = |name: &str| metric(&a, name).unwrap_or(0.0) + metric(&b, name).unwrap_or(0.0);
    while total("tasks_pruned_total") < n as f64 {
        assert!(
            Instant::now() < deadline,
            "pruned {} of {n}",
            total("tasks_pruned_total")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2)); // a double count would show by now
    assert_eq!(
        total("tasks_pruned_total"),
        n as f64,
        "each task pruned once"
    );
    assert_eq!(a.get(&format!("/tasks/{keep}")).status, 200);
    let counted = harness::full_count(&a, pid);
    assert_eq!(counted, HashMap::from([("pending".to_string(), 1)]));
    let stats = b.get(&format!("/projects/{pid}/stats")).json();
    assert_eq!(stats["total"].as_i64(), Some(1), "{stats}");
    assert_eq!(stats["by_status"]["pending"].as_i64(), Some(1), "{stats}");
}
