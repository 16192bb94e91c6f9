//! SQLite side of the retention pruner (SPEC §5c, issue #20): each step is one job on
//! the writer thread, so it shares a group commit with the claims and creates queued
//! beside it and holds the writer for a few milliseconds at most (the limit the pruner
//! passes bounds it). Rows are found through indexes only: completed tasks by
//! `tasks_completed`, failed and cancelled ones by `tasks_finished` (0006), a task's
//! events by `events_task`, old events by the head of the primary key.
//!
//! Space: deleted rows' pages go to SQLite's free list and new rows reuse them before
//! the file grows, so under a constant load the file stops growing once the retention
//! windows have passed (no auto-vacuum: a file that shrank would only grow back; `db
//! vacuum` gives the space to the filesystem after a load has gone for good).

use std::time::Instant;

use rusqlite::{params, Connection};

use super::{Result, SqliteStore};
use crate::store::{Pacing, PruneCount, PruneStep, Retention, Space};

/// Statuses that may be pruned; written out in every DELETE as a second guard.
const FINISHED: &str = "status IN ('completed', 'failed', 'cancelled')";

impl Retention for SqliteStore {
    fn prune_step(&self, step: PruneStep, limit: usize) -> Result<PruneCount> {
        let limit = limit.max(1) as i64;
        self.write(move |c| {
            let t = Instant::now();
            let mut n = match step {
                PruneStep::Tasks { project, before } => tasks(c, project, before, limit)?,
                PruneStep::Events { before } => events(c, before, limit)?,
                PruneStep::Idempotency { now } => idempotency(c, now, limit)?,
            };
            n.ran = true;
            n.micros = t.elapsed().as_micros() as u64;
            Ok(n)
        })
    }

    /// A step is a job of the one writer, and every create or claim queued behind it
    /// waits it out: about 1 ms, and rests three times as long. (At 4 ms and equal
    /// rests each run's slowest step was 2.3 ms at the median, 4.5 ms at worst, under
    /// 150 tasks/s; at 1 ms, 0.8 and 1.8.)
    fn pacing(&self) -> Pacing {
        Pacing {
            step_target: std::time::Duration::from_millis(1),
            rest_factor: 3,
        }
    }

    fn space(&self) -> Result<Space> {
        self.read(|c| {
            let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(Space {
                free_pages: Some(free),
                page_size: Some(size),
                tuples: Vec::new(),
            })
        })
    }
}

/// The ids of at most `limit` finished tasks of `project` finished before `before`.
fn doomed_tasks(c: &Connection, project: i64, before: i64, limit: i64) -> Result<Vec<i64>> {
    let mut ids: Vec<i64> = c
        .prepare_cached(
            "SELECT id FROM tasks INDEXED BY tasks_completed
             WHERE project_id = ?1 AND status = 'completed' AND completed_at < ?2 LIMIT ?3",
        )?
        .query_map(params![project, before, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let left = limit - ids.len() as i64;
    if left > 0 {
        let more = c
            .prepare_cached(
                "SELECT id FROM tasks INDEXED BY tasks_finished
                 WHERE project_id = ?1 AND status IN ('failed', 'cancelled')
                   AND (CASE WHEN status = 'cancelled' THEN updated_at
                        ELSE coalesce(completed_at, updated_at) END) < ?2
                 LIMIT ?3",
            )?
            .query_map(params![project, before, left], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        ids.extend(more);
    }
    Ok(ids)
}

/// Deletes up to `limit` finished tasks of `project` with their events; their labels
/// go by the foreign-key cascade, and the count triggers (0003, 0004) keep
/// `task_counts` and `task_completions` equal to the rows.
fn tasks(c: &Connection, project: i64, before: i64, limit: i64) -> Result<PruneCount> {
    let ids = doomed_tasks(c, project, before, limit)?;
    let mut n = PruneCount {
        more: ids.len() as i64 >= limit,
        ..PruneCount::default()
    };
    let mut del_events = c.prepare_cached("DELETE FROM events WHERE task_id = ?1")?;
    let mut del_task =
        c.prepare_cached(&format!("DELETE FROM tasks WHERE id = ?1 AND {FINISHED}"))?;
    for id in ids {
        if del_task.execute([id])? == 1 {
            n.tasks += 1;
            n.events += del_events.execute([id])? as u64;
        }
    }
    Ok(n)
}

/// Deletes the events created before `before` among the `limit` oldest. Ids follow
/// time, so the oldest rows are the ones at the head of the primary key: the step
/// reads `limit` rows whatever the table's size, and a head that is not old enough
/// (the boundary) ends the pass.
fn events(c: &Connection, before: i64, limit: i64) -> Result<PruneCount> {
    let deleted = c
        .prepare_cached(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?2)
               AND created_at < ?1",
        )?
        .execute(params![before, limit])? as u64;
    Ok(PruneCount {
        events: deleted,
        more: deleted > 0,
        ..PruneCount::default()
    })
}

/// Deletes at most `limit` idempotency records older than 24 h at `now` (SPEC §5a);
/// `more` when the limit was reached.
fn idempotency(c: &Connection, now: i64, limit: i64) -> Result<PruneCount> {
    let n = super::idempotency::purge(c, now, limit as usize)? as u64;
    Ok(PruneCount {
        idempotency: n,
        more: n >= limit as u64,
        ..PruneCount::default()
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// Idempotency records live 24 h (SPEC §5a): the purge takes the expired ones in
    /// steps of at most `limit`, says when there may be more, and leaves fresh ones.
    #[test]
    fn expired_idempotency_records_are_purged_in_steps_and_fresh_ones_stay() {
        let c = Connection::open_in_memory().expect("open");
        super::super::migrate::apply(&c).expect("migrate");
        let now = 1_700_000_000_000i64;
        let ttl = crate::store::IDEMPOTENCY_TTL_MS;
        // 25 past their 24 h (the oldest a week old), 10 younger than 24 h by a second.
        for i in 0..35i64 {
            let at = if i < 25 {
                now - ttl - i * 25_000_000
            } else {
                now - ttl + 1000
            };
            c.execute(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers,
                                               body, created_at)
                 VALUES (1, ?1, x'00', 201, '{}', x'00', ?2)",
                rusqlite::params![format!("k{i}"), at],
            )
            .expect("insert");
        }
        let left = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM idempotency_keys", [], |r| r.get(0))
                .expect("count")
        };
        let mut steps = Vec::new();
        loop {
            let n = super::idempotency(&c, now, 10).expect("purge");
            steps.push((n.idempotency, n.more));
            if !n.more {
                break;
            }
        }
        assert_eq!(steps, [(10, true), (10, true), (5, false)]);
        assert_eq!(left(&c), 10);
        let oldest: i64 = c
            .query_row("SELECT min(created_at) FROM idempotency_keys", [], |r| {
                r.get(0)
            })
            .expect("min");
        assert!(oldest > now - ttl, "an expired record stayed: {oldest}");
    }

    /// The pruner's lookups use their indexes, never a scan of tasks or events. (The
    /// old-events step reads the head of the primary key, `LIMIT`ed: a bounded scan.)
    #[test]
    fn prune_queries_use_indexes() {
        let c = Connection::open_in_memory().expect("open");
        super::super::migrate::apply(&c).expect("migrate");
        for sql in [
            "SELECT id FROM tasks WHERE project_id = 1 AND status IN ('failed', 'cancelled')
               AND (CASE WHEN status = 'cancelled' THEN updated_at
                    ELSE coalesce(completed_at, updated_at) END) < 5 LIMIT 10",
            "SELECT id FROM tasks WHERE project_id = 1 AND status = 'completed'
               AND completed_at < 5 LIMIT 10",
            "DELETE FROM events WHERE task_id = 7",
        ] {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect(sql);
            let plan: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .expect("plan")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            let text = plan.join(" | ");
            assert!(
                !plan.iter().any(|p| p.starts_with("SCAN ")),
                "{sql}: {text}"
            );
        }
    }
}
