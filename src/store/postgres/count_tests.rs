//! Tests of the PostgreSQL counts of migration 0002 (issue #19), against a throwaway
//! cluster as in `tests.rs`: the stats queries read the counters, not `tasks`; the
//! triggers never drift from the rows, under a random mix and under concurrent
//! writers (without deadlocks); and an existing database is backfilled.

use std::sync::Arc;

use super::tests::Cluster;
use super::*;
use crate::store::TaskStore;

/// The plan of `sql` with every parameter bound to 1 (a custom plan).
fn plan(tx: &mut Tx<'_>, sql: &str, nparams: usize) -> Result<String> {
    let one = 1i64;
    let args: Vec<&(dyn ToSql + Sync)> = (0..nparams).map(|_| &one as _).collect();
    plan_with(tx, sql, &args)
}

/// EXPLAIN of `sql` with these arguments, one line a plan node.
pub(super) fn plan_with(
    tx: &mut Tx<'_>,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<String> {
    let rows = tx.query(&format!("EXPLAIN {sql}"), args)?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Project 1, created at `now`.
fn one_project(tx: &mut Tx<'_>, now: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO projects (name, created_at, updated_at) VALUES ('p', $1, $1)",
        &[&now],
    )
    .map(|_| ())
}

/// Tasks of `projects` projects in every status, bulk-inserted (statement triggers).
fn seed(tx: &mut Tx<'_>, projects: i64, per_project: i64, now: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO projects (name, created_at, updated_at)
           SELECT 'p' || i, $1, $1 FROM generate_series(1, $2::bigint) AS i",
        &[&now, &projects],
    )?;
    tx.execute(
        "INSERT INTO tasks (project_id, title, status, created_at, updated_at, completed_at)
           SELECT p.id, 't', s.status, $1, $1,
                  CASE WHEN s.status = 'completed' THEN $1 - (i * 997) % 7200000 END
             FROM projects p, generate_series(1, $2::bigint) AS i,
                  LATERAL (SELECT (ARRAY['pending', 'in_progress', 'blocked', 'completed',
                                         'failed', 'cancelled'])[1 + ((i + p.id) % 6)::int]
                          AS status) AS s",
        &[&now, &per_project],
    )?;
    tx.batch("ANALYZE")
}

/// The lines of `plan` with a node on `table` itself (not on one of its indexes,
/// as `on tasks_scheduled`).
fn nodes_on<'a>(plan: &'a str, table: &str) -> Vec<&'a str> {
    let name = format!(" on {table}");
    plan.lines()
        .filter(|l| {
            l.split(&name)
                .skip(1)
                .any(|rest| rest.is_empty() || rest.starts_with(' '))
        })
        .collect()
}

/// EXPLAIN of the stats statement for project 1 at `now`.
fn stats_plan(tx: &mut Tx<'_>, now: i64) -> Result<String> {
    let pids = vec![1i64];
    plan_with(tx, tasks::STATS_SQL, &[&now, &(now - 3_600_000), &pids])
}

#[test]
fn stats_read_the_counters_not_the_tasks() {
    // Issue #19: stats and the tasks{status} gauge cost O(statuses), not O(tasks);
    // the last hour's completions read at most 361 buckets and the first bucket's
    // tasks through the completion index; the oldest pending task is the first
    // entry of an index.
    let Some(c) = Cluster::start() else { return };
    let store = PgStore::open(&c.database("plans"), 1).expect("open");
    let now = 1_700_000_000_000;
    store.run(|tx| seed(tx, 20, 1000, now)).expect("seed");
    let (stats, gauge) = store
        .run(|tx| {
            Ok((
                stats_plan(tx, now)?,
                plan(tx, tasks::COUNT_BY_STATUS_SQL, 0)?,
            ))
        })
        .expect("explain");
    assert!(
        !gauge.contains("on tasks"),
        "reads the tasks table:\n{gauge}"
    );
    assert!(gauge.contains("on task_counts"), "{gauge}");
    assert!(stats.contains("on task_counts"), "{stats}");
    assert!(stats.contains("on task_completions"), "{stats}");
    for line in nodes_on(&stats, "tasks") {
        assert!(
            line.contains("Index") && !line.contains("Seq Scan"),
            "every read of tasks is an index's:\n{stats}"
        );
    }
    let completed = stats
        .lines()
        .filter(|l| l.contains("using tasks_completed"))
        .count();
    assert_eq!(
        completed, 1,
        "the first bucket from the completion index:\n{stats}"
    );
    assert!(
        stats.contains("completed_at < "),
        "the first bucket's count has an upper bound:\n{stats}"
    );
}

/// Rows where the counters and a full count of the tasks disagree: (counts, buckets).
fn drift(tx: &mut Tx<'_>) -> Result<(i64, i64)> {
    // Statuses, and the sub-states of migration 0006 written out again here, apart
    // from the triggers.
    let counts: i64 = tx
        .query_one(
            "SELECT count(*) FROM (SELECT project_id, status, count(*) AS n FROM tasks
                                    GROUP BY 1, 2
                                  UNION ALL SELECT project_id, 'pending:waiting', count(*)
                                    FROM tasks WHERE status = 'pending' AND deps_waiting > 0
                                    GROUP BY 1
                                  UNION ALL SELECT project_id, 'pending:retrying', count(*)
                                    FROM tasks WHERE status = 'pending' AND attempt > 0
                                    GROUP BY 1
                                  UNION ALL SELECT project_id, 'failed:dead', count(*)
                                    FROM tasks WHERE status = 'failed' AND dead
                                    GROUP BY 1) AS t
               FULL JOIN (SELECT project_id, status, sum(n) AS n FROM task_counts
                           GROUP BY 1, 2 HAVING sum(n) <> 0) AS c USING (project_id, status)
              WHERE t.n IS DISTINCT FROM c.n",
            &[],
        )?
        .get(0);
    let buckets: i64 = tx
        .query_one(
            "SELECT count(*) FROM (SELECT project_id, completed_at / 10000 AS bucket,
                                          count(*) AS n FROM tasks
                                    WHERE status = 'completed' AND completed_at IS NOT NULL
                                    GROUP BY 1, 2) AS t
               FULL JOIN (SELECT project_id, bucket, sum(n) AS n FROM task_completions
                           GROUP BY 1, 2 HAVING sum(n) <> 0) AS c
                 USING (project_id, bucket)
              WHERE t.n IS DISTINCT FROM c.n",
            &[],
        )?
        .get(0);
    Ok((counts, buckets))
}

const STATUSES: [&str; 6] = [
    "pending",
    "in_progress",
    "blocked",
    "completed",
    "failed",
    "cancelled",
];

/// A small xorshift: a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One random change of the drift test, in SQL, as any client could make it.
fn random_change(tx: &mut Tx<'_>, rng: &mut Rng, now: i64) -> Result<()> {
    let pick = "(SELECT id FROM tasks ORDER BY random() LIMIT 1)";
    match rng.below(12) {
        0 | 1 => {
            // Created waiting on dependencies or not, as a retry or not, dead or not.
            let (p, s) = (1 + rng.below(3) as i64, STATUSES[rng.below(6) as usize]);
            let at = (s == "completed").then_some(now);
            let (waiting, attempt, dead) =
                (rng.below(3) as i64, rng.below(3) as i64, rng.below(2) == 0);
            tx.execute(
                "INSERT INTO tasks (project_id, title, status, created_at, updated_at,
                                    completed_at, deps_waiting, attempt, dead)
                   VALUES ($1, 't', $2, $3, $3, $4, $5, $6, $7)",
                &[&p, &s, &now, &at, &waiting, &attempt, &dead],
            )?;
        }
        8 => {
            // A claim, a failure with retry, a lease-expiry sweep: the attempt grows
            // with a move between pending and in_progress.
            let to = ["pending", "in_progress"][rng.below(2) as usize];
            tx.execute(
                &format!(
                    "UPDATE tasks SET status = $1::text,
                       attempt = attempt + CASE WHEN $1::text = 'in_progress' THEN 1 ELSE 0 END
                     WHERE id = {pick}"
                ),
                &[&to],
            )?;
        }
        9 => {
            // A dead letter (the last attempt failed), or a PATCH re-arm of one.
            let (to, dead, attempt) =
                [("failed", true, 3i64), ("pending", false, 0)][rng.below(2) as usize];
            tx.execute(
                &format!("UPDATE tasks SET status = $1, dead = $2, attempt = $3 WHERE id = {pick}"),
                &[&to, &dead, &attempt],
            )?;
        }
        10 => {
            // A dependency completed: its waiting dependents are released by one, many
            // rows in one statement.
            let p = 1 + rng.below(3) as i64;
            tx.execute(
                "UPDATE tasks SET deps_waiting = deps_waiting - 1
                  WHERE deps_waiting > 0 AND project_id = $1",
                &[&p],
            )?;
        }
        11 => {
            // Waiting on a new dependency, or a failed dependency blocks the task.
            let block = rng.below(2) == 0;
            tx.execute(
                &format!(
                    "UPDATE tasks SET deps_waiting = deps_waiting + 1,
                       status = CASE WHEN $1 THEN 'blocked' ELSE status END
                     WHERE id = {pick}"
                ),
                &[&block],
            )?;
        }
        2 | 3 => {
            // completed_at follows the status, as the store sets it, anywhere in the
            // last two hours (the buckets' window).
            let to = STATUSES[rng.below(6) as usize];
            let at = (to == "completed").then(|| now - rng.below(7_200_000) as i64);
            tx.execute(
                &format!("UPDATE tasks SET status = $1, completed_at = $2 WHERE id = {pick}"),
                &[&to, &at],
            )?;
        }
        4 => {
            tx.execute(&format!("DELETE FROM tasks WHERE id = {pick}"), &[])?;
        }
        5 => {
            // Many rows in one statement: the statement-level triggers aggregate.
            let s = STATUSES[rng.below(6) as usize];
            tx.execute(
                "INSERT INTO tasks (project_id, title, status, created_at, updated_at,
                                    completed_at)
                   SELECT 1 + i % 3, 'b', $1::text, $2::bigint, $2::bigint,
                          CASE WHEN $1::text = 'completed' THEN $2::bigint - i * 1000 END
                     FROM generate_series(1, 20) AS i",
                &[&s, &now],
            )?;
        }
        6 => {
            let p = 1 + rng.below(3) as i64;
            tx.execute(
                "DELETE FROM tasks WHERE project_id = $1 AND id % 7 = 0",
                &[&p],
            )?;
        }
        _ => {
            tx.execute(
                &format!("UPDATE tasks SET title = 'x', version = version + 1 WHERE id = {pick}"),
                &[],
            )?;
        }
    }
    Ok(())
}

#[test]
fn the_count_triggers_never_drift_from_the_rows() {
    // Every kind of change to a task's status, in a random mix, several changes per
    // transaction (a row changed twice in one), then a project cascade.
    let Some(c) = Cluster::start() else { return };
    let store = PgStore::open(&c.database("drift"), 1).expect("open");
    let now = 1_700_000_000_000i64;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    store
        .run(|tx| {
            tx.execute(
                "INSERT INTO projects (id, name, created_at, updated_at)
                   SELECT i, 'p', $1, $1 FROM generate_series(1, 3) AS i",
                &[&now],
            )
        })
        .expect("projects");
    for _ in 0..100 {
        store
            .run(|tx| (0..20).try_for_each(|_| random_change(tx, &mut rng, now)))
            .expect("changes");
    }
    // The mix reached every sub-state (else the comparison could not fail).
    let reached: Vec<i64> = store
        .run(|tx| {
            let sql = "SELECT count(*) FILTER (WHERE status = 'pending' AND deps_waiting > 0),
                              count(*) FILTER (WHERE status = 'pending' AND attempt > 0),
                              count(*) FILTER (WHERE status = 'failed' AND dead)
                         FROM tasks";
            let r = tx.query_one(sql, &[])?;
            Ok(vec![r.get(0), r.get(1), r.get(2)])
        })
        .expect("sub-states");
    assert!(reached.iter().all(|n| *n > 0), "{reached:?}");
    store
        .run(|tx| tx.batch("DELETE FROM projects WHERE id = 3"))
        .expect("cascade");
    let (counts, buckets) = store.run(drift).expect("compare");
    assert_eq!(counts, 0, "task_counts drifted from the rows");
    assert_eq!(buckets, 0, "task_completions drifted from the rows");
    let left: i64 = store
        .run(|tx| {
            let sql = "SELECT (SELECT count(*) FROM task_counts WHERE project_id = 3)
                            + (SELECT count(*) FROM task_completions WHERE project_id = 3)";
            Ok(tx.query_one(sql, &[])?.get(0))
        })
        .expect("count");
    assert_eq!(left, 0, "a deleted project keeps no counts");
}

pub(super) fn new_task(status: TaskStatus) -> NewTask {
    NewTask {
        title: "t".into(),
        description: String::new(),
        status,
        priority: 0,
        assignee: None,
        labels: vec![],
        metadata: "{}".into(),
        result: None,
        max_attempts: None,
        not_before: None,
        depends_on: vec![],
    }
}

#[test]
fn concurrent_claims_moves_and_batches_never_deadlock_or_drift() {
    // Count rows are hot: claims, moves in both directions and batches of mixed
    // statuses of one project, from several connections at once. A deadlock would
    // come back as Busy; every call must succeed, and the counts stay exact.
    let Some(c) = Cluster::start() else { return };
    let store = Arc::new(PgStore::open(&c.database("hot"), 6).expect("open"));
    let pid = store
        .create_project(
            NewProject {
                name: "p".into(),
                description: String::new(),
                status: ProjectStatus::Active,
                default_max_attempts: 3,
                retry_backoff_seconds: 10,
            },
            None,
            None,
        )
        .expect("project")
        .done()
        .expect("ran")
        .id;
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                for _ in 0..60 {
                    let done = match rng.below(5) {
                        0 => {
                            let batch = [TaskStatus::InProgress, TaskStatus::Pending]
                                .into_iter()
                                .chain([TaskStatus::Completed, TaskStatus::Blocked])
                                .map(new_task)
                                .collect();
                            store.create_tasks(pid, batch, None, None).map(|_| ())
                        }
                        1 => {
                            let claim = Claim {
                                agent: format!("a{t}"),
                                lease_seconds: 60,
                                labels: vec![],
                                limit: 2,
                            };
                            store.claim(pid, claim, None).map(|_| ())
                        }
                        _ => {
                            let statuses = [
                                TaskStatus::Pending,
                                TaskStatus::InProgress,
                                TaskStatus::Completed,
                            ];
                            let q = TaskQuery {
                                statuses: vec![statuses[rng.below(3) as usize]],
                                assignee: None,
                                label: None,
                                sort: TaskSort::CreatedAt,
                                after: None,
                                limit: 5,
                            };
                            let page = store.list_tasks(pid, q).expect("list");
                            let Some(task) = page.items.first() else {
                                continue;
                            };
                            if rng.below(3) == 0 {
                                // A delete decrements whichever shard has the row.
                                let v = Some(task.version);
                                match store.delete_task(task.id, None, v, None, None) {
                                    Err(
                                        StoreError::NotFound(_) | StoreError::VersionMismatch(_),
                                    ) => Ok(()),
                                    other => other,
                                }
                                .expect("no deadlock, no error");
                                continue;
                            }
                            let patch = TaskPatch {
                                status: Some(statuses[rng.below(3) as usize]),
                                ..Default::default()
                            };
                            // With If-Match: an operator's forced change, past a live lease.
                            let v = Some(task.version);
                            match store.update_task(task.id, None, patch, v, None, None) {
                                Err(StoreError::NotFound(_) | StoreError::VersionMismatch(_)) => {
                                    Ok(())
                                }
                                other => other.map(|_| ()),
                            }
                        }
                    };
                    done.expect("no deadlock, no error");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let (counts, buckets) = store.run(drift).expect("compare");
    assert_eq!((counts, buckets), (0, 0), "the counters drifted");
}

#[test]
fn claims_on_other_connections_do_not_wait_for_an_open_claim() {
    // Issue #17: every claim of a project updated the same two count rows and held
    // them to its commit, so claims queued one commit behind another. Counts are
    // sharded by connection (migration 0005): while one status change's transaction
    // stays open, claims on connections of other shards go through. Failed before
    // 0005: every other claim hit the lock timeout on (project, 'pending').
    let Some(c) = Cluster::start() else { return };
    let store = Arc::new(PgStore::open(&c.database("shards"), 9).expect("open"));
    let now = 1_700_000_000_000i64;
    store
        .run(|tx| {
            one_project(tx, now)?;
            tx.execute(
                "INSERT INTO tasks (project_id, title, status, created_at, updated_at)
                   SELECT 1, 't', 'pending', $1, $1 FROM generate_series(1, 100)",
                &[&now],
            )
            .map(|_| ())
        })
        .expect("seed");
    let claim = |tx: &mut Tx<'_>, agent: &str| -> Result<usize> {
        let c = Claim {
            agent: agent.into(),
            lease_seconds: 60,
            labels: vec![],
            limit: 1,
        };
        Ok(tasks::claim_next(tx, 1, &c)?.len())
    };
    let (held_tx, held_rx) = std::sync::mpsc::channel::<i16>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let store = store.clone();
        std::thread::spawn(move || {
            store
                .run(|tx| {
                    // A status change that holds its count rows (and, unlike a
                    // claim, not the project's event lock).
                    tx.batch("UPDATE tasks SET status = 'in_progress' WHERE id = 1")?;
                    let shard: i16 = tx.query_one("SELECT count_shard()", &[])?.get(0);
                    held_tx.send(shard).expect("send");
                    release_rx.recv().expect("released");
                    Ok(())
                })
                .expect("holder");
        })
    };
    let held = held_rx.recv().expect("the holder's shard");
    // Eight claims at once, on the other connections.
    let others: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.run(|tx| {
                    let shard: i16 = tx.query_one("SELECT count_shard()", &[])?.get(0);
                    tx.batch("SET LOCAL lock_timeout = '1s'")?;
                    let got = claim(tx, &format!("other{i}"));
                    Ok((shard, got.map_err(|e| format!("{e:?}"))))
                })
            })
        })
        .collect();
    let results: Vec<(i16, std::result::Result<usize, String>)> = others
        .into_iter()
        .map(|t| t.join().expect("thread").expect("ran"))
        .collect();
    release_tx.send(()).expect("release");
    holder.join().expect("holder thread");
    let elsewhere: Vec<_> = results.iter().filter(|(s, _)| *s != held).collect();
    assert!(
        !elsewhere.is_empty(),
        "no connection on another shard: {results:?}"
    );
    for (shard, got) in elsewhere {
        assert_eq!(
            got,
            &Ok(1),
            "a claim on shard {shard} (the holder's: {held})"
        );
    }
    assert_eq!(store.run(drift).expect("compare"), (0, 0));
}

#[test]
fn deletes_change_exactly_the_count_rows_they_locked() {
    // Found by an outside review of 0005 before release: the delete trigger chose its
    // rows to lock, then chose again to update, and the second choice could take a
    // row made in between, unlocked and out of key order. Four sessions, shards set
    // by hand: Z holds (1,failed,0); D deletes a completed and a failed task (locks
    // (1,completed,0), waits for (1,failed,0)); X makes (1,completed,5); Y deletes a
    // completed and a failed task (locks (1,completed,5), waits for (1,failed,0)).
    // When Z commits, the old trigger's D updated (1,completed,5) and deadlocked
    // with Y. Failed before: Busy (deadlock detected).
    let Some(c) = Cluster::start() else { return };
    let store = Arc::new(PgStore::open(&c.database("shardlock"), 5).expect("open"));
    store
        .run(|tx| {
            tx.batch(
                "CREATE OR REPLACE FUNCTION count_shard() RETURNS smallint LANGUAGE sql STABLE
                   AS $$ SELECT coalesce(nullif(current_setting('t.shard', true), ''), '0')::smallint $$;
                 INSERT INTO projects (id, name, created_at, updated_at)
                   OVERRIDING SYSTEM VALUE VALUES (1, 'p', 0, 0);
                 INSERT INTO tasks (id, project_id, title, status, created_at, updated_at, completed_at)
                   OVERRIDING SYSTEM VALUE VALUES
                   (1, 1, 't', 'completed', 0, 0, 1000000), (2, 1, 't', 'failed', 0, 0, NULL),
                   (3, 1, 't', 'failed', 0, 0, NULL), (4, 1, 't', 'pending', 0, 0, NULL)",
            )
        })
        .expect("seed");
    // Sessions waiting for a lock, as PostgreSQL sees them.
    let waiting = |store: &PgStore| -> i64 {
        store
            .run(|tx| {
                Ok(tx
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                          WHERE wait_event_type = 'Lock' AND query LIKE 'SET LOCAL t.shard%'",
                        &[],
                    )?
                    .get(0))
            })
            .expect("pg_stat_activity")
    };
    let until = |store: &PgStore, n: i64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while waiting(store) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no {n} sessions waiting"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let session = |store: &Arc<PgStore>, sql: &'static str| {
        let store = store.clone();
        std::thread::spawn(move || store.run(|tx| tx.batch(sql)))
    };
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let z = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.run(|tx| {
                tx.batch("SET LOCAL t.shard = 0; UPDATE tasks SET status = 'failed' WHERE id = 4")?;
                held_tx.send(()).expect("send");
                release_rx.recv().expect("release");
                Ok(())
            })
        })
    };
    held_rx.recv().expect("Z holds (1,failed,0)");
    let d = session(
        &store,
        "SET LOCAL t.shard = 5; DELETE FROM tasks WHERE id IN (1, 2)",
    );
    until(&store, 1);
    store
        .run(|tx| {
            tx.batch(
                "SET LOCAL t.shard = 5;
                 INSERT INTO tasks (id, project_id, title, status, created_at, updated_at, completed_at)
                   OVERRIDING SYSTEM VALUE VALUES (5, 1, 't', 'completed', 0, 0, 1000000)",
            )
        })
        .expect("X");
    let y = session(
        &store,
        "SET LOCAL t.shard = 5; DELETE FROM tasks WHERE id IN (5, 3)",
    );
    until(&store, 2);
    release_tx.send(()).expect("release Z");
    z.join().expect("Z").expect("Z commits");
    d.join().expect("D").expect("D: no deadlock");
    y.join().expect("Y").expect("Y: no deadlock");
    assert_eq!(store.run(drift).expect("compare"), (0, 0));
}

#[test]
fn queue_stats_read_tasks_only_for_scheduled() {
    // Issue #19: waiting, retrying and dead are counters (migration 0006); of the
    // queue's figures only `scheduled`, which depends on the clock, reads the tasks,
    // from its index.
    let Some(c) = Cluster::start() else { return };
    let store = PgStore::open(&c.database("queueplan"), 1).expect("open");
    let now = 1_700_000_000_000i64;
    let p = store
        .run(|tx| {
            seed(tx, 5, 2000, now)?;
            tx.execute(
                "UPDATE tasks SET attempt = 1, deps_waiting = (id % 2), dead = (id % 3 = 0)
                  WHERE id % 5 = 0",
                &[],
            )?;
            tx.batch("ANALYZE")?;
            stats_plan(tx, now)
        })
        .expect("explain");
    // Three reads of tasks: the oldest pending, the first bucket, the scheduled.
    let on_tasks = nodes_on(&p, "tasks");
    assert_eq!(on_tasks.len(), 3, "{p}");
    assert!(on_tasks.iter().all(|l| !l.contains("Seq Scan")), "{p}");
    assert!(p.contains("tasks_scheduled"), "{p}");
    assert_eq!(
        nodes_on(&p, "task_counts").len(),
        1,
        "counts and the waiting, retrying, dead counters in one read:\n{p}"
    );
    let gone: i64 = store
        .run(|tx| {
            let sql = "SELECT count(*) FROM pg_class
                        WHERE relname IN ('tasks_waiting', 'tasks_retrying', 'tasks_dead')";
            Ok(tx.query_one(sql, &[])?.get(0))
        })
        .expect("indexes");
    assert_eq!(gone, 0, "the partial indexes nothing reads are dropped");
}

#[test]
fn the_counters_never_drift_under_the_queues_writes() {
    // Issue #19, through the store's API, from six connections (shards) at once:
    // every write that moves a task in or out of waiting, retrying or dead; no
    // deadlock (an unexpected error fails the mix); then a project goes whole.
    let Some(c) = Cluster::start() else { return };
    let store = PgStore::open(&c.database("queuemix"), 6).expect("open");
    let pids = crate::store::count_mix::projects(&store, 3);
    crate::store::count_mix::run(&store, &pids, 6, 120);
    let reached: Vec<i64> = store
        .run(|tx| {
            let sql = "SELECT count(*) FILTER (WHERE status = 'pending' AND deps_waiting > 0),
                              count(*) FILTER (WHERE status = 'pending' AND attempt > 0),
                              count(*) FILTER (WHERE status = 'failed' AND dead)
                         FROM tasks";
            let r = tx.query_one(sql, &[])?;
            Ok(vec![r.get(0), r.get(1), r.get(2)])
        })
        .expect("sub-states");
    assert!(reached.iter().all(|n| *n > 0), "the mix left {reached:?}");
    assert_eq!(store.run(drift).expect("compare"), (0, 0));
    for &pid in &pids {
        let s = store.stats(pid).expect("stats");
        let want: Vec<i64> = store
            .run(|tx| {
                let sql = "SELECT
                    count(*) FILTER (WHERE status = 'pending' AND deps_waiting > 0),
                    count(*) FILTER (WHERE status = 'pending' AND attempt > 0),
                    count(*) FILTER (WHERE status = 'failed' AND dead)
                  FROM tasks WHERE project_id = $1";
                let r = tx.query_one(sql, &[&pid])?;
                Ok(vec![r.get(0), r.get(1), r.get(2)])
            })
            .expect("count");
        assert_eq!(vec![s.waiting, s.retrying, s.dead], want, "project {pid}");
        assert!(s.by_status.keys().all(|k| !k.contains(':')), "{s:?}");
    }
    crate::store::ProjectStore::delete_project(&store, pids[2], None).expect("delete");
    assert_eq!(store.run(drift).expect("compare"), (0, 0));
    let left: i64 = store
        .run(|tx| {
            let sql = "SELECT count(*) FROM task_counts WHERE project_id = $1";
            Ok(tx.query_one(sql, &[&pids[2]])?.get(0))
        })
        .expect("count");
    assert_eq!(left, 0, "a deleted project keeps no counts");
}

#[test]
fn a_version_5_database_is_backfilled() {
    // Migration 0006 counts the sub-states of the rows already there, in place.
    let Some(c) = Cluster::start() else { return };
    let url = c.database("old5");
    let old = PgStore::connect(&url, 1).expect("connect");
    let now = crate::clock::now_ms();
    old.run(|tx| {
        tx.batch(
            "CREATE TABLE schema_migrations (
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )?;
        for (v, name, sql) in &migrate::MIGRATIONS[..5] {
            tx.batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, 0)",
                &[v, name],
            )?;
        }
        seed(tx, 3, 300, now)?;
        tx.execute(
            "UPDATE tasks SET attempt = 1 + id % 2, deps_waiting = (id / 6) % 3,
                              dead = (status = 'failed' AND (id / 6) % 4 <> 0),
                              not_before = CASE WHEN (id / 6) % 5 = 0 THEN $1::bigint END
              WHERE (id / 6) % 7 <> 0",
            &[&(now + 3_600_000)],
        )
        .map(|_| ())
    })
    .expect("a version-5 database with tasks");
    let store = PgStore::open(&url, 1).expect("migrate");
    let version: i64 = store
        .run(|tx| {
            Ok(tx
                .query_one("SELECT max(version) FROM schema_migrations", &[])?
                .get(0))
        })
        .expect("version");
    assert_eq!(version, migrate::latest());
    assert_eq!(store.run(drift).expect("compare"), (0, 0));
    for pid in 1..=3 {
        let s = store.stats(pid).expect("stats");
        let want: Vec<i64> = store
            .run(|tx| {
                let sql = "SELECT
                    count(*) FILTER (WHERE status = 'pending' AND deps_waiting > 0),
                    count(*) FILTER (WHERE status = 'pending' AND attempt > 0),
                    count(*) FILTER (WHERE status = 'failed' AND dead),
                    count(*) FILTER (WHERE status = 'pending' AND not_before > $2)
                  FROM tasks WHERE project_id = $1";
                let r = tx.query_one(sql, &[&pid, &now])?;
                Ok(vec![r.get(0), r.get(1), r.get(2), r.get(3)])
            })
            .expect("count");
        assert!(want[..3].iter().all(|n| *n > 0), "{want:?}");
        assert_eq!(
            vec![s.waiting, s.retrying, s.dead, s.scheduled],
            want,
            "project {pid}"
        );
        assert_eq!(s.total, 300);
    }
}

#[test]
fn a_version_1_database_is_backfilled() {
    let Some(c) = Cluster::start() else { return };
    let url = c.database("old");
    let old = PgStore::connect(&url, 1).expect("connect");
    old.run(|tx| {
        tx.batch(migrate::MIGRATIONS[0].2)?;
        tx.batch(
            "CREATE TABLE schema_migrations (
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 'init', 0)",
        )?;
        seed(tx, 3, 100, crate::clock::now_ms())
    })
    .expect("a version-1 database with tasks");
    let store = PgStore::open(&url, 1).expect("migrate");
    assert_eq!(store.run(drift).expect("compare"), (0, 0));
    // Completions of the last hour: counted before and after, stats in between.
    let exact = || {
        store
            .run(|tx| {
                let sql = "SELECT count(*) FROM tasks WHERE project_id = 1
                             AND status = 'completed' AND completed_at >= $1";
                let since = crate::clock::now_ms() - 3_600_000;
                Ok(tx.query_one(sql, &[&since])?.get::<_, i64>(0))
            })
            .expect("count")
    };
    let before = exact();
    let stats = store.stats(1).expect("stats");
    let after = exact();
    assert_eq!(stats.total, 100);
    assert!(stats.by_status["completed"].as_i64() > Some(0), "{stats:?}");
    assert!(
        (after..=before).contains(&stats.completed_last_hour) && after > 0,
        "{after}..={before}: {stats:?}"
    );
    // Migration 0003 (the queue) kept every row, with the queue's defaults, and an
    // old pending task is claimable with a token.
    let defaults: i64 = store
        .run(|tx| {
            let sql = "SELECT count(*) FROM tasks WHERE attempt = 0 AND max_attempts = 3
                         AND not_before IS NULL AND depends_on = '[]' AND deps_waiting = 0";
            Ok(tx.query_one(sql, &[])?.get(0))
        })
        .expect("count");
    assert_eq!(defaults, 300);
    let claim = Claim {
        agent: "a".into(),
        lease_seconds: 60,
        labels: vec![],
        limit: 1,
    };
    let got = store
        .claim(1, claim, None)
        .expect("claim")
        .done()
        .expect("ran");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 1);
    assert!(got[0].lease_token.is_some());
}

#[test]
fn the_claim_reads_only_runnable_tasks_when_most_wait_on_others() {
    // Issue #15: 20 000 pending tasks wait on a dependency, 10 can run; the claim's
    // partial index holds only the 10, in claim order: no sort, no scan of `tasks`.
    let Some(c) = Cluster::start() else { return };
    let store = PgStore::open(&c.database("claimplan"), 1).expect("open");
    let now = 1_700_000_000_000i64;
    let plan = store
        .run(|tx| {
            one_project(tx, now)?;
            tx.execute(
                "INSERT INTO tasks (project_id, title, status, created_at, updated_at,
                                    deps_waiting, priority)
                   SELECT 1, 't', 'pending', $1, $1, CASE WHEN i <= 10 THEN 0 ELSE 1 END, i % 5
                     FROM generate_series(1, 20010) AS i",
                &[&now],
            )?;
            tx.batch("ANALYZE tasks")?;
            let hashes: Vec<Vec<u8>> = vec![vec![0; 32]; 10];
            let rows = tx.query(
                &format!("EXPLAIN {}", tasks::claim_sql(0)),
                &[&1i64, &now, &"a", &(now + 1000), &10i64, &hashes],
            )?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n"))
        })
        .expect("explain");
    println!("{plan}");
    assert!(
        plan.contains("tasks_claim"),
        "the claim uses tasks_claim:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan on tasks"),
        "no scan of tasks:\n{plan}"
    );
    // Limit → LockRows → the index scan: rows come in claim order, so the scan
    // stops after `limit` of them (the only sort numbers those few for the tokens).
    let below_limit = plan.split("->  Limit").nth(1).expect("a Limit node");
    let scan = below_limit
        .find("Index Scan using tasks_claim")
        .expect("the index under the Limit");
    assert!(
        !below_limit[..scan].contains("Sort"),
        "no sort between the Limit and the index:\n{plan}"
    );
}

#[test]
fn the_claim_walks_its_index_before_analyze_has_seen_a_bulk_load() {
    // Issue #17: 20 000 tasks created one by one into a queue ANALYZE last saw drained;
    // the planner guessed one pending row and sorted them all on every claim (20
    // claims/s at 64 agents). Failed before steer_claim_plan: a Sort over
    // tasks_project_status_id under the Limit.
    let Some(c) = Cluster::start() else { return };
    let store = PgStore::open(&c.database("claimstale"), 1).expect("open");
    let now = 1_700_000_000_000i64;
    store
        .run(|tx| {
            one_project(tx, now)?;
            // The queue as ANALYZE last saw it: drained, everything completed.
            tx.execute(
                "INSERT INTO tasks (project_id, title, status, created_at, updated_at, priority)
                   SELECT 1, 't', 'completed', $1, $1, i % 5 FROM generate_series(1, 1000) AS i",
                &[&now],
            )?;
            tx.batch("ANALYZE tasks")
        })
        .expect("project");
    // As agents' bulk creates do: 1 000 tasks a transaction.
    for batch in 0..20i64 {
        store
            .run(|tx| {
                for i in 0..1000i64 {
                    tx.execute(
                        "INSERT INTO tasks (project_id, title, status, created_at, updated_at, priority)
                           VALUES (1, 't', 'pending', $1, $1, $2)",
                        &[&(now + batch), &(i % 5)],
                    )?;
                }
                Ok(())
            })
            .expect("insert");
    }
    let plan = store
        .run(|tx| {
            tasks::steer_claim_plan(tx)?;
            let hashes: Vec<Vec<u8>> = vec![vec![0; 32]; 10];
            plan_with(
                tx,
                &tasks::claim_sql(0),
                &[&1i64, &(now * 2), &"a", &now, &10i64, &hashes],
            )
        })
        .expect("explain");
    let below_limit = plan.split("->  Limit").nth(1).expect("a Limit node");
    let scan = below_limit
        .find("Index Scan using tasks_claim")
        .unwrap_or_else(|| panic!("the claim index under the Limit:\n{plan}"));
    assert!(
        !below_limit[..scan].contains("Sort"),
        "no sort between the Limit and the index:\n{plan}"
    );
}
