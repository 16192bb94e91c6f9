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
    for index in [
        "tasks_scheduled",
        "tasks_waiting",
        "tasks_retrying",
        "tasks_dead",
    ] {
        assert!(p.contains(index), "stats should use {index}:\n{p}");
    }
    assert_indexed("queue stats", &p);
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
    for _ in 0..3000 {
        match next(6) {
            0 | 1 => {
                conn.execute(
                    "INSERT INTO tasks (project_id, title, status, created_at, updated_at)
                     VALUES (?1, 't', ?2, ?3, ?3)",
                    rusqlite::params![1 + next(3) as i64, statuses[next(6) as usize], now],
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
    conn.execute("DELETE FROM projects WHERE id = 3", [])
        .expect("cascade");
    let drift: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM (
               SELECT project_id, status, count(*) AS n FROM tasks GROUP BY 1, 2
               EXCEPT SELECT project_id, status, n FROM task_counts WHERE n > 0))
             + (SELECT count(*) FROM task_counts c WHERE n <> (SELECT count(*) FROM tasks t
                  WHERE t.project_id = c.project_id AND t.status = c.status))",
            [],
            |r| r.get(0),
        )
        .expect("compare");
    assert_eq!(drift, 0, "task_counts drifted from the rows");
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
