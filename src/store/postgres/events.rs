//! SQL of the `events` table (PostgreSQL): the activity feed every write appends to,
//! in commit order within a project (see the module doc of `postgres` for why the
//! advisory lock).

use super::{raw_json, Result, Tx};
use crate::model::{Event, EventKind, Page};

/// First key of the advisory locks that order a project's event ids ("evnt").
const EVENTS_LOCK: i32 = 0x6576_6e74;

/// One event to append: task id, type, actor, changes (JSON text).
pub type NewEvent<'a> = (Option<i64>, EventKind, Option<&'a str>, String);

/// Appends `events` to project `pid`'s feed. Call it as the transaction's last
/// statement: it takes the project's event lock, held until commit, so no other
/// transaction takes a later event id of this project before this one is visible.
///
/// One statement, one round trip, whatever the number of events: the lock is held
/// from here to the end of the commit, and every writer of the project waits for
/// it, so each round trip inside it costs the project's whole write rate. The lock
/// is taken before any id: `held` is not inlined (its functions are volatile), the
/// identity value is computed above the join, and no row leaves the join before
/// `held` has run (the plan is a nested loop over the events, in `n` order, with
/// `held` inside). Callers never pass an empty list (it would take no lock).
pub fn record(tx: &mut Tx<'_>, pid: i64, events: &[NewEvent<'_>], now: i64) -> Result<()> {
    // The lock's second key is an int4: projects beyond 2^31 share locks, which only
    // serializes them a little more.
    let key = pid as i32;
    // With the lock, the wake-up of every instance's streams and waiting claims,
    // delivered at commit (notify.rs, SPEC §9).
    let note = super::notify::payload(pid, events.iter().map(|e| e.1.as_str()));
    let task_ids: Vec<Option<i64>> = events.iter().map(|e| e.0).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    let actors: Vec<Option<&str>> = events.iter().map(|e| e.2).collect();
    let changes: Vec<&str> = events.iter().map(|e| e.3.as_str()).collect();
    tx.execute(
        RECORD_SQL,
        &[
            &EVENTS_LOCK,
            &key,
            &super::notify::CHANNEL,
            &note,
            &pid,
            &now,
            &task_ids,
            &kinds,
            &actors,
            &changes,
        ],
    )?;
    Ok(())
}

const RECORD_SQL: &str = "WITH held AS (SELECT pg_advisory_xact_lock($1, $2), pg_notify($3, $4))
     INSERT INTO events (project_id, task_id, type, actor, changes, created_at)
     SELECT $5, e.task_id, e.type, e.actor, e.changes, $6
       FROM held, unnest($7::bigint[], $8::text[], $9::text[], $10::text[])
            WITH ORDINALITY AS e (task_id, type, actor, changes, n)
      ORDER BY e.n";

pub const LIST_SQL: &str = "SELECT id, project_id, task_id, type, actor, changes, created_at
     FROM events WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3";

/// Events of project `pid` after event id `after`, oldest first.
pub fn list(tx: &mut Tx<'_>, pid: i64, after: i64, limit: usize) -> Result<Page<Event>> {
    super::projects::ensure_exists(tx, pid)?;
    let rows = tx.query(LIST_SQL, &[&pid, &after, &(limit as i64 + 1)])?;
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        items.push(Event {
            id: r.get(0),
            project_id: r.get(1),
            task_id: r.get(2),
            kind: EventKind::from_stored(r.get(3)),
            actor: r.get(4),
            changes: raw_json(r.get(5))?,
            created_at: r.get(6),
        });
    }
    let more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, more })
}
