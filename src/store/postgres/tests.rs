//! Tests of the PostgreSQL engine against a throwaway PostgreSQL 15 cluster
//! (TESTING.md §g): the same answers as SQLite, claims across instances, the events
//! feed under out-of-order commits, migrations under the advisory lock, and an
//! outage. Without root or the binaries they print SKIPPED, unless CI is set, where
//! they fail.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{Options, Store};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// One postmaster in a temp dir, on a Unix socket there and a free loopback port.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
}

fn as_postgres(args: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .map(|o| {
            if !o.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&o.stderr));
            }
            o.status.success()
        })
        .unwrap_or(false)
}

impl Cluster {
    /// A running cluster, or None (printed SKIPPED) where none can be made.
    pub fn start() -> Option<Cluster> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let bins = std::path::Path::new(BIN).join("initdb").is_file();
        if !root || !bins {
            let why =
                format!("PostgreSQL tests need root and {BIN} (root: {root}, binaries: {bins})");
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dashboard-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert!(Command::new("chown")
            .args(["postgres"])
            .arg(&dir)
            .status()
            .expect("chown")
            .success());
        let data = dir.join("data");
        assert!(as_postgres(&[
            &format!("{BIN}/initdb"),
            "-D",
            data.to_str().expect("utf-8"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let c = Cluster { dir, port };
        assert!(c.ctl("start"), "pg_ctl start");
        Some(c)
    }

    fn ctl(&self, what: &str) -> bool {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-k {} -c listen_addresses=127.0.0.1 -p {}",
            self.dir.display(),
            self.port
        );
        match what {
            "start" => as_postgres(&[
                &format!("{BIN}/pg_ctl"),
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-o",
                &opts,
                "start",
            ]),
            "stop" => as_postgres(&[
                &format!("{BIN}/pg_ctl"),
                "-D",
                data.to_str().expect("utf-8"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ]),
            _ => false,
        }
    }

    /// The cluster's directory (the data directory is `data/` in it).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Turns TLS on with this certificate and key (copied into the data directory,
    /// the key readable by the server only) and waits until new sessions see it.
    pub fn enable_ssl(&self, cert: &std::path::Path, key: &std::path::Path) {
        let data = self.dir.join("data");
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            std::fs::copy(from, data.join(to)).expect("copy");
            assert!(Command::new("chown")
                .arg("postgres")
                .arg(data.join(to))
                .status()
                .expect("chown")
                .success());
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let admin = PgUrl::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        ))
        .expect("url");
        let connector = Connector::new(&admin).expect("connector");
        let mut admin = connector.connect().expect("connect");
        for sql in ["ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"] {
            admin.batch_execute(sql).expect(sql);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let on: String = connector
                .connect()
                .expect("connect")
                .query_one("SHOW ssl", &[])
                .expect("show ssl")
                .get(0);
            if on == "on" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ssl never came on (see {}/log)",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new, empty database and its URL.
    pub fn database(&self, name: &str) -> PgUrl {
        let admin = PgUrl::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        ))
        .expect("url");
        let c = Connector::new(&admin).expect("connector");
        c.connect()
            .expect("connect")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        PgUrl::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        ))
        .expect("url")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.ctl("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn new_task(title: &str, priority: i64, labels: &[&str]) -> NewTask {
    NewTask {
        title: title.into(),
        description: String::new(),
        status: TaskStatus::Pending,
        priority,
        assignee: None,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        metadata: r#"{"b":1,"a":[1.50,"x"]}"#.into(),
        result: None,
        max_attempts: None,
        not_before: None,
        depends_on: vec![],
    }
}

fn project(name: &str, description: &str) -> NewProject {
    NewProject {
        name: name.into(),
        description: description.into(),
        status: ProjectStatus::Active,
        default_max_attempts: 3,
        retry_backoff_seconds: 10,
    }
}

/// The value of a write made without an idempotency key.
pub(super) fn ran<T>(o: Result<Outcome<T>>) -> T {
    match o.expect("write") {
        Outcome::Done(v) => v,
        Outcome::Replay(_) => panic!("a replay without a key"),
    }
}

/// JSON with the clock's fields blanked: two runs differ only in when they ran.
fn norm<T: serde::Serialize>(v: &T) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if (k.ends_with("_at") || k == "timestamp") && !x.is_null() {
                        *x = "T".into();
                    } else if k == "lease_token" {
                        *x = "K".into();
                    } else if k == "oldest_pending_age_seconds" && !x.is_null() {
                        *x = 0.into();
                    } else if k == "changes" {
                        if let Some(l) = x.get_mut("lease_expires_at") {
                            *l = "T".into();
                        }
                    } else {
                        walk(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v).expect("json");
    walk(&mut v);
    v
}

fn q(sort: TaskSort, after: Option<TaskCursor>) -> TaskQuery {
    TaskQuery {
        statuses: vec![],
        assignee: None,
        label: None,
        sort,
        after,
        limit: 2,
    }
}

/// One script of every operation; returns the answers in order.
fn script(s: &dyn Store) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let actor = Some("tester".to_string());
    let p = ran(s.create_project(project("p", "d"), actor.clone(), None));
    out.push(norm(&p));
    let tasks = ran(s.create_tasks(
        p.id,
        vec![
            new_task("a", 1, &["x"]),
            new_task("b", 5, &["x", "y"]),
            new_task("c", 5, &[]),
            new_task("d", 0, &["y"]),
        ],
        actor.clone(),
        None,
    ));
    out.push(norm(&tasks));
    for sort in [TaskSort::CreatedAt, TaskSort::Priority, TaskSort::UpdatedAt] {
        let first = s.list_tasks(p.id, q(sort, None)).expect("list");
        let last = first.items.last().expect("a row");
        let key = match sort {
            TaskSort::Priority => last.priority,
            TaskSort::UpdatedAt => last.updated_at,
            TaskSort::CreatedAt => last.id,
        };
        let cursor = Some(TaskCursor { key, id: last.id });
        let second = s.list_tasks(p.id, q(sort, cursor)).expect("page 2");
        out.push(norm(&(
            &first.items,
            first.more,
            &second.items,
            second.more,
        )));
    }
    let mut filtered = q(TaskSort::CreatedAt, None);
    filtered.label = Some("y".into());
    filtered.statuses = vec![TaskStatus::Pending];
    filtered.limit = 10;
    out.push(norm(&s.list_tasks(p.id, filtered).expect("filtered").items));
    let claim = |labels: &[&str]| Claim {
        agent: "agent-1".into(),
        lease_seconds: 60,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        limit: 1,
    };
    let c1 = ran(s.claim(p.id, claim(&[]), None)).pop().expect("a task");
    out.push(norm(&c1));
    out.push(norm(&ran(s.claim(p.id, claim(&["x"]), None))));
    let agent = |a: &str| LeaseProof::Agent(a.into());
    out.push(norm(&ran(s.heartbeat(
        c1.id,
        None,
        agent("agent-1"),
        30,
        None,
    ))));
    out.push(
        format!(
            "{:?}",
            s.heartbeat(c1.id, None, agent("other"), 30, None).err()
        )
        .into(),
    );
    out.push(
        format!(
            "{:?}",
            s.update_task(c1.id, None, TaskPatch::default(), None, None, None)
                .err()
        )
        .into(),
    );
    let patch = TaskPatch {
        status: Some(TaskStatus::Completed),
        result: Some(Some(r#"{"ok":true}"#.into())),
        labels: Some(vec!["z".into()]),
        ..Default::default()
    };
    out.push(
        format!(
            "{:?}",
            s.update_task(c1.id, None, patch.clone(), Some(1), None, actor.clone())
                .err()
        )
        .into(),
    );
    out.push(norm(
        &s.update_task(c1.id, Some(p.id), patch, Some(2), None, actor.clone())
            .expect("patch"),
    ));
    out.push(
        format!(
            "{:?}",
            s.delete_task(tasks[3].id, None, Some(9), None, actor.clone())
                .err()
        )
        .into(),
    );
    s.delete_task(tasks[3].id, None, Some(1), None, actor.clone())
        .expect("delete");
    out.push(format!("{:?}", s.get_task(tasks[3].id, None).err()).into());
    out.push(format!("{:?}", s.get_task(tasks[0].id, Some(p.id + 1)).err()).into());
    out.push(norm(&s.stats(p.id).expect("stats")));
    out.push(norm(&s.count_by_status().expect("counts")));
    let ev = s.list_events(p.id, 0, 100).expect("events");
    out.push(norm(&ev.items));
    out.push(norm(
        &s.list_events(p.id, ev.items[3].id, 2)
            .expect("events")
            .items,
    ));
    let pp = s
        .update_project(
            p.id,
            ProjectPatch {
                status: Some(ProjectStatus::Archived),
                ..Default::default()
            },
            Some(1),
            actor.clone(),
        )
        .expect("project patch");
    out.push(norm(&pp));
    out.push(norm(
        &s.list_projects(Some(ProjectStatus::Archived), 0, 10)
            .expect("projects")
            .items,
    ));
    // The queue (SPEC §5a): a batch claim, complete and fail with tokens, stale
    // tokens refused, dependencies blocked by a failure, the queue's stats.
    let q = ran(s.create_project(
        NewProject {
            default_max_attempts: 2,
            ..project("q", "")
        },
        actor.clone(),
        None,
    ));
    let mut chain = vec![new_task("head", 9, &[])];
    chain.push(new_task("other", 1, &[]));
    let heads = ran(s.create_tasks(q.id, chain, actor.clone(), None));
    let mut dependent = new_task("dep", 0, &[]);
    dependent.depends_on = vec![heads[0].id];
    let dep = ran(s.create_tasks(q.id, vec![dependent], actor.clone(), None));
    out.push(norm(&dep));
    let batch = ran(s.claim(
        q.id,
        Claim {
            limit: 5,
            ..claim(&[])
        },
        None,
    ));
    out.push(norm(&batch));
    let token = |t: &Task| t.lease_token.clone().expect("a token");
    let failure = |t: &Task, retry: bool| Failure {
        token: token(t),
        error: Some(r#"{"e":1}"#.into()),
        retry,
    };
    out.push(
        format!(
            "{:?}",
            s.complete(batch[0].id, None, "stale".into(), None, None)
                .err()
        )
        .into(),
    );
    out.push(norm(&ran(s.fail(
        batch[0].id,
        None,
        failure(&batch[0], false),
        None,
    ))));
    out.push(norm(&s.get_task(dep[0].id, None).expect("blocked")));
    out.push(norm(&ran(s.complete(
        batch[1].id,
        Some(q.id),
        token(&batch[1]),
        Some(r#"{"ok":1}"#.into()),
        None,
    ))));
    let mut st = s.stats(q.id).expect("stats");
    st.oldest_pending_age_seconds = None;
    out.push(norm(&st));
    out.push(norm(&s.list_events(q.id, 0, 100).expect("events").items));
    let k = s
        .create_key("k".into(), Role::Write, "db_abc".into(), [7; 32])
        .expect("key");
    out.push(norm(&k));
    out.push(norm(&s.find_key([7; 32]).expect("find")));
    out.push(norm(&s.revoke_key(k.id).expect("revoke")));
    out.push(norm(&s.find_key([7; 32]).expect("find")));
    out.push(norm(&s.list_keys().expect("keys")));
    out.push(format!("{:?}", s.revoke_key(99).err()).into());
    s.delete_project(p.id, None).expect("delete project");
    out.push(format!("{:?}", s.list_events(p.id, 0, 10).err()).into());
    out
}

#[test]
fn answers_as_sqlite_does() {
    let Some(c) = Cluster::start() else { return };
    let pg = PgStore::open(&c.database("same"), 4).expect("open pg");
    let dir = std::env::temp_dir().join(format!("dashboard-pg-same-{}", std::process::id()));
    let lite = SqliteStore::open(&dir.join("t.db"), &Options::default()).expect("sqlite");
    let (a, b) = (script(&lite), script(&pg));
    let _ = lite.close();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "answer {i} differs");
    }
    assert_eq!(pg.backend(), "postgres");
    assert!(pg.size_bytes().is_some_and(|n| n > 0));
}

/// What a store answers about rows holding words this build does not know (written
/// by hand, or by a newer version sharing the database): `pid`'s extra event, whose
/// type is shown as stored, and `frozen`'s status, which fails every read of it.
fn stray_answers(s: &dyn Store, pid: i64, frozen: i64) -> Vec<serde_json::Value> {
    let other = |r: Result<String>| match r {
        Err(StoreError::Other(m)) if m.contains("\"frozen\"") => "Other(frozen)".to_string(),
        r => format!("unexpected: {r:?}"),
    };
    let events = s.list_events(pid, 0, 10).expect("events");
    vec![
        norm(&events.items),
        other(s.get_project(frozen).map(|p| format!("{p:?}"))).into(),
        other(
            s.list_projects(None, 0, 10)
                .map(|p| format!("{:?}", p.items)),
        )
        .into(),
        other(
            s.claim(
                frozen,
                Claim {
                    agent: "a".into(),
                    lease_seconds: 60,
                    labels: vec![],
                    limit: 1,
                },
                None,
            )
            .map(|o| format!("{:?}", o.done())),
        )
        .into(),
        norm(&s.get_project(pid).expect("a known project reads")),
    ]
}

/// An unknown event type passes through both engines as stored (so a feed never
/// stalls on it); an unknown project status is an `Other` error (a logged 500), in
/// both engines alike.
#[test]
fn unknown_stored_words_answer_alike() {
    let Some(c) = Cluster::start() else { return };
    let pg = PgStore::open(&c.database("stray"), 4).expect("open pg");
    let dir = std::env::temp_dir().join(format!("dashboard-pg-stray-{}", std::process::id()));
    let db = dir.join("t.db");
    let lite = SqliteStore::open(&db, &Options::default()).expect("sqlite");
    const EVENT: &str = "INSERT INTO events (project_id, task_id, type, actor, changes, created_at)
         VALUES ($1, NULL, 'renamed', 'someone', '{\"to\":\"x\"}', 0)";
    const FREEZE: &str = "UPDATE projects SET status = 'frozen' WHERE id = $1";
    let mut answers = Vec::new();
    for s in [&lite as &dyn Store, &pg] {
        let p = ran(s.create_project(project("p", ""), None, None));
        let f = ran(s.create_project(project("f", ""), None, None));
        if s.backend() == "sqlite" {
            let c = rusqlite::Connection::open(&db).expect("open");
            c.execute(&EVENT.replace('$', "?"), [p.id]).expect("event");
            c.execute(&FREEZE.replace('$', "?"), [f.id])
                .expect("freeze");
        } else {
            pg.run(|tx| {
                tx.execute(EVENT, &[&p.id])?;
                tx.execute(FREEZE, &[&f.id])
            })
            .expect("raw rows");
        }
        answers.push(stray_answers(s, p.id, f.id));
    }
    let _ = lite.close();
    let _ = std::fs::remove_dir_all(&dir);
    let a = &answers[0];
    assert_eq!(a, &answers[1]);
    let types: Vec<&str> = a[0]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["created", "renamed"]);
    assert_eq!(a[0][1]["changes"], serde_json::json!({"to": "x"}));
    for (i, x) in a[1..4].iter().enumerate() {
        assert_eq!(x, "Other(frozen)", "answer {}", i + 1);
    }
    assert_eq!(a[4]["status"], "active");
}

#[test]
fn two_instances_never_claim_the_same_task() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("claims");
    let a = Arc::new(PgStore::open(&url, 4).expect("a"));
    let b = Arc::new(PgStore::open(&url, 4).expect("b"));
    let p = ran(a.create_project(project("p", ""), None, None));
    let n = 60;
    let batch = (0..n)
        .map(|i| new_task(&format!("t{i}"), i % 3, &[]))
        .collect();
    ran(a.create_tasks(p.id, batch, None, None));
    let mut handles = Vec::new();
    for (i, s) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        handles.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            let claim = Claim {
                agent: format!("agent-{i}"),
                lease_seconds: 60,
                labels: vec![],
                limit: 1 + i % 3,
            };
            loop {
                let batch = ran(s.claim(p.id, claim.clone(), None));
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.iter().map(|t| t.id));
            }
            got
        }));
    }
    let mut all: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, n as usize, "every task claimed once");
    assert_eq!(all.len(), n as usize, "no task claimed twice");
}

/// SPEC §10: A takes its event id first and commits late; B writes meanwhile. B must
/// not get a higher id that is visible before A's: a reader following `after=`
/// throughout sees every event exactly once.
#[test]
fn events_feed_never_skips_out_of_order_commits() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("feed");
    let store = Arc::new(PgStore::open(&url, 4).expect("open"));
    let p = ran(store.create_project(project("p", ""), None, None));
    let (tx_ready, rx_ready) = std::sync::mpsc::channel();
    let slow = {
        let store = store.clone();
        std::thread::spawn(move || {
            store
                .run(|tx| {
                    events::record(
                        tx,
                        p.id,
                        &[(None, EventKind::Updated, Some("slow"), "{}".into())],
                        1,
                    )?;
                    tx_ready.send(()).expect("signal");
                    std::thread::sleep(Duration::from_millis(600));
                    Ok(())
                })
                .expect("slow write")
        })
    };
    rx_ready.recv().expect("slow writer started");
    let fast = {
        let store = store.clone();
        std::thread::spawn(move || {
            // Task inserts take only a KEY SHARE lock on the project row, as the
            // slow writer's event does: nothing but the event lock orders them.
            for i in 0..3 {
                let t = vec![new_task(&format!("t{i}"), 0, &[])];
                ran(store.create_tasks(p.id, t, Some("fast".into()), None));
            }
        })
    };
    let mut seen = Vec::new();
    let mut after = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = slow.is_finished() && fast.is_finished();
        for e in store.list_events(p.id, after, 100).expect("read").items {
            after = e.id;
            seen.push((e.id, e.actor));
        }
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    slow.join().expect("slow");
    fast.join().expect("fast");
    let all: Vec<(i64, Option<String>)> = store
        .list_events(p.id, 0, 100)
        .expect("all")
        .items
        .into_iter()
        .map(|e| (e.id, e.actor))
        .collect();
    assert_eq!(all.len(), 5, "created + slow + 3 fast: {all:?}");
    assert_eq!(
        seen, all,
        "the reader following after= saw every event once"
    );
    assert_eq!(
        all[1].1.as_deref(),
        Some("slow"),
        "the slow writer took its id first"
    );
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("mig");
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url, 1).map(|_| ()))
        })
        .collect();
    for h in opens {
        h.join()
            .expect("thread")
            .expect("open while others migrate");
    }
    let s = PgStore::connect(&url, 1).expect("connect");
    let rows = s.run(migrate::status).expect("status");
    assert!(rows.iter().all(|m| m.applied_at.is_some()));
    let n: i64 = s
        .run(|tx| {
            Ok(tx
                .query_one("SELECT count(*) FROM schema_migrations", &[])?
                .get(0))
        })
        .expect("count");
    // One row a migration (versions may skip numbers between branches' migrations).
    assert_eq!(n as usize, migrate::MIGRATIONS.len());
    s.run(|tx| tx.batch("INSERT INTO schema_migrations VALUES (999, 'future', 0)"))
        .expect("future");
    match PgStore::open(&url, 1) {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("999"), "{m}"),
        other => panic!("a newer schema must be refused: {:?}", other.err()),
    }
}

/// A session PostgreSQL ends for idling inside a transaction (this process was
/// frozen between two statements: SIGSTOP, a paused VM) is a lost connection: 503
/// with Retry-After, not a 500 (it answered 500 `internal` before).
#[test]
fn a_session_ended_for_idling_in_a_transaction_is_unavailable() {
    let Some(c) = Cluster::start() else { return };
    let store = PgStore::open(&c.database("idle_tx"), 1).expect("open");
    let got = store.run(|tx| {
        tx.batch("SET LOCAL idle_in_transaction_session_timeout = '100ms'")?;
        std::thread::sleep(Duration::from_millis(400));
        tx.batch("SELECT 1")
    });
    assert!(
        matches!(got, Err(StoreError::Unavailable(_))),
        "expected Unavailable: {got:?}"
    );
    // The broken connection was dropped: the next operation gets a fresh one.
    store.run(|tx| tx.batch("SELECT 1")).expect("after");
}

/// An instance frozen inside a transaction (SIGSTOP, a paused VM) holds what that
/// transaction locked, here the project's event lock, until PostgreSQL ends its
/// session: after 5 s idle (connect.rs), not 60, so the project's writers on other
/// instances are back within seconds.
#[test]
fn a_writer_stalled_in_a_transaction_holds_its_project_for_seconds() {
    let Some(c) = Cluster::start() else { return };
    let store = Arc::new(PgStore::open(&c.database("stall"), 2).expect("open"));
    let p = ran(store.create_project(project("p", ""), None, None));
    let (locked, is_locked) = std::sync::mpsc::channel();
    let stalled = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.run(|tx| {
                events::record(
                    tx,
                    p.id,
                    &[(None, EventKind::Updated, Some("stalled"), "{}".into())],
                    1,
                )?;
                let _ = locked.send(());
                std::thread::sleep(Duration::from_secs(9));
                tx.batch("SELECT 1")
            })
        })
    };
    is_locked.recv().expect("the stalled writer took the lock");
    let t = Instant::now();
    loop {
        match store.create_tasks(p.id, vec![new_task("t", 0, &[])], None, None) {
            Ok(_) => break,
            Err(StoreError::Busy) => assert!(t.elapsed() < Duration::from_secs(8), "still busy"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the project's writes waited {:?}",
        t.elapsed()
    );
    let ended = stalled.join().expect("stalled thread");
    assert!(
        matches!(ended, Err(StoreError::Unavailable(_))),
        "the stalled session was ended: {ended:?}"
    );
}

#[test]
fn an_outage_answers_unavailable_and_recovers() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("outage");
    let s = PgStore::open(&url, 2).expect("open");
    let p = ran(s.create_project(project("p", ""), None, None));
    assert!(c.ctl("stop"));
    for _ in 0..3 {
        assert!(matches!(
            s.get_project(p.id),
            Err(StoreError::Unavailable(_))
        ));
    }
    assert!(matches!(s.ping(), Err(StoreError::Unavailable(_))));
    assert!(
        s.writer_alive(Duration::from_millis(100)).is_ok(),
        "the watchdog keeps pinging"
    );
    assert!(c.ctl("start"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s.get_project(p.id) {
            Ok(got) => {
                assert_eq!(got.id, p.id);
                break;
            }
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("not back after the restart: {e}"),
        }
    }
    assert!(s.ping().is_ok());
}
