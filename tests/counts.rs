//! Counts that stay instant at a million tasks (issue #19) must also stay true: after
//! a random mix of every kind of change, from several clients at once, each
//! project's stats equal a full count of its tasks read through the list endpoint.

use serde_json::{json, Value};

use crate::harness::{self, TestServer};

/// A small xorshift, seeded per thread, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn stats_equal_a_full_count_after_a_concurrent_random_mix() {
    let s = TestServer::start();
    let projects: Vec<i64> = (0..4).map(|i| s.project(&format!("p{i}"))).collect();
    std::thread::scope(|scope| {
        for t in 0..6u64 {
            let (s, projects) = (&s, &projects);
            scope.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                for _ in 0..120 {
                    let pid = projects[rng.below(projects.len() as u64) as usize];
                    match rng.below(7) {
                        0 | 1 => {
                            let n = 1 + rng.below(5);
                            let tasks: Vec<Value> =
                                (0..n).map(|i| json!({"title": format!("t{i}")})).collect();
                            s.post(&format!("/projects/{pid}/tasks"), &json!(tasks));
                        }
                        2 => {
                            let claim = json!({"agent": format!("a{t}"), "lease_seconds": 60});
                            s.post(&format!("/projects/{pid}/tasks/claim"), &claim);
                        }
                        3 | 4 => {
                            let page = s.get(&format!("/projects/{pid}/tasks?limit=20")).json();
                            let items = page["items"].as_array().cloned().unwrap_or_default();
                            if items.is_empty() {
                                continue;
                            }
                            let task = &items[rng.below(items.len() as u64) as usize];
                            let id = task["id"].as_i64().expect("id");
                            if rng.below(4) == 0 {
                                s.call("DELETE", &format!("/tasks/{id}"), None);
                            } else {
                                let to = ["completed", "failed", "cancelled", "blocked", "pending"]
                                    [rng.below(5) as usize];
                                s.patch(&format!("/tasks/{id}"), &json!({"status": to}));
                            }
                        }
                        5 => {
                            s.get(&format!("/projects/{pid}/stats"));
                        }
                        _ => {
                            s.get("/stats");
                        }
                    }
                }
            });
        }
    });
    // One project goes whole, with its tasks.
    let gone = projects[3];
    assert_eq!(
        s.call("DELETE", &format!("/projects/{gone}"), None).status,
        204
    );
    let all = s.get("/stats").json();
    let listed: Vec<i64> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["project_id"].as_i64().expect("id"))
        .collect();
    assert!(!listed.contains(&gone), "a deleted project keeps no stats");
    for &pid in &projects[..3] {
        let counted = harness::full_count(&s, pid);
        let stats = s.get(&format!("/projects/{pid}/stats")).json();
        let mut total = 0;
        for (status, n) in stats["by_status"].as_object().expect("by_status") {
            let want = counted.get(status).copied().unwrap_or(0);
            assert_eq!(n.as_i64(), Some(want), "project {pid}, {status}: {stats}");
            total += want;
        }
        assert_eq!(stats["total"].as_i64(), Some(total), "project {pid}");
        // Every completion of this test happened in the last hour.
        let completed = counted.get("completed").copied().unwrap_or(0);
        assert_eq!(
            stats["completed_last_hour"].as_i64(),
            Some(completed),
            "project {pid}"
        );
    }
}

/// Each project's waiting, retrying and dead counted from the rows, in the database
/// itself (the API does not show deps_waiting or dead).
fn queue_counts(s: &TestServer, pid: i64) -> [i64; 3] {
    let sql = "SELECT
         (SELECT count(*) FROM tasks WHERE project_id = $1 AND status = 'pending'
            AND deps_waiting > 0),
         (SELECT count(*) FROM tasks WHERE project_id = $1 AND status = 'pending'
            AND attempt > 0),
         (SELECT count(*) FROM tasks WHERE project_id = $1 AND status = 'failed'
            AND dead = true)";
    match harness::database_url(&s.db) {
        Some(url) => {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            let r = c.query_one(sql, &[&pid]).expect("count");
            [r.get(0), r.get(1), r.get(2)]
        }
        None => {
            let c = rusqlite::Connection::open(&s.db).expect("open");
            let sql = sql.replace("$1", "?1").replace("= true", "= 1");
            c.query_row(&sql, [pid], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]))
                .expect("count")
        }
    }
}

#[test]
fn queue_stats_equal_a_full_count_after_a_concurrent_queue_mix() {
    // Issue #19: waiting, retrying and dead are counters; after every write that
    // moves a task in or out of them, from several clients at once, they equal a
    // full count of the rows.
    let s = TestServer::start();
    let projects: Vec<i64> = (0..3)
        .map(|i| {
            harness::project_with(
                &s,
                &json!({"name": format!("q{i}"), "default_max_attempts": 2,
                        "retry_backoff_seconds": 1}),
            )
        })
        .collect();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (s, projects) = (&s, &projects);
            scope.spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (t + 1));
                let mut held: Vec<(i64, String)> = Vec::new();
                for _ in 0..100 {
                    let pid = projects[rng.below(projects.len() as u64) as usize];
                    let some_task = |rng: &mut Rng| -> Option<i64> {
                        let page = s.get(&format!("/projects/{pid}/tasks?limit=50")).json();
                        let items = page["items"].as_array().cloned().unwrap_or_default();
                        (!items.is_empty()).then(|| {
                            items[rng.below(items.len() as u64) as usize]["id"]
                                .as_i64()
                                .expect("id")
                        })
                    };
                    match rng.below(10) {
                        0 | 1 => {
                            let deps: Vec<i64> = (0..rng.below(3))
                                .filter_map(|_| some_task(&mut rng))
                                .collect();
                            let max = 1 + rng.below(2);
                            s.post(
                                &format!("/projects/{pid}/tasks"),
                                &json!({"title": "t", "depends_on": deps, "max_attempts": max}),
                            );
                        }
                        2 | 3 => {
                            let lease = if rng.below(3) == 0 { 1 } else { 60 };
                            let r = s.post(
                                &format!("/projects/{pid}/tasks/claim"),
                                &json!({"agent": format!("a{t}"), "lease_seconds": lease,
                                        "limit": 2}),
                            );
                            if r.status == 200 {
                                for c in r.json()["items"].as_array().cloned().unwrap_or_default() {
                                    let token = c["lease_token"].as_str().expect("token");
                                    held.push((c["id"].as_i64().expect("id"), token.into()));
                                }
                            }
                        }
                        4 if !held.is_empty() => {
                            let (id, token) =
                                held.swap_remove(rng.below(held.len() as u64) as usize);
                            s.post(
                                &format!("/tasks/{id}/complete"),
                                &json!({"lease_token": token}),
                            );
                        }
                        5 | 6 if !held.is_empty() => {
                            let (id, token) =
                                held.swap_remove(rng.below(held.len() as u64) as usize);
                            s.post(
                                &format!("/tasks/{id}/fail"),
                                &json!({"lease_token": token, "retry": rng.below(4) != 0}),
                            );
                        }
                        7 | 8 => {
                            let Some(id) = some_task(&mut rng) else {
                                continue;
                            };
                            if rng.below(4) == 0 {
                                s.call("DELETE", &format!("/tasks/{id}"), None);
                            } else {
                                // Cancellations block dependents; pending re-arms.
                                let to = ["cancelled", "pending", "failed"][rng.below(3) as usize];
                                s.patch(&format!("/tasks/{id}"), &json!({"status": to}));
                            }
                        }
                        _ => {
                            // Lets short leases run out for the sweeper.
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                }
            });
        }
    });
    // Then one task in each sub-state for sure, in the first project: a dependency
    // wait, a retry and a dead letter (by priority, the claims take these).
    let pid = projects[0];
    let a = harness::task(&s, pid, &json!({"title": "a"}));
    harness::task(&s, pid, &json!({"title": "b", "depends_on": [a["id"]]}));
    for (max, title) in [(3, "retry"), (1, "dead")] {
        harness::task(
            &s,
            pid,
            &json!({"title": title, "priority": 1000, "max_attempts": max}),
        );
        let c = harness::claim(&s, pid, &json!({"agent": "z", "lease_seconds": 60})).json();
        assert_eq!(c["title"], title, "{c}");
        let r = s.post(
            &format!("/tasks/{}/fail", c["id"]),
            &json!({"lease_token": c["lease_token"], "retry": true}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Every short lease left runs out and is swept (within 1 s of expiry).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut seen = [0i64; 3];
    for &pid in &projects {
        let stats = s.get(&format!("/projects/{pid}/stats")).json();
        let want = queue_counts(&s, pid);
        let got = ["waiting", "retrying", "dead"].map(|k| stats[k].as_i64().expect(k));
        assert_eq!(
            got, want,
            "project {pid} (waiting, retrying, dead): {stats}"
        );
        for (s, n) in seen.iter_mut().zip(want) {
            *s += n;
        }
    }
    assert!(
        seen.iter().all(|n| *n > 0),
        "the mix left no task in some sub-state: {seen:?}"
    );
    // A project goes whole, with its counters.
    let gone = projects[2];
    assert_eq!(
        s.call("DELETE", &format!("/projects/{gone}"), None).status,
        204
    );
    for &pid in &projects[..2] {
        let stats = s.get(&format!("/projects/{pid}/stats")).json();
        let got = ["waiting", "retrying", "dead"].map(|k| stats[k].as_i64().expect(k));
        assert_eq!(got, queue_counts(&s, pid), "project {pid}");
    }
}
