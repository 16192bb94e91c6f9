//! A database made before the work queue (issue #15: "a database from today's main
//! migrates and keeps every row"): SQLite at schema 4, PostgreSQL at schema 2, built
//! from the migrations of that time and filled as the old binary filled them; then the
//! real binary starts on it, migrates in place, and every row answers through the API
//! as it was, with the queue's defaults, and the queue works on the old rows.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::harness::{self, TestServer};

/// The schema before the queue: (version, name, SQL), as the migrators recorded them.
const SQLITE_OLD: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../src/store/sqlite/migrations/0001_init.sql"),
    ),
    (
        2,
        "partial_indexes",
        include_str!("../src/store/sqlite/migrations/0002_partial_indexes.sql"),
    ),
    (
        3,
        "task_counts",
        include_str!("../src/store/sqlite/migrations/0003_task_counts.sql"),
    ),
    (
        4,
        "completion_buckets",
        include_str!("../src/store/sqlite/migrations/0004_completion_buckets.sql"),
    ),
];
const POSTGRES_OLD: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../src/store/postgres/migrations/0001_init.sql"),
    ),
    (
        2,
        "task_counts",
        include_str!("../src/store/postgres/migrations/0002_task_counts.sql"),
    ),
];

const STATUSES: [&str; 6] = [
    "pending",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
    "blocked",
];

/// One old task: (project, title, status, priority, labels).
fn old_tasks() -> Vec<(i64, String, &'static str, i64, Vec<String>)> {
    (0..600i64)
        .map(|i| {
            let labels = match i % 3 {
                0 => vec![],
                1 => vec!["gpu".to_string()],
                _ => vec!["gpu".to_string(), format!("l{}", i % 7)],
            };
            (
                1 + i % 3,
                format!("old task {i}"),
                STATUSES[(i % 6) as usize],
                i % 5,
                labels,
            )
        })
        .collect()
}

/// The rows, as SQL both engines take (timestamps in ms; leases of old in-progress
/// tasks long expired; one `created` event per task, as the old binary wrote).
fn old_rows_sql(now: i64) -> String {
    let mut sql = String::new();
    for p in 1..=3 {
        sql.push_str(&format!(
            "INSERT INTO projects (name, description, created_at, updated_at)
             VALUES ('old project {p}', 'from before the queue', {now}, {now});\n"
        ));
    }
    for (n, (pid, title, status, priority, labels)) in old_tasks().into_iter().enumerate() {
        let id = n as i64 + 1;
        let at = now - 86_400_000 + id * 1000;
        let (lease, started, completed, assignee) = match status {
            "in_progress" => (
                format!("{}", now - 3_600_000),
                format!("{at}"),
                "NULL".into(),
                "'agent-old'",
            ),
            "completed" | "failed" => (
                "NULL".into(),
                format!("{at}"),
                format!("{}", at + 500),
                "'agent-old'",
            ),
            _ => ("NULL".into(), "NULL".into(), "NULL".into(), "NULL"),
        };
        let label_json = serde_json::to_string(&labels).expect("labels");
        sql.push_str(&format!(
            "INSERT INTO tasks (id, project_id, title, status, priority, assignee, labels,
                                metadata, lease_expires_at, created_at, updated_at,
                                started_at, completed_at)
             VALUES ({id}, {pid}, '{title}', '{status}', {priority}, {assignee}, '{label_json}',
                     '{{\"n\":{id}}}', {lease}, {at}, {at}, {started}, {completed});\n"
        ));
        for l in &labels {
            sql.push_str(&format!(
                "INSERT INTO task_labels (project_id, label, task_id) VALUES ({pid}, '{l}', {id});\n"
            ));
        }
        sql.push_str(&format!(
            "INSERT INTO events (project_id, task_id, type, actor, changes, created_at)
             VALUES ({pid}, {id}, 'created', 'old', '{{}}', {at});\n"
        ));
    }
    sql
}

/// Builds the old database where the harness's server will look for it.
fn make_old_database(db: &std::path::Path, now: i64) {
    let rows = old_rows_sql(now);
    if harness::postgres() {
        let url = harness::database_url(db).expect("a PostgreSQL database");
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let mut tx = c.transaction().expect("begin");
        tx.batch_execute(
            "CREATE TABLE schema_migrations (
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .expect("schema_migrations");
        // The rows go in after the first migration, as an old binary's writes did, so
        // the second one counts them as it did then.
        for (i, (version, name, sql)) in POSTGRES_OLD.iter().enumerate() {
            tx.batch_execute(sql).expect(name);
            tx.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                &[version, name, &now],
            )
            .expect("record");
            if i == 0 {
                tx.batch_execute(&rows).expect("old rows");
                tx.batch_execute("SELECT setval(pg_get_serial_sequence('tasks', 'id'), 600)")
                    .expect("sequence");
            }
        }
        tx.commit().expect("commit");
    } else {
        std::fs::create_dir_all(db.parent().expect("dir")).expect("mkdir");
        let c = rusqlite::Connection::open(db).expect("open");
        c.execute_batch(
            "CREATE TABLE schema_migrations (
               version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .expect("schema_migrations");
        for (i, (version, name, sql)) in SQLITE_OLD.iter().enumerate() {
            c.execute_batch(sql).expect(name);
            c.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, ?3)",
                rusqlite::params![version, name, now],
            )
            .expect("record");
            c.execute_batch(&format!("PRAGMA user_version = {version}"))
                .expect("version");
            if i == 0 {
                c.execute_batch(&format!("BEGIN; {rows} COMMIT;"))
                    .expect("old rows");
            }
        }
    }
}

/// Every task of `pid` through the list, by id.
fn all_tasks(s: &TestServer, pid: i64) -> HashMap<i64, Value> {
    harness::all_tasks(s, pid)
        .into_iter()
        .map(|t| (t["id"].as_i64().expect("id"), t))
        .collect()
}

#[test]
fn a_database_from_before_the_queue_migrates_and_keeps_every_row() {
    let dir = harness::temp_dir("upgrade");
    let db = dir.join("data").join("dashboard.db");
    let now = dashboard_backend::clock::now_ms();
    make_old_database(&db, now);
    let s = TestServer::spawn(dir, db, None, &[("AUTH_DISABLED", "true")]);
    let projects = s.get("/projects").json();
    let names: Vec<&str> = projects["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names.len(), 3, "{projects}");
    for p in projects["items"].as_array().expect("items") {
        assert_eq!(p["status"], "active");
        assert_eq!(p["description"], "from before the queue");
        assert_eq!(p["default_max_attempts"], 3, "the queue's default: {p}");
    }
    let want = old_tasks();
    for pid in 1..=3i64 {
        let got = all_tasks(&s, pid);
        let mine: Vec<_> = want
            .iter()
            .enumerate()
            .filter(|(_, t)| t.0 == pid)
            .collect();
        assert_eq!(got.len(), mine.len(), "project {pid}: every row");
        let mut by_status: HashMap<String, i64> = HashMap::new();
        for (n, (_, title, status, priority, labels)) in mine {
            let id = n as i64 + 1;
            let t = got.get(&id).unwrap_or_else(|| panic!("task {id} lost"));
            // The old in-progress tasks' leases ran out long ago: the sweeper may
            // already have put them back (one attempt lost, claimable at once).
            let now_status = t["status"].as_str().expect("status");
            if *status == "in_progress" {
                assert!(matches!(now_status, "in_progress" | "pending"), "{t}");
            } else {
                assert_eq!(now_status, *status, "{t}");
            }
            *by_status.entry(status.to_string()).or_default() += 1;
            assert_eq!(t["title"], *title);
            assert_eq!(t["priority"], *priority);
            assert_eq!(t["labels"], json!(labels));
            assert_eq!(t["metadata"], json!({"n": id}));
            assert_eq!(t["project_id"], pid);
            assert_eq!(
                (t["attempt"].clone(), t["max_attempts"].clone()),
                (json!(0), json!(3))
            );
            assert_eq!(t["depends_on"], json!([]), "{t}");
            assert!(t["not_before"].is_null(), "{t}");
        }
        // The counters the old binary kept are the counts of the rows, by status
        // (an old in-progress task counts where it is now).
        let stats = s.get(&format!("/projects/{pid}/stats")).json();
        let swept = harness::full_count(&s, pid);
        for status in STATUSES {
            let counted = stats["by_status"][status].as_i64().unwrap_or(0);
            assert_eq!(
                counted,
                swept.get(status).copied().unwrap_or(0),
                "{status}: {stats}"
            );
        }
        let old_in_progress = by_status.get("in_progress").copied().unwrap_or(0);
        let now_in_flight = ["in_progress", "pending"]
            .iter()
            .map(|s| swept.get(*s).copied().unwrap_or(0))
            .sum::<i64>();
        assert_eq!(
            now_in_flight,
            old_in_progress + by_status.get("pending").copied().unwrap_or(0)
        );
        // The old events are still the project's feed.
        let events = s.get(&format!("/projects/{pid}/events?limit=500")).json();
        let created = events["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| e["type"] == "created" && e["actor"] == "old")
            .count();
        assert_eq!(created, 200, "project {pid}'s old events");
    }
    // The label index came along: 400 tasks carry "gpu", a third of them in project 1.
    let gpu = s.get("/projects/1/tasks?label=gpu&limit=500").json();
    let want_gpu = want
        .iter()
        .filter(|t| t.0 == 1 && t.4.contains(&"gpu".to_string()))
        .count();
    assert_eq!(gpu["items"].as_array().expect("items").len(), want_gpu);
    // The queue works on the old rows: the highest-priority oldest pending task of
    // project 1 (or an old in-progress one put back) is claimed with a token and
    // completes; a new task gets the next id.
    let c = harness::claim(&s, 1, &json!({"agent": "new"}));
    assert_eq!(c.status, 200, "{}", c.text());
    let c = c.json();
    assert_eq!(c["attempt"].as_i64().map(|a| a >= 1), Some(true), "{c}");
    let token = c["lease_token"].as_str().expect("a lease token");
    let done = s.post(
        &format!("/tasks/{}/complete", c["id"]),
        &json!({"lease_token": token}),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let fresh = harness::task(&s, 1, &json!({"title": "new"}));
    assert!(fresh["id"].as_i64() > Some(600), "{fresh}");
    let status = s.cli(&["migrate", "status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        !text.contains("pending"),
        "every migration applied:\n{text}"
    );
}
