//! `EXPLAIN QUERY PLAN` of the hot queries: claim, list by status, list by assignee,
//! list by label and the events feed must use an index, never scan all of `tasks`.

use super::*;

fn store_conn() -> (tempdir::Dir, Connection) {
    let dir = tempdir::Dir::new("plan");
    let path = dir.0.join("plan.db");
    let conn = open_writer_conn(&path, crate::store::Synchronous::Normal).expect("open");
    migrate::apply(&conn).expect("migrate");
    (dir, conn)
}

/// A throwaway directory under the target dir, removed on drop.
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("dbk-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("mkdir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn plan(conn: &Connection, sql: &str, nparams: usize) -> String {
    let args: Vec<rusqlite::types::Value> = (0..nparams).map(|_| 1i64.into()).collect();
    let mut st = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("prepare");
    let rows = st
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .expect("query");
    rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("\n")
}

/// Fails if the plan reads `tasks` without an index.
fn assert_indexed(what: &str, plan: &str) {
    for line in plan.lines() {
        let full_scan = line.contains("SCAN tasks") && !line.contains("USING");
        assert!(!full_scan, "{what} scans the whole tasks table:\n{plan}");
    }
    assert!(
        plan.contains("USING INDEX")
            || plan.contains("USING COVERING INDEX")
            || plan.contains("PRIMARY KEY"),
        "{what} uses no index:\n{plan}"
    );
}

fn query(
    statuses: Vec<TaskStatus>,
    assignee: bool,
    label: bool,
    sort: TaskSort,
    after: bool,
) -> TaskQuery {
    TaskQuery {
        statuses,
        assignee: assignee.then(|| "a".into()),
        label: label.then(|| "l".into()),
        sort,
        after: after.then_some(TaskCursor { key: 1, id: 1 }),
        limit: 50,
    }
}

/// Parameters a statement binds: `?N` style counts its highest N, bare `?` each one.
fn count_params(sql: &str) -> usize {
    let numbered = (1..=9).rev().find(|n| sql.contains(&format!("?{n}")));
    numbered.unwrap_or_else(|| sql.matches('?').count())
}

#[test]
fn claim_uses_indexes() {
    let (_d, conn) = store_conn();
    for nlabels in [0, 2] {
        let sql = tasks::claim_candidate_sql(nlabels);
        let p = plan(&conn, &sql, 3 + nlabels);
        assert_indexed(&format!("claim with {nlabels} labels"), &p);
    }
    // Claimable tasks only (pending, due, no dependency left), already in claim
    // order: however many tasks wait on others, the claim reads the first rows.
    let p = plan(&conn, &tasks::claim_candidate_sql(0), 3);
    assert!(
        p.contains("tasks_claim"),
        "claim should use tasks_claim:\n{p}"
    );
    assert!(!p.contains("TEMP B-TREE"), "claim should not sort:\n{p}");
}

#[test]
fn sweeps_and_queue_stats_use_their_partial_indexes() {
    let (_d, conn) = store_conn();
    let sweep = "SELECT id FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= ?1
                   AND (?2 IS NULL OR project_id = ?2) ORDER BY lease_expires_at LIMIT ?3";
    let p = plan(&conn, sweep, 3);
    assert!(
        p.contains("tasks_lease"),
        "sweep should use tasks_lease:\n{p}"
    );
    let p = plan(&conn, tasks::STATS_QUEUE_SQL, 2);
    assert!(
        p.contains("tasks_scheduled"),
        "stats should use tasks_scheduled:\n{p}"
    );
    assert_indexed("queue stats", &p);
}

#[test]
fn queue_stats_read_tasks_only_for_scheduled() {
    // Issue #19: waiting, retrying and dead are counters (migration 0007); only
    // `scheduled`, which depends on the clock, still reads the tasks (its index).
    let (_d, conn) = store_conn();
    let p = plan(&conn, tasks::STATS_QUEUE_SQL, 2);
    let reads_tasks: Vec<&str> = p.lines().filter(|l| l.contains(" tasks ")).collect();
    assert_eq!(reads_tasks.len(), 1, "only scheduled reads tasks:\n{p}");
    assert!(reads_tasks[0].contains("tasks_scheduled"), "{p}");
    let counters = p
        .lines()
        .filter(|l| l.contains("task_counts") && l.contains("PRIMARY KEY"))
        .count();
    assert_eq!(counters, 3, "waiting, retrying, dead by key:\n{p}");
    for gone in ["tasks_waiting", "tasks_retrying", "tasks_dead"] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
                [gone],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(n, 0, "{gone} is read by nothing and dropped");
    }
}

#[test]
fn task_lists_use_indexes() {
    let (_d, conn) = store_conn();
    let cases = [
        (
            "list by status",
            query(
                vec![TaskStatus::Pending],
                false,
                false,
                TaskSort::CreatedAt,
                true,
            ),
        ),
        (
            "list by two statuses",
            query(
                vec![TaskStatus::Pending, TaskStatus::Blocked],
                false,
                false,
                TaskSort::CreatedAt,
                false,
            ),
        ),
        (
            "list by assignee",
            query(vec![], true, false, TaskSort::CreatedAt, true),
        ),
        (
            "list by label",
            query(vec![], false, true, TaskSort::CreatedAt, false),
        ),
        (
            "list all by priority",
            query(vec![], false, false, TaskSort::Priority, true),
        ),
        (
            "list all by updated_at",
            query(vec![], false, false, TaskSort::UpdatedAt, true),
        ),
        (
            "list all",
            query(vec![], false, false, TaskSort::CreatedAt, true),
        ),
    ];
    for (what, q) in cases {
        let sql = tasks::list_sql(&q);
        let p = plan(&conn, &sql, count_params(&sql));
        assert_indexed(what, &p);
    }
}

#[test]
fn events_and_stats_use_indexes() {
    let (_d, conn) = store_conn();
    let p = plan(&conn, events::LIST_SQL, 3);
    assert!(
        p.contains("events_project_id") || p.contains("PRIMARY KEY"),
        "events feed:\n{p}"
    );
    for sql in [
        tasks::STATS_OLDEST_PENDING_SQL,
        tasks::STATS_COMPLETED_SQL,
        tasks::STATS_BY_STATUS_SQL,
    ] {
        let p = plan(&conn, sql, count_params(sql));
        assert_indexed(sql, &p);
    }
}

#[test]
fn counts_read_the_counts_table_not_the_tasks() {
    // Issue #19: stats and the tasks{status} gauge cost O(statuses), not O(tasks).
    let (_d, conn) = store_conn();
    for sql in [tasks::STATS_BY_STATUS_SQL, tasks::COUNT_BY_STATUS_SQL] {
        let p = plan(&conn, sql, count_params(sql));
        assert!(!p.contains("tasks "), "{sql} reads the tasks table:\n{p}");
        assert!(p.contains("task_counts"), "{sql}:\n{p}");
    }
}

#[test]
fn the_count_triggers_never_drift_from_the_rows() {
    // Every kind of change to a task's status, in a random mix, then one full count.
    let (_d, conn) = store_conn();
    let now = 1_700_000_000_000i64;
    for p in 1..=3 {
        conn.execute(
            "INSERT INTO projects (id, name, created_at, updated_at) VALUES (?1, 'p', ?2, ?2)",
            rusqlite::params![p, now],
        )
        .expect("project");
    }
    let statuses = [
        "pending",
        "in_progress",
        "blocked",
        "completed",
        "failed",
        "cancelled",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..4000 {
        match next(10) {
            0 | 1 => {
                // Created waiting on dependencies or not, as a retry or not, dead or not.
                conn.execute(
                    "INSERT INTO tasks (project_id, title, status, created_at, updated_at,
                                        deps_waiting, attempt, dead)
                     VALUES (?1, 't', ?2, ?3, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        1 + next(3) as i64,
                        statuses[next(6) as usize],
                        now,
                        next(3) as i64,
                        next(3) as i64,
                        next(2) as i64
                    ],
                )
                .expect("insert");
            }
            2 | 3 => {
                // completed_at follows the status, as the store sets it, anywhere in
                // the last two hours (the buckets' window).
                let to = statuses[next(6) as usize];
                let at = (to == "completed").then(|| now - next(7_200_000) as i64);
                conn.execute(
                    "UPDATE tasks SET status = ?1, completed_at = ?2
                     WHERE id = (SELECT id FROM tasks ORDER BY random() LIMIT 1)",
                    rusqlite::params![to, at],
                )
                .expect("update");
            }
            4 => {
                conn.execute(
                    "DELETE FROM tasks WHERE id = (SELECT id FROM tasks ORDER BY random() LIMIT 1)",
                    [],
                )
                .expect("delete");
            }
            5 => {
                // A claim, a failure with retry, a lease-expiry sweep: the attempt
                // grows with a move between pending and in_progress.
                let to = ["pending", "in_progress"][next(2) as usize];
                conn.execute(
                    "UPDATE tasks SET status = ?1, attempt = attempt + (?1 = 'in_progress')
                     WHERE id = (SELECT id FROM tasks ORDER BY random() LIMIT 1)",
                    [to],
                )
                .expect("claim or retry");
            }
            6 => {
                // A dead letter (the last attempt failed), or a PATCH re-arm of one.
                let (to, dead, attempt) = [("failed", 1, 3), ("pending", 0, 0)][next(2) as usize];
                conn.execute(
                    "UPDATE tasks SET status = ?1, dead = ?2, attempt = ?3
                     WHERE id = (SELECT id FROM tasks ORDER BY random() LIMIT 1)",
                    rusqlite::params![to, dead, attempt],
                )
                .expect("dead letter");
            }
            7 => {
                // A dependency completed: its waiting dependents are released by one,
                // many rows in one statement.
                conn.execute(
                    "UPDATE tasks SET deps_waiting = deps_waiting - 1
                     WHERE deps_waiting > 0 AND project_id = ?1",
                    [1 + next(3) as i64],
                )
                .expect("release");
            }
            8 => {
                // Waiting on a new dependency, or a failed dependency blocks the task.
                conn.execute(
                    "UPDATE tasks SET deps_waiting = deps_waiting + 1,
                       status = CASE WHEN ?1 THEN 'blocked' ELSE status END
                     WHERE id = (SELECT id FROM tasks ORDER BY random() LIMIT 1)",
                    [next(2) == 0],
                )
                .expect("wait");
            }
            _ => {
                conn.execute(
                    "UPDATE tasks SET title = 'x', version = version + 1
                     WHERE id = (SELECT id FROM tasks ORDER BY random() LIMIT 1)",
                    [],
                )
                .expect("other update");
            }
        }
    }
    // The mix reached every sub-state (else this test could not fail).
    for (key, cond) in SUBSTATES {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM tasks WHERE {cond}"),
                [],
                |r| r.get(0),
            )
            .expect("sub-state");
        assert!(n > 0, "no task is {key}");
    }
    assert_eq!(counter_drift(&conn), 0, "task_counts drifted from the rows");
    conn.execute("DELETE FROM projects WHERE id = 3", [])
        .expect("cascade");
    assert_eq!(counter_drift(&conn), 0, "task_counts drifted from the rows");
    let drift: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM (
               SELECT project_id, completed_at / 10000, count(*) FROM tasks
                 WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1, 2
               EXCEPT SELECT project_id, bucket, n FROM task_completions WHERE n > 0))
             + (SELECT count(*) FROM (
               SELECT project_id, bucket, n FROM task_completions WHERE n > 0
               EXCEPT SELECT project_id, completed_at / 10000, count(*) FROM tasks
                 WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1, 2))",
            [],
            |r| r.get(0),
        )
        .expect("compare completions");
    assert_eq!(drift, 0, "task_completions drifted from the rows");
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM task_counts WHERE project_id = 3",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0, "a deleted project keeps no counts");
}

/// The reserved keys of task_counts (migration 0007) and what they count, written
/// out again here, apart from the triggers.
const SUBSTATES: [(&str, &str); 3] = [
    ("pending:waiting", "status = 'pending' AND deps_waiting > 0"),
    ("pending:retrying", "status = 'pending' AND attempt > 0"),
    ("failed:dead", "status = 'failed' AND dead = 1"),
];

/// Rows of task_counts (statuses and sub-states) that differ from a full count of
/// the tasks, either way.
fn counter_drift(conn: &Connection) -> i64 {
    let mut want = "SELECT project_id, status, count(*) AS n FROM tasks GROUP BY 1, 2".to_string();
    for (key, cond) in SUBSTATES {
        want += &format!(
            " UNION ALL SELECT project_id, '{key}', count(*) FROM tasks WHERE {cond} GROUP BY 1"
        );
    }
    conn.query_row(
        &format!(
            "WITH want AS ({want})
             SELECT (SELECT count(*) FROM (
                       SELECT * FROM want
                       EXCEPT SELECT project_id, status, n FROM task_counts WHERE n <> 0))
                  + (SELECT count(*) FROM (
                       SELECT project_id, status, n FROM task_counts WHERE n <> 0
                       EXCEPT SELECT * FROM want))"
        ),
        [],
        |r| r.get(0),
    )
    .expect("compare counts")
}

#[test]
fn migration_7_backfills_the_sub_state_counters() {
    // A database at schema version 6, with tasks in every sub-state, upgrades in
    // place: the counters start equal to the rows and stats read them.
    let (_d, conn) = {
        let dir = tempdir::Dir::new("plan7");
        let conn = open_writer_conn(&dir.0.join("plan.db"), crate::store::Synchronous::Normal)
            .expect("open");
        (dir, conn)
    };
    for (_, _, sql) in &migrate::MIGRATIONS[..6] {
        conn.execute_batch(sql).expect("old migration");
    }
    conn.execute_batch("PRAGMA user_version = 6")
        .expect("version");
    let now = crate::clock::now_ms();
    conn.execute_batch(&format!(
        "INSERT INTO projects (id, name, created_at, updated_at) VALUES (1, 'a', 1, 1), (2, 'b', 1, 1);
         INSERT INTO tasks (project_id, title, status, created_at, updated_at,
                            deps_waiting, attempt, dead, not_before) VALUES
           (1, 'w', 'pending', 1, 1, 2, 0, 0, NULL),
           (1, 'wr', 'pending', 1, 1, 1, 2, 0, NULL),
           (1, 'r', 'pending', 1, 1, 0, 1, 0, {later}),
           (1, 'd', 'failed', 1, 1, 0, 3, 1, NULL),
           (1, 'd2', 'failed', 1, 1, 0, 3, 1, NULL),
           (1, 'f', 'failed', 1, 1, 0, 1, 0, NULL),
           (1, 'b', 'blocked', 1, 1, 1, 1, 0, NULL),
           (2, 'p', 'pending', 1, 1, 0, 0, 0, NULL),
           (2, 'd', 'failed', 1, 1, 0, 1, 1, NULL);",
        later = now + 3_600_000
    ))
    .expect("old rows");
    assert_eq!(migrate::apply(&conn).expect("migrate"), vec![7]);
    assert_eq!(counter_drift(&conn), 0, "backfill");
    let s = tasks::stats(&conn, 1).expect("stats");
    assert_eq!(
        (s.scheduled, s.waiting, s.retrying, s.dead, s.total),
        (1, 2, 2, 2, 7)
    );
    let keys: Vec<&String> = s.by_status.keys().collect();
    let want: Vec<&str> = TaskStatus::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        keys.len(),
        want.len(),
        "by_status holds statuses only: {keys:?}"
    );
    assert!(keys.iter().all(|k| want.contains(&k.as_str())), "{keys:?}");
    let s = tasks::stats(&conn, 2).expect("stats");
    assert_eq!((s.waiting, s.retrying, s.dead, s.total), (0, 0, 1, 2));
    // And the triggers keep them from there on.
    conn.execute_batch(
        "UPDATE tasks SET deps_waiting = 0 WHERE title = 'w';
         UPDATE tasks SET status = 'pending', dead = 0, attempt = 0 WHERE title = 'd';
         DELETE FROM tasks WHERE title = 'wr';",
    )
    .expect("changes");
    assert_eq!(counter_drift(&conn), 0, "after changes");
    let s = tasks::stats(&conn, 1).expect("stats");
    assert_eq!((s.waiting, s.retrying, s.dead), (0, 1, 1));
}

#[test]
fn the_counters_never_drift_under_the_queues_writes() {
    // Issue #19, through the store's API: every write that moves a task in or out of
    // waiting, retrying or dead, from several threads; then a project goes whole.
    let dir = tempdir::Dir::new("mix");
    let path = dir.0.join("mix.db");
    let store = SqliteStore::open(&path, &crate::store::Options::default()).expect("open");
    let pids = crate::store::count_mix::projects(&store, 3);
    crate::store::count_mix::run(&store, &pids, 4, 150);
    let conn = Connection::open(&path).expect("open");
    for (key, cond) in SUBSTATES {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM tasks WHERE {cond}"),
                [],
                |r| r.get(0),
            )
            .expect("sub-state");
        assert!(n > 0, "the mix left no task {key}");
    }
    assert_eq!(counter_drift(&conn), 0, "task_counts drifted from the rows");
    // Stats answer the full counts.
    for &pid in &pids {
        let s = crate::store::TaskStore::stats(&store, pid).expect("stats");
        let count = |cond: &str| -> i64 {
            conn.query_row(
                &format!("SELECT count(*) FROM tasks WHERE project_id = ?1 AND {cond}"),
                [pid],
                |r| r.get(0),
            )
            .expect("count")
        };
        let want = [SUBSTATES[0].1, SUBSTATES[1].1, SUBSTATES[2].1].map(count);
        assert_eq!([s.waiting, s.retrying, s.dead], want, "project {pid}");
    }
    crate::store::ProjectStore::delete_project(&store, pids[2], None).expect("delete");
    assert_eq!(counter_drift(&conn), 0, "after a project's cascade");
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM task_counts WHERE project_id = ?1",
            [pids[2]],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0, "a deleted project keeps no counts");
    let _ = store.close();
}
