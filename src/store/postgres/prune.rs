//! PostgreSQL side of the retention pruner (SPEC §5c, issue #20): each step is one
//! short transaction of at most a few hundred rows.
//!
//! Several instances run a pruner against the same database. Each step first takes
//! `pg_try_advisory_xact_lock(PRUNE_LOCK)`: while one instance is in a step, another
//! gets `false` at once and leaves the run to it (no queue of pruners waiting on each
//! other, no lock storm), and nothing is deleted twice. Rows are picked with
//! `FOR UPDATE SKIP LOCKED`, so a task a client is changing right now is skipped, not
//! waited for (and its status is checked again on the locked row). The count triggers
//! of 0002 run on the deleted rows (statement level), so the counters stay equal to
//! the rows. Lock order as in 0002: task rows first (the DELETE), then count rows.

use std::time::Instant;

use super::{PgStore, Result, Tx};
use crate::store::{Pacing, PruneCount, PruneStep, Retention, Space};

/// Advisory lock key of the pruner ("dashprun").
const PRUNE_LOCK: i64 = 0x6461_7368_7072_756e;

impl Retention for PgStore {
    /// A step is `BEGIN`, one statement that sets the step up and takes the lock,
    /// one that does the work, and `COMMIT`: four round trips, each of which can
    /// wait for a CPU on a busy machine. Its commit does not wait for the WAL to
    /// reach the disk (`synchronous_commit = off` for this transaction only): a
    /// deletion lost in a crash is made again by the next run, and a step that
    /// waited on fsync would hold the count rows every completion updates that
    /// much longer. `micros` runs from `BEGIN` to the end of `COMMIT`.
    fn prune_step(&self, step: PruneStep, limit: usize) -> Result<PruneCount> {
        let limit = limit.max(1) as i64;
        let began = std::cell::Cell::new(Instant::now());
        let mut n = self.run(|tx| {
            began.set(Instant::now());
            // Short waits only: a step that would queue behind a long lock gives up
            // (Busy) and the next run tries again.
            let got: bool = tx.query_one(BEGIN_STEP_SQL, &[&PRUNE_LOCK])?.get(0);
            if !got {
                return Ok(PruneCount::default());
            }
            let mut n = match step {
                PruneStep::Tasks { project, before } => tasks(tx, project, before, limit)?,
                PruneStep::Events { before } => events(tx, before, limit)?,
                PruneStep::Idempotency { now } => idempotency(tx, now, limit)?,
            };
            n.ran = true;
            Ok(n)
        })?;
        n.micros = began.get().elapsed().as_micros() as u64;
        Ok(n)
    }

    /// A step is a transaction of its own beside the writers (it holds no single
    /// writer), and its four round trips take about a millisecond: about 2 ms, and
    /// rests as long. (With eight round trips a step of 1 ms shrank to its floor of
    /// 10 tasks and a run deleted ~220 tasks/s, barely above a 150 tasks/s load.
    /// At 2 ms, 3 minutes of `scripts/retention-soak.sh 3 20s` on a quiet box: each
    /// run's slowest step 3.6 ms at the median, 7.7 ms at worst, against 5.0 and 9.5
    /// at 4 ms, and as many tasks pruned.)
    fn pacing(&self) -> Pacing {
        Pacing {
            step_target: std::time::Duration::from_millis(2),
            rest_factor: 1,
        }
    }

    fn space(&self) -> Result<Space> {
        self.run(|tx| {
            let rows = tx.query(
                "SELECT relname::text, n_dead_tup, n_live_tup FROM pg_stat_user_tables
                 WHERE relname IN ('tasks', 'events', 'task_labels') ORDER BY relname",
                &[],
            )?;
            let tuples = rows
                .iter()
                .filter_map(|r| {
                    let name: String = r.get(0);
                    let table = ["events", "task_labels", "tasks"]
                        .into_iter()
                        .find(|t| *t == name)?;
                    Some((table, r.get::<_, i64>(1), r.get::<_, i64>(2)))
                })
                .collect();
            Ok(Space {
                tuples,
                ..Space::default()
            })
        })
    }
}

/// The step's settings, for this transaction only, and the pruners' lock: `true`
/// when this instance has it.
const BEGIN_STEP_SQL: &str = "SELECT pg_try_advisory_xact_lock($1),
    set_config('lock_timeout', '1s', true), set_config('synchronous_commit', 'off', true)";
/// Up to $3 finished tasks of project $1 aged past $2, completed ones first (from
/// `tasks_completed` of 0001; failed and cancelled ones from `tasks_finished` of
/// 0004, read only when the completed ones run short: a limit of 0 reads nothing),
/// locked `FOR UPDATE SKIP LOCKED`; their events; the tasks themselves if still
/// finished (the primary key; labels go by the cascade). One statement, one round trip: the picked rows are
/// read once (a CTE used twice is materialized) and both deletes take their ids.
/// Returns the tasks picked, the events and the tasks deleted.
pub(super) const PRUNE_TASKS_SQL: &str = "WITH done AS (
    SELECT id FROM tasks
     WHERE project_id = $1 AND status = 'completed' AND completed_at < $2
     LIMIT $3 FOR UPDATE SKIP LOCKED),
  ended AS (
    SELECT id FROM tasks
     WHERE project_id = $1 AND status IN ('failed', 'cancelled')
       AND (CASE WHEN status = 'cancelled' THEN updated_at
            ELSE coalesce(completed_at, updated_at) END) < $2
     LIMIT $3 - (SELECT count(*) FROM done) FOR UPDATE SKIP LOCKED),
  picked AS (SELECT id FROM done UNION ALL SELECT id FROM ended),
  ev AS (DELETE FROM events WHERE task_id = ANY(ARRAY(SELECT id FROM picked)) RETURNING 1),
  gone AS (DELETE FROM tasks WHERE id = ANY(ARRAY(SELECT id FROM picked))
    AND status IN ('completed', 'failed', 'cancelled') RETURNING 1)
  SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM ev),
         (SELECT count(*) FROM gone)";
/// Of the $2 oldest events, those created before $1 (the head of the primary key).
/// `= ANY(ARRAY(…))`, not `IN (…)`: the ids are fetched first and looked up by key;
/// as a join the planner may scan the whole table when it guesses few old rows.
pub(super) const DELETE_OLD_EVENTS_SQL: &str = "DELETE FROM events WHERE id = ANY(ARRAY(
    SELECT id FROM events ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED))
  AND created_at < $1";

/// Deletes up to `limit` finished tasks of `project` with their events (labels by
/// the cascade), in one statement (`PRUNE_TASKS_SQL`). The rows are locked first
/// (`FOR UPDATE SKIP LOCKED`: in READ COMMITTED the lock re-checks the condition on
/// the row's newest version, and while it is held nobody can change the status);
/// the count triggers lock the project's count rows, which every completion also
/// updates, only from that statement to the commit.
fn tasks(tx: &mut Tx<'_>, project: i64, before: i64, limit: i64) -> Result<PruneCount> {
    let r = tx.query_one(PRUNE_TASKS_SQL, &[&project, &before, &limit])?;
    let (picked, events, tasks): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    Ok(PruneCount {
        more: picked >= limit,
        events: events as u64,
        tasks: tasks as u64,
        ..PruneCount::default()
    })
}

/// Deletes the events created before `before` among the `limit` oldest (ids follow
/// time, see the SQLite side); a head that is not old enough ends the pass.
fn events(tx: &mut Tx<'_>, before: i64, limit: i64) -> Result<PruneCount> {
    let deleted = tx.execute(DELETE_OLD_EVENTS_SQL, &[&before, &limit])?;
    Ok(PruneCount {
        events: deleted,
        more: deleted > 0,
        ..PruneCount::default()
    })
}

/// Deletes at most `limit` idempotency records older than 24 h at `now` (SPEC §5a),
/// skipping rows another instance is deleting; `more` at the limit.
fn idempotency(tx: &mut Tx<'_>, now: i64, limit: i64) -> Result<PruneCount> {
    let n = super::idempotency::purge(tx, now, limit as usize)? as u64;
    Ok(PruneCount {
        idempotency: n,
        more: n >= limit as u64,
        ..PruneCount::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::count_tests::plan_with;
    use super::super::tests::Cluster;
    use super::*;
    use postgres::types::ToSql;

    /// As on SQLite: expired idempotency records go in steps of at most `limit`, with
    /// `more` while there may be others; fresh ones stay.
    #[test]
    fn expired_idempotency_records_are_purged_in_steps_and_fresh_ones_stay() {
        let Some(c) = Cluster::start() else { return };
        let store = PgStore::open(&c.database("idem_purge"), 1).expect("open");
        let now = 1_700_000_000_000i64;
        let ttl = crate::store::IDEMPOTENCY_TTL_MS;
        store
            .run(|tx| {
                tx.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers,
                                                   body, created_at)
                       SELECT 1, 'k' || i, '\\x00', 201, '{}', '\\x00',
                              CASE WHEN i < 25 THEN $1::bigint - $2::bigint - i * 25000000
                                   ELSE $1::bigint - $2::bigint + 1000 END
                         FROM generate_series(0, 34) AS i",
                    &[&now, &ttl],
                )?;
                Ok(())
            })
            .expect("seed");
        let mut steps = Vec::new();
        loop {
            let n = store.run(|tx| idempotency(tx, now, 10)).expect("purge");
            steps.push((n.idempotency, n.more));
            if !n.more {
                break;
            }
        }
        assert_eq!(steps, [(10, true), (10, true), (5, false)]);
        let (left, oldest): (i64, i64) = store
            .run(|tx| {
                let r = tx.query_one(
                    "SELECT count(*), min(created_at) FROM idempotency_keys",
                    &[],
                )?;
                Ok((r.get(0), r.get(1)))
            })
            .expect("count");
        assert_eq!(left, 10);
        assert!(oldest > now - ttl, "an expired record stayed: {oldest}");
    }

    #[test]
    fn each_prune_statement_reads_its_index_not_the_table() {
        // Issue #20: each step stays short however big the tables are, so every
        // statement must find its rows through an index, never a scan of tasks or
        // events (50 000 tasks, mostly unfinished; their events; 10 000 keys).
        let Some(c) = Cluster::start() else { return };
        let store = PgStore::open(&c.database("prune_plans"), 1).expect("open");
        let now = 1_700_000_000_000i64;
        store
            .run(|tx| {
                tx.execute(
                    "INSERT INTO projects (name, created_at, updated_at)
                       SELECT 'p' || i, $1::bigint, $1::bigint FROM generate_series(1, 5) AS i",
                    &[&now],
                )?;
                tx.execute(
                    "INSERT INTO tasks (project_id, title, status, created_at, updated_at,
                                        completed_at)
                       SELECT 1 + i % 5, 't', s.status, $1::bigint - i, $1::bigint - i,
                              CASE WHEN s.status IN ('completed', 'failed') THEN $1::bigint - i END
                         FROM generate_series(1, 50000) AS i,
                              LATERAL (SELECT (ARRAY['pending', 'pending', 'pending',
                                  'in_progress', 'blocked', 'pending', 'pending', 'completed',
                                  'failed', 'cancelled'])[1 + (i % 10)::int] AS status) AS s",
                    &[&now],
                )?;
                tx.execute(
                    "INSERT INTO events (project_id, task_id, type, created_at)
                       SELECT project_id, id, 'created', created_at FROM tasks",
                    &[],
                )?;
                tx.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers,
                                                   body, created_at)
                       SELECT 1, 'k' || i, '\\x00', 201, '', '\\x00', $1::bigint - i * 1000
                         FROM generate_series(1, 10000) AS i",
                    &[&now],
                )?;
                tx.batch("ANALYZE")
            })
            .expect("seed");
        let before = now - 60_000;
        let limit = 200i64;
        let project = 1i64;
        // 100 of the 10 000 keys are past their 24 h.
        let expired = now - 9_900_000;
        let plans = store
            .run(|tx| {
                let pick: [&(dyn ToSql + Sync); 3] = [&project, &before, &limit];
                // The tasks step is one statement: its plan must use all four.
                let step = plan_with(tx, PRUNE_TASKS_SQL, &pick)?;
                Ok([
                    ("tasks_completed", step.clone()),
                    ("tasks_finished", step.clone()),
                    ("events_task", step.clone()),
                    ("tasks_pkey", step),
                    (
                        "events_pkey",
                        plan_with(tx, DELETE_OLD_EVENTS_SQL, &[&before, &limit])?,
                    ),
                    (
                        "idempotency_keys_created",
                        plan_with(
                            tx,
                            super::super::idempotency::PURGE_SQL,
                            &[&expired, &limit],
                        )?,
                    ),
                ])
            })
            .expect("explain");
        for (index, plan) in plans {
            assert!(plan.contains(index), "expected {index}:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "a scan:\n{plan}");
            assert!(!plan.contains("Sort"), "a sort:\n{plan}");
        }
    }
}
