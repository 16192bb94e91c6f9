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

/// Rows holding words this build does not know (written by hand, or by a newer
/// version sharing the database): an event's type is shown as stored, so the feed
/// and its stream go on; a project's status is a 500 whose cause is logged, since
/// claims and patches act on it.
#[test]
fn unknown_stored_words_are_shown_or_refused_not_guessed() {
    let s = TestServer::start();
    let pid = s.project("known");
    let frozen = s.project("frozen");
    const EVENT: &str = "INSERT INTO events (project_id, task_id, type, actor, changes, created_at)
         VALUES ($1, NULL, 'renamed', 'someone', '{\"to\":\"x\"}', 0)";
    const FREEZE: &str = "UPDATE projects SET status = 'frozen' WHERE id = $1";
    match crate::harness::database_url(&s.db) {
        Some(url) => {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            c.execute(EVENT, &[&pid]).expect("event");
            c.execute(FREEZE, &[&frozen]).expect("freeze");
        }
        None => {
            let c = rusqlite::Connection::open(&s.db).expect("open");
            c.execute(&EVENT.replace('$', "?"), [pid]).expect("event");
            c.execute(&FREEZE.replace('$', "?"), [frozen])
                .expect("freeze");
        }
    }
    let r = s.get(&format!("/projects/{pid}/events"));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(
        body.contains(r#""type":"renamed","actor":"someone","changes":{"to":"x"}"#),
        "{body}"
    );
    assert_eq!(s.get(&format!("/projects/{pid}")).status, 200);
    for path in [format!("/projects/{frozen}"), "/projects".to_string()] {
        let r = s.get(&path);
        assert_eq!(
            (r.status, r.code()),
            (500, "internal".to_string()),
            "{path}"
        );
        assert!(
            !r.text().contains("frozen"),
            "the cause is not sent: {}",
            r.text()
        );
    }
    // The cause, in the JSON log line of the failed request.
    let logged = |s: &TestServer| {
        s.log_text().lines().any(|l| {
            l.contains("request failed") && l.contains(r#"unknown project status \"frozen\""#)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !logged(&s) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(logged(&s), "the cause is logged: {}", s.log_text());
}
