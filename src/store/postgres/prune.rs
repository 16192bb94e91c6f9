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
use crate::store::{PruneCount, PruneStep, Retention, Space};

/// Advisory lock key of the pruner ("dashprun").
const PRUNE_LOCK: i64 = 0x6461_7368_7072_756e;

impl Retention for PgStore {
    fn prune_step(&self, step: PruneStep, limit: usize) -> Result<PruneCount> {
        let limit = limit.max(1) as i64;
        self.run(|tx| {
            let t = Instant::now();
            // Short waits only: a step that would queue behind a long lock gives up
            // (Busy) and the next run tries again.
            tx.batch("SET LOCAL lock_timeout = '1s'")?;
            let got: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])?
                .get(0);
            if !got {
                return Ok(PruneCount::default());
            }
            let mut n = match step {
                PruneStep::Tasks { project, before } => tasks(tx, project, before, limit)?,
                PruneStep::Events { before } => events(tx, before, limit)?,
                PruneStep::Idempotency { now } => idempotency(tx, now, limit)?,
            };
            n.ran = true;
            n.micros = t.elapsed().as_micros() as u64;
            Ok(n)
        })
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

/// Deletes up to `limit` finished tasks of `project` with their events (labels by
/// the cascade). The rows are locked first (`FOR UPDATE SKIP LOCKED`: in READ
/// COMMITTED the lock re-checks the condition on the row's newest version, and while
/// it is held nobody can change the status), their events go next, and the tasks
/// last, in one statement: the count triggers lock the project's count rows, which
/// every completion also updates, only for that statement and the commit.
fn tasks(tx: &mut Tx<'_>, project: i64, before: i64, limit: i64) -> Result<PruneCount> {
    let mut ids: Vec<i64> = tx
        .query(
            "SELECT id FROM tasks
              WHERE project_id = $1 AND status = 'completed' AND completed_at < $2
              LIMIT $3 FOR UPDATE SKIP LOCKED",
            &[&project, &before, &limit],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let left = limit - ids.len() as i64;
    if left > 0 {
        let more = tx.query(
            "SELECT id FROM tasks
              WHERE project_id = $1 AND status IN ('failed', 'cancelled')
                AND (CASE WHEN status = 'cancelled' THEN updated_at
                     ELSE coalesce(completed_at, updated_at) END) < $2
              LIMIT $3 FOR UPDATE SKIP LOCKED",
            &[&project, &before, &left],
        )?;
        ids.extend(more.iter().map(|r| r.get::<_, i64>(0)));
    }
    let mut n = PruneCount {
        more: ids.len() as i64 >= limit,
        ..PruneCount::default()
    };
    if ids.is_empty() {
        return Ok(n);
    }
    n.events = tx.execute("DELETE FROM events WHERE task_id = ANY($1)", &[&ids])?;
    n.tasks = tx.execute(
        "DELETE FROM tasks WHERE id = ANY($1)
            AND status IN ('completed', 'failed', 'cancelled')",
        &[&ids],
    )?;
    Ok(n)
}

/// Deletes the events created before `before` among the `limit` oldest (ids follow
/// time, see the SQLite side); a head that is not old enough ends the pass.
fn events(tx: &mut Tx<'_>, before: i64, limit: i64) -> Result<PruneCount> {
    let deleted = tx.execute(
        "DELETE FROM events WHERE id IN (
           SELECT id FROM events ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
         AND created_at < $1",
        &[&before, &limit],
    )?;
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
