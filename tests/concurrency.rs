use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use crate::harness::TestServer;

#[test]
fn fifty_concurrent_writers_each_get_their_own_201() {
    let s = Arc::new(TestServer::start());
    let pid = s.project("group-commit");
    let writers: Vec<_> = (0..50)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let r = s.post(
                            &format!("/projects/{pid}/tasks"),
                            &json!({"title": format!("w{w}-{i}")}),
                        );
                        assert_eq!(r.status, 201, "{}", r.text());
                        let t = r.json();
                        assert_eq!(t["title"], format!("w{w}-{i}").as_str());
                        t["id"].as_i64().expect("id")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<i64> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        500,
        "every writer got its own row"
    );
    let mut listed = HashSet::new();
    let mut url = format!("/projects/{pid}/tasks?limit=500");
    loop {
        let p = s.get(&url).json();
        for t in p["items"].as_array().expect("items") {
            listed.insert(t["id"].as_i64().expect("id"));
        }
        match p["next_cursor"].as_str() {
            Some(c) => url = format!("/projects/{pid}/tasks?limit=500&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        listed,
        ids.into_iter().collect::<HashSet<_>>(),
        "every acknowledged row is there"
    );
}

#[test]
fn a_failing_write_does_not_fail_its_batch_neighbours() {
    // Many good creates race many creates into a missing project (404 inside the
    // writer's transaction): the bad ones roll back alone.
    let s = Arc::new(TestServer::start());
    let pid = s.project("neighbours");
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let target = if i % 2 == 0 { pid } else { 999_999 };
                let r = s.post(
                    &format!("/projects/{target}/tasks"),
                    &json!({"title": format!("n{i}")}),
                );
                (i, r.status)
            })
        })
        .collect();
    for t in threads {
        let (i, status) = t.join().expect("thread");
        assert_eq!(status, if i % 2 == 0 { 201 } else { 404 }, "request {i}");
    }
    let list = s.get(&format!("/projects/{pid}/tasks?limit=500")).json();
    assert_eq!(list["items"].as_array().expect("items").len(), 20);
}
