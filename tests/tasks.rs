use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::{full_count, task, TestServer};

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["id"].as_i64().expect("id"))
        .collect()
}

#[test]
fn task_create_get_patch_delete() {
    let s = TestServer::start();
    let pid = s.project("t");
    let body = json!({"title": "build", "description": "d", "priority": 3, "labels": ["a", "b"],
                      "metadata": {"k": {"n": 1}}});
    let r = s.post(&format!("/projects/{pid}/tasks"), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let t = r.json();
    let id = t["id"].as_i64().expect("id");
    assert_eq!(r.header("location"), Some(format!("/tasks/{id}").as_str()));
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(t["status"], "pending");
    assert_eq!(t["labels"], json!(["a", "b"]));
    assert_eq!(t["metadata"], json!({"k": {"n": 1}}));
    assert!(t["result"].is_null() && t["assignee"].is_null() && t["started_at"].is_null());
    // Both paths reach it; the wrong project does not.
    assert_eq!(s.get(&format!("/tasks/{id}")).json(), t);
    assert_eq!(
        s.get(&format!("/projects/{pid}/tasks/{id}")).json()["id"],
        id
    );
    let other = s.project("other");
    assert_eq!(s.get(&format!("/projects/{other}/tasks/{id}")).status, 404);
    // Status transitions set the timestamps.
    let up = s
        .patch(&format!("/tasks/{id}"), &json!({"status": "in_progress"}))
        .json();
    assert!(up["started_at"].is_string() && up["completed_at"].is_null());
    assert_eq!(up["version"], 2);
    let done = s.patch(
        &format!("/projects/{pid}/tasks/{id}"),
        &json!({"status": "completed", "result": {"ok": true}}),
    );
    assert_eq!(done.status, 200);
    let done = done.json();
    assert!(done["completed_at"].is_string());
    assert_eq!(done["started_at"], up["started_at"]);
    assert_eq!(done["result"], json!({"ok": true}));
    // Delete
    assert_eq!(s.call("DELETE", &format!("/tasks/{id}"), None).status, 204);
    assert_eq!(s.get(&format!("/tasks/{id}")).status, 404);
    assert_eq!(s.call("DELETE", &format!("/tasks/{id}"), None).status, 404);
}

#[test]
fn stale_if_match_on_task_is_412() {
    let s = TestServer::start();
    let pid = s.project("t");
    let id = s
        .post(&format!("/projects/{pid}/tasks"), &json!({"title": "x"}))
        .json()["id"]
        .as_i64()
        .expect("id");
    let path = format!("/tasks/{id}");
    let r = s.call_with(
        "PATCH",
        &path,
        Some(&json!({"priority": 1})),
        &[("If-Match", "\"1\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"2\""));
    let r = s.call_with(
        "PATCH",
        &path,
        Some(&json!({"priority": 2})),
        &[("If-Match", "\"1\"")],
    );
    assert_eq!((r.status, r.code()), (412, "precondition_failed".into()));
    assert_eq!(
        s.call_with("DELETE", &path, None, &[("If-Match", "W/\"1\"")])
            .status,
        412
    );
    assert_eq!(s.get(&path).json()["priority"], 1);
    assert_eq!(
        s.call_with("DELETE", &path, None, &[("If-Match", "\"2\"")])
            .status,
        204
    );
}

#[test]
fn bulk_create_is_all_or_nothing() {
    let s = TestServer::start();
    let pid = s.project("bulk");
    let good: Vec<Value> = (0..5).map(|i| json!({"title": format!("t{i}")})).collect();
    let r = s.post(&format!("/projects/{pid}/tasks"), &Value::Array(good));
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["items"].as_array().expect("items").len(), 5);
    let mut bad: Vec<Value> = (0..5).map(|i| json!({"title": format!("u{i}")})).collect();
    bad[3] = json!({"title": ""});
    let r = s.post(&format!("/projects/{pid}/tasks"), &Value::Array(bad));
    assert_eq!((r.status, r.code()), (422, "validation_failed".into()));
    assert_eq!(r.json()["error"]["details"][0]["field"], "[3].title");
    let all = s.get(&format!("/projects/{pid}/tasks?limit=500")).json();
    assert_eq!(ids(&all).len(), 5, "nothing of the bad batch was created");
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"title": format!("t{i}")}))
        .collect();
    assert_eq!(
        s.post(&format!("/projects/{pid}/tasks"), &Value::Array(too_many))
            .status,
        422
    );
    assert_eq!(
        s.post(&format!("/projects/{pid}/tasks"), &json!([])).status,
        422
    );
    assert_eq!(
        s.post("/projects/999/tasks", &json!({"title": "x"})).status,
        404
    );
}

#[test]
fn bulk_create_keeps_the_batch_order_and_every_field() {
    let s = TestServer::start();
    let pid = s.project("bulk-order");
    let dep = task(&s, pid, &json!({"title": "dep"}))["id"]
        .as_i64()
        .expect("id");
    let batch: Vec<Value> = (0..300)
        .map(|i| match i % 5 {
            0 => json!({"title": format!("t{i}"), "labels": ["a", format!("l{i}")],
                        "priority": i, "metadata": {"i": i}}),
            1 => json!({"title": format!("t{i}"), "status": "blocked", "assignee": "ag"}),
            2 => json!({"title": format!("t{i}"), "status": "completed", "result": {"ok": i}}),
            3 => json!({"title": format!("t{i}"), "depends_on": [dep], "max_attempts": 7}),
            _ => json!({"title": format!("t{i}"), "not_before": "2999-01-01T00:00:00Z",
                        "description": format!("d{i}")}),
        })
        .collect();
    let r = s.post(
        &format!("/projects/{pid}/tasks"),
        &Value::Array(batch.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let items = r.json()["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), batch.len());
    let mut last = dep;
    for (i, (want, got)) in batch.iter().zip(&items).enumerate() {
        let id = got["id"].as_i64().expect("id");
        assert!(
            id > last,
            "ids follow the batch order: item {i} has {id} after {last}"
        );
        last = id;
        assert_eq!(got["title"], want["title"], "item {i}");
        let stored = s.get(&format!("/tasks/{id}")).json();
        for field in [
            "title", "status", "labels", "priority", "assignee", "metadata", "result",
        ] {
            assert_eq!(stored[field], got[field], "item {i}: {field} as stored");
        }
        for field in [
            "labels",
            "priority",
            "assignee",
            "metadata",
            "result",
            "max_attempts",
        ] {
            if let Some(v) = want.get(field) {
                assert_eq!(&stored[field], v, "item {i}: {field} as sent");
            }
        }
    }
    let labelled = s.get(&format!("/projects/{pid}/tasks?label=l295")).json();
    assert_eq!(ids(&labelled), vec![items[295]["id"].as_i64().expect("id")]);
    let counts = full_count(&s, pid);
    let stats = s.get(&format!("/projects/{pid}/stats")).json();
    for (status, n) in &counts {
        assert_eq!(stats["by_status"][status].as_i64(), Some(*n), "{status}");
    }
    assert_eq!(counts.get("blocked"), Some(&60));
}

#[test]
fn list_filters_and_sorts() {
    let s = TestServer::start();
    let pid = s.project("f");
    let tasks = json!([
        {"title": "a", "priority": 1, "labels": ["gpu"]},
        {"title": "b", "priority": 5, "status": "blocked", "assignee": "agent-1"},
        {"title": "c", "priority": 3, "labels": ["gpu", "big"], "assignee": "agent-1"},
        {"title": "d", "priority": 5, "status": "completed"},
    ]);
    let made = ids(&s.post(&format!("/projects/{pid}/tasks"), &tasks).json());
    let base = format!("/projects/{pid}/tasks");
    assert_eq!(ids(&s.get(&base).json()), made);
    assert_eq!(
        ids(&s.get(&format!("{base}?status=pending")).json()),
        vec![made[0], made[2]]
    );
    assert_eq!(
        ids(&s.get(&format!("{base}?status=blocked,completed")).json()),
        vec![made[1], made[3]]
    );
    assert_eq!(
        ids(&s.get(&format!("{base}?assignee=agent-1")).json()),
        vec![made[1], made[2]]
    );
    assert_eq!(
        ids(&s.get(&format!("{base}?label=gpu")).json()),
        vec![made[0], made[2]]
    );
    assert_eq!(
        ids(&s.get(&format!("{base}?label=big&assignee=agent-1")).json()),
        vec![made[2]]
    );
    assert_eq!(
        ids(&s.get(&format!("{base}?sort=priority")).json()),
        vec![made[1], made[3], made[2], made[0]]
    );
    // Paging by priority crosses equal keys correctly.
    let p1 = s.get(&format!("{base}?sort=priority&limit=1")).json();
    let mut seen = ids(&p1);
    let mut cursor = p1["next_cursor"].as_str().map(String::from);
    while let Some(c) = cursor {
        let p = s
            .get(&format!("{base}?sort=priority&limit=1&cursor={c}"))
            .json();
        seen.extend(ids(&p));
        cursor = p["next_cursor"].as_str().map(String::from);
    }
    assert_eq!(seen, vec![made[1], made[3], made[2], made[0]]);
    s.patch(&format!("/tasks/{}", made[0]), &json!({"priority": 9}));
    let by_update = ids(&s.get(&format!("{base}?sort=updated_at")).json());
    assert_eq!(by_update.last(), Some(&made[0]));
    // A cursor from one sort is refused by another.
    let c = s.get(&format!("{base}?sort=priority&limit=1")).json()["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    assert_eq!(s.get(&format!("{base}?cursor={c}")).status, 400);
}

#[test]
fn paging_returns_every_task_once_while_tasks_are_added() {
    let s = TestServer::start();
    let pid = s.project("paging");
    let batch: Vec<Value> = (0..120)
        .map(|i| json!({"title": format!("t{i}")}))
        .collect();
    s.post(&format!("/projects/{pid}/tasks"), &Value::Array(batch));
    let base = format!("/projects/{pid}/tasks?limit=25");
    let mut seen: Vec<i64> = Vec::new();
    let mut url = base.clone();
    let mut added = 0;
    loop {
        let page = s.get(&url).json();
        seen.extend(ids(&page));
        // Writers add tasks between pages.
        for _ in 0..3 {
            assert_eq!(
                s.post(&format!("/projects/{pid}/tasks"), &json!({"title": "late"}))
                    .status,
                201
            );
            added += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{base}&cursor={c}"),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no task twice");
    let all = {
        let mut all = Vec::new();
        let mut url = format!("/projects/{pid}/tasks?limit=500");
        loop {
            let p = s.get(&url).json();
            all.extend(ids(&p));
            match p["next_cursor"].as_str() {
                Some(c) => url = format!("/projects/{pid}/tasks?limit=500&cursor={c}"),
                None => break,
            }
        }
        all
    };
    assert_eq!(all.len(), 120 + added);
    // Every task that existed when paging began was seen; the walk ends at the newest.
    assert!(all[..120].iter().all(|id| unique.contains(id)));
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ascending, no gaps in order"
    );
}

#[test]
fn events_feed_and_stats() {
    let s = TestServer::start();
    let pid = s.project("feed");
    let t = s
        .post(&format!("/projects/{pid}/tasks"), &json!({"title": "x"}))
        .json();
    let id = t["id"].as_i64().expect("id");
    s.patch(
        &format!("/tasks/{id}"),
        &json!({"status": "completed", "title": "y"}),
    );
    s.post(&format!("/projects/{pid}/tasks"), &json!({"title": "z"}));
    s.call("DELETE", &format!("/tasks/{id}"), None);
    let feed = s.get(&format!("/projects/{pid}/events")).json();
    let items = feed["items"].as_array().expect("items");
    let kinds: Vec<&str> = items
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds,
        vec!["created", "created", "updated", "created", "deleted"]
    );
    assert_eq!(
        items[2]["changes"],
        json!({"status": "completed", "title": "y"})
    );
    assert_eq!(items[2]["actor"], "harness");
    assert_eq!(items[2]["task_id"], id);
    let after = items[1]["id"].as_i64().expect("id");
    let page = s
        .get(&format!("/projects/{pid}/events?after={after}&limit=2"))
        .json();
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    assert_eq!(page["items"][0]["type"], "updated");
    let next = page["next_cursor"].as_str().expect("more");
    let rest = s
        .get(&format!("/projects/{pid}/events?after={next}"))
        .json();
    assert_eq!(rest["items"][0]["type"], "deleted");
    assert!(rest["next_cursor"].is_null());

    let more = json!([{"title": "a"}, {"title": "b", "status": "completed"}, {"title": "c", "status": "failed"}]);
    s.post(&format!("/projects/{pid}/tasks"), &more);
    let st = s.get(&format!("/projects/{pid}/stats")).json();
    assert_eq!(st["by_status"]["pending"], 2);
    assert_eq!(st["by_status"]["completed"], 1);
    assert_eq!(st["by_status"]["failed"], 1);
    assert_eq!(st["by_status"]["in_progress"], 0);
    assert_eq!(st["total"], 4);
    assert_eq!(st["completed_last_hour"], 1);
    assert!(st["oldest_pending_age_seconds"].as_i64().expect("age") >= 0);
    assert_eq!(s.get("/projects/999/stats").status, 404);
}

#[test]
fn all_stats_in_one_request_equal_each_projects_stats() {
    // Issue #19: the dashboard's overview is one request, not one per project.
    let s = TestServer::start();
    let a = s.project("a");
    let b = s.project("b");
    let tasks: Vec<Value> = (0..5).map(|i| json!({"title": format!("t{i}")})).collect();
    assert_eq!(
        s.post(&format!("/projects/{a}/tasks"), &json!(tasks))
            .status,
        201
    );
    assert_eq!(
        s.post(&format!("/projects/{b}/tasks"), &json!({"title": "x"}))
            .status,
        201
    );
    let claim = json!({"agent": "agent-1", "lease_seconds": 60});
    assert_eq!(
        s.post(&format!("/projects/{a}/tasks/claim"), &claim).status,
        200
    );
    let all = s.get("/stats");
    assert_eq!(all.status, 200, "{}", all.text());
    let items = all.json()["items"].as_array().cloned().expect("items");
    assert_eq!(items.len(), 2);
    for (item, pid) in items.iter().zip([a, b]) {
        let one = s.get(&format!("/projects/{pid}/stats")).json();
        assert_eq!(item["project_id"], pid);
        assert_eq!(item["by_status"], one["by_status"]);
        assert_eq!(item["total"], one["total"]);
    }
    assert_eq!(items[0]["by_status"]["in_progress"], 1);
    assert_eq!(items[0]["by_status"]["pending"], 4);
}
