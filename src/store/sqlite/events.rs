//! SQL of the `events` table: the activity feed every write appends to.

use rusqlite::{params, Connection};

use super::{raw_json, Result};
use crate::model::{Event, EventKind, Page};

/// Appends one event; runs inside the writer's transaction.
pub fn record(
    c: &Connection,
    pid: i64,
    task_id: Option<i64>,
    kind: &EventKind,
    actor: Option<&str>,
    changes: &str,
    now: i64,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO events (project_id, task_id, type, actor, changes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![pid, task_id, kind.as_str(), actor, changes, now])?;
    // Streams and waiting claims hear of it once the writer has committed (SPEC §9).
    crate::changes::note_event(pid, kind.as_str());
    Ok(())
}

pub const LIST_SQL: &str = "SELECT id, project_id, task_id, type, actor, changes, created_at
     FROM events WHERE project_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";

/// Events of project `pid` after event id `after`, oldest first.
pub fn list(c: &Connection, pid: i64, after: i64, limit: usize) -> Result<Page<Event>> {
    super::projects::ensure_exists(c, pid)?;
    let mut st = c.prepare_cached(LIST_SQL)?;
    let rows = st.query_map(params![pid, after, limit as i64 + 1], |r| {
        Ok(Event {
            id: r.get(0)?,
            project_id: r.get(1)?,
            task_id: r.get(2)?,
            kind: EventKind::from_stored(r.get(3)?),
            actor: r.get(4)?,
            changes: raw_json(r.get(5)?)?,
            created_at: r.get(6)?,
        })
    })?;
    let mut items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, more })
}
