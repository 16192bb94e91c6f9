use serde_json::json;

use crate::harness::TestServer;

#[test]
fn project_lifecycle() {
    let s = TestServer::start();
    let r = s.post(
        "/projects",
        &json!({"name": "alpha", "description": "first"}),
    );
    assert_eq!(r.status, 201);
    let p = r.json();
    let id = p["id"].as_i64().expect("id");
    assert_eq!(
        r.header("location"),
        Some(format!("/projects/{id}").as_str())
    );
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(p["status"], "active");
    for k in ["name", "description", "created_at", "updated_at"] {
        assert!(p[k].is_string(), "{k}");
    }
    let got = s.get(&format!("/projects/{id}"));
    assert_eq!(got.json()["name"], "alpha");
    let up = s.patch(&format!("/projects/{id}"), &json!({"status": "archived"}));
    assert_eq!(up.status, 200);
    assert_eq!(up.json()["status"], "archived");
    assert_eq!(up.header("etag"), Some("\"2\""));
    // Filter by status
    s.project("beta");
    let archived = s.get("/projects?status=archived").json();
    assert_eq!(archived["items"].as_array().expect("items").len(), 1);
    // Delete takes tasks and events with it.
    let t = s
        .post(&format!("/projects/{id}/tasks"), &json!({"title": "x"}))
        .json();
    assert_eq!(
        s.call("DELETE", &format!("/projects/{id}"), None).status,
        204
    );
    assert_eq!(s.get(&format!("/projects/{id}")).status, 404);
    assert_eq!(s.get(&format!("/tasks/{}", t["id"])).status, 404);
    assert_eq!(s.get(&format!("/projects/{id}/events")).status, 404);
}

#[test]
fn project_list_pages_with_a_cursor() {
    let s = TestServer::start();
    for i in 0..7 {
        s.project(&format!("p{i}"));
    }
    let mut seen = Vec::new();
    let mut url = "/projects?limit=3".to_string();
    loop {
        let page = s.get(&url).json();
        for p in page["items"].as_array().expect("items") {
            seen.push(p["id"].as_i64().expect("id"));
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/projects?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
}

#[test]
fn stale_if_match_on_project_is_412() {
    let s = TestServer::start();
    let id = s.project("v");
    let path = format!("/projects/{id}");
    let ok = s.call_with(
        "PATCH",
        &path,
        Some(&json!({"name": "w"})),
        &[("If-Match", "\"1\"")],
    );
    assert_eq!(ok.status, 200);
    let stale = s.call_with(
        "PATCH",
        &path,
        Some(&json!({"name": "x"})),
        &[("If-Match", "\"1\"")],
    );
    assert_eq!(
        (stale.status, stale.code()),
        (412, "precondition_failed".into())
    );
    let del = s.call_with("DELETE", &path, None, &[("If-Match", "\"1\"")]);
    assert_eq!(del.status, 412);
    assert_eq!(s.get(&path).json()["name"], "w");
}
