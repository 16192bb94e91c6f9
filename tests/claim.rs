use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::harness::TestServer;

#[test]
fn ten_agents_claim_two_hundred_distinct_tasks() {
    let s = Arc::new(TestServer::start());
    let pid = s.project("claims");
    let batch: Vec<Value> = (0..200)
        .map(|i| json!({"title": format!("t{i}"), "priority": i % 7}))
        .collect();
    assert_eq!(
        s.post(&format!("/projects/{pid}/tasks"), &Value::Array(batch))
            .status,
        201
    );
    let workers: Vec<_> = (0..10)
        .map(|a| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let r = s.post(
                        &format!("/projects/{pid}/tasks/claim"),
                        &json!({"agent": format!("agent-{a}")}),
                    );
                    match r.status {
                        200 => {
                            let t = r.json();
                            assert_eq!(t["assignee"], format!("agent-{a}").as_str());
                            assert_eq!(t["status"], "in_progress");
                            assert!(t["lease_expires_at"].is_string());
                            got.push(t["id"].as_i64().expect("id"));
                        }
                        204 => return got,
                        other => panic!("claim answered {other}: {}", r.text()),
                    }
                }
            })
        })
        .collect();
    let all: Vec<i64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("agent"))
        .collect();
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200, "every task claimed exactly once");
    assert_eq!(distinct.len(), 200, "no task given to two agents");
}

#[test]
fn claim_takes_highest_priority_then_oldest_and_honours_labels() {
    let s = TestServer::start();
    let pid = s.project("order");
    let made = s
        .post(
            &format!("/projects/{pid}/tasks"),
            &json!([
                {"title": "low", "priority": 1},
                {"title": "high-old", "priority": 5, "labels": ["gpu"]},
                {"title": "high-new", "priority": 5},
            ]),
        )
        .json();
    let id = |i: usize| made["items"][i]["id"].as_i64().expect("id");
    let claim = |body: Value| s.post(&format!("/projects/{pid}/tasks/claim"), &body);
    assert_eq!(claim(json!({"agent": "a", "labels": ["cpu"]})).status, 204);
    assert_eq!(
        claim(json!({"agent": "a", "labels": ["gpu"]})).json()["id"],
        id(1)
    );
    assert_eq!(claim(json!({"agent": "a"})).json()["id"], id(2));
    assert_eq!(claim(json!({"agent": "a"})).json()["id"], id(0));
    assert_eq!(claim(json!({"agent": "a"})).status, 204);
    assert_eq!(
        s.post("/projects/999/tasks/claim", &json!({"agent": "a"}))
            .status,
        404
    );
    assert_eq!(claim(json!({"agent": ""})).status, 422);
    assert_eq!(claim(json!({"agent": "a", "lease_seconds": 0})).status, 422);
}

#[test]
fn expired_lease_is_claimable_again_and_heartbeats_guard_the_holder() {
    let s = TestServer::start();
    let pid = s.project("lease");
    let id = s
        .post(&format!("/projects/{pid}/tasks"), &json!({"title": "x"}))
        .json()["id"]
        .as_i64()
        .expect("id");
    let claim = |agent: &str, lease: i64| {
        s.post(
            &format!("/projects/{pid}/tasks/claim"),
            &json!({"agent": agent, "lease_seconds": lease}),
        )
    };
    let first = claim("agent-1", 1);
    assert_eq!(first.json()["id"], id);
    // While the lease runs, nobody else gets it, and a stranger's heartbeat is refused
    // (SPEC §5a: lease_lost, from its point of view).
    assert_eq!(claim("agent-2", 60).status, 204);
    let hb = s.post(
        &format!("/tasks/{id}/heartbeat"),
        &json!({"agent": "agent-2"}),
    );
    assert_eq!((hb.status, hb.code()), (409, "lease_lost".into()));
    // The holder's heartbeat extends the lease without changing the version.
    let hb = s.post(
        &format!("/tasks/{id}/heartbeat"),
        &json!({"agent": "agent-1", "lease_seconds": 1}),
    );
    assert_eq!(hb.status, 200, "{}", hb.text());
    assert_eq!(hb.json()["version"], first.json()["version"]);
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let second = claim("agent-2", 60);
    assert_eq!(second.status, 200, "expired lease is claimable");
    assert_eq!(second.json()["id"], id);
    assert_eq!(second.json()["assignee"], "agent-2");
    let late = s.post(
        &format!("/projects/{pid}/tasks/{id}/heartbeat"),
        &json!({"agent": "agent-1"}),
    );
    assert_eq!(late.status, 409, "the old holder lost it");
    assert_eq!(
        s.post(
            &format!("/tasks/{id}/heartbeat"),
            &json!({"agent": "agent-2"})
        )
        .status,
        200
    );
    // A live lease protects the task from a PATCH (SPEC §5a) unless If-Match forces it;
    // a finished task cannot be heartbeaten.
    let held = s.patch(&format!("/tasks/{id}"), &json!({"status": "completed"}));
    assert_eq!((held.status, held.code()), (409, "lease_held".into()));
    let version = s.get(&format!("/tasks/{id}")).json()["version"].to_string();
    let forced = s.call_with(
        "PATCH",
        &format!("/tasks/{id}"),
        Some(&json!({"status": "completed"})),
        &[("If-Match", version.as_str())],
    );
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(
        s.post(
            &format!("/tasks/{id}/heartbeat"),
            &json!({"agent": "agent-2"})
        )
        .status,
        409
    );
    let kinds: Vec<String> = s.get(&format!("/projects/{pid}/events")).json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["type"].as_str().expect("t").to_string())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "claimed").count(), 2);
}
