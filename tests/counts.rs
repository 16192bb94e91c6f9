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
