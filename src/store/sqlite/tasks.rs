//! SQL of the `tasks` and `task_labels` tables: create, read, list, update, delete,
//! claim, heartbeat and stats.
//!
//! Writes here run on the writer thread inside its transaction, so a read-then-update
//! in one function is atomic (claim relies on it: candidate first, then update by id).

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Row};
use serde_json::{Map, Value as Json};

use super::{check_version, events, optional, projects, raw_json, Result, StoreError};
use crate::clock::now_ms;
use crate::model::*;

const COLUMNS: &str = "id, project_id, title, description, status, priority, assignee, labels, \
     metadata, result, version, lease_expires_at, created_at, updated_at, started_at, completed_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let status: String = r.get(4)?;
    Ok(Task {
        id: r.get(0)?,
        project_id: r.get(1)?,
        title: r.get(2)?,
        description: r.get(3)?,
        status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Pending),
        priority: r.get(5)?,
        assignee: r.get(6)?,
        labels: raw_json(r.get(7)?)?,
        metadata: raw_json(r.get(8)?)?,
        result: r.get::<_, Option<String>>(9)?.map(raw_json).transpose()?,
        version: r.get(10)?,
        lease_expires_at: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        started_at: r.get(14)?,
        completed_at: r.get(15)?,
    })
}

fn to_raw(s: String) -> Result<Box<serde_json::value::RawValue>> {
    raw_json(s).map_err(StoreError::from)
}

/// A task by id, optionally only within project `pid`.
pub fn get(c: &Connection, id: i64, pid: Option<i64>) -> Result<Task> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1");
    let task = optional(c.prepare_cached(&sql)?.query_row([id], from_row))?;
    match task {
        Some(t) if pid.is_none_or(|p| p == t.project_id) => Ok(t),
        _ => Err(StoreError::NotFound("task")),
    }
}

fn insert_labels(c: &Connection, pid: i64, id: i64, labels: &[String]) -> Result<()> {
    let mut st = c.prepare_cached(
        "INSERT OR IGNORE INTO task_labels (project_id, label, task_id) VALUES (?1, ?2, ?3)",
    )?;
    for l in labels {
        st.execute(params![pid, l, id])?;
    }
    Ok(())
}

/// Inserts every task of `new`: all or nothing, since a job that fails after writing
/// rolls its whole transaction back (`writer::commit_batch`).
pub fn insert_many(
    c: &Connection,
    pid: i64,
    new: Vec<NewTask>,
    actor: Option<&str>,
) -> Result<Vec<Task>> {
    projects::ensure_exists(c, pid)?;
    let now = now_ms();
    let mut out = Vec::with_capacity(new.len());
    for t in new {
        let started = (t.status == TaskStatus::InProgress).then_some(now);
        let completed = t.status.is_terminal().then_some(now);
        let labels =
            serde_json::to_string(&t.labels).map_err(|e| StoreError::Other(e.to_string()))?;
        c.prepare_cached(
            "INSERT INTO tasks (project_id, title, description, status, priority, assignee,
               labels, metadata, result, version, created_at, updated_at, started_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?10, ?11, ?12)",
        )?
        .execute(params![
            pid,
            t.title,
            t.description,
            t.status.as_str(),
            t.priority,
            t.assignee,
            labels,
            t.metadata,
            t.result,
            now,
            started,
            completed
        ])?;
        let id = c.last_insert_rowid();
        insert_labels(c, pid, id, &t.labels)?;
        events::record(c, pid, Some(id), "created", actor, "{}", now)?;
        out.push(Task {
            id,
            project_id: pid,
            title: t.title,
            description: t.description,
            status: t.status,
            priority: t.priority,
            assignee: t.assignee,
            labels: to_raw(labels)?,
            metadata: to_raw(t.metadata)?,
            result: t.result.map(to_raw).transpose()?,
            version: 1,
            lease_expires_at: None,
            created_at: now,
            updated_at: now,
            started_at: started,
            completed_at: completed,
        });
    }
    Ok(out)
}

/// The SQL of a task listing with this shape of filters (public for the plan test).
pub fn list_sql(q: &TaskQuery) -> String {
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE project_id = ?");
    if !q.statuses.is_empty() {
        sql.push_str(" AND status IN (");
        sql.push_str(&vec!["?"; q.statuses.len()].join(", "));
        sql.push(')');
    }
    if q.assignee.is_some() {
        sql.push_str(" AND assignee = ?");
    }
    if q.label.is_some() {
        sql.push_str(
            " AND id IN (SELECT task_id FROM task_labels WHERE project_id = ? AND label = ?)",
        );
    }
    let (cursor, order) = match q.sort {
        TaskSort::CreatedAt => (" AND id > ?", " ORDER BY id"),
        TaskSort::Priority => (
            " AND priority <= ? AND (priority < ? OR id > ?)",
            " ORDER BY priority DESC, id",
        ),
        TaskSort::UpdatedAt => (
            " AND updated_at >= ? AND (updated_at > ? OR id > ?)",
            " ORDER BY updated_at, id",
        ),
    };
    if q.after.is_some() {
        sql.push_str(cursor);
    }
    sql.push_str(order);
    sql.push_str(" LIMIT ?");
    sql
}

/// One page of project `pid`'s tasks, filtered and ordered by `q`.
pub fn list(c: &Connection, pid: i64, q: &TaskQuery) -> Result<Page<Task>> {
    projects::ensure_exists(c, pid)?;
    let mut args: Vec<Value> = vec![pid.into()];
    args.extend(q.statuses.iter().map(|s| Value::Text(s.as_str().into())));
    if let Some(a) = &q.assignee {
        args.push(Value::Text(a.clone()));
    }
    if let Some(l) = &q.label {
        args.push(pid.into());
        args.push(Value::Text(l.clone()));
    }
    if let Some(cur) = q.after {
        match q.sort {
            TaskSort::CreatedAt => args.push(cur.id.into()),
            TaskSort::Priority | TaskSort::UpdatedAt => {
                args.extend([cur.key.into(), cur.key.into(), cur.id.into()])
            }
        }
    }
    args.push((q.limit as i64 + 1).into());
    let mut st = c.prepare_cached(&list_sql(q))?;
    let rows = st.query_map(params_from_iter(args), from_row)?;
    let mut items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let more = items.len() > q.limit;
    items.truncate(q.limit);
    Ok(Page { items, more })
}

pub fn update(
    c: &Connection,
    id: i64,
    pid: Option<i64>,
    patch: &TaskPatch,
    if_match: Option<i64>,
    actor: Option<&str>,
) -> Result<Task> {
    let mut t = get(c, id, pid)?;
    check_version(if_match, t.version)?;
    let now = now_ms();
    let changes = crate::store::patch::apply_task(&mut t, patch, now)?;
    t.version += 1;
    t.updated_at = now;
    c.prepare_cached(
        "UPDATE tasks SET title = ?2, description = ?3, status = ?4, priority = ?5, assignee = ?6,
           labels = ?7, metadata = ?8, result = ?9, version = ?10, lease_expires_at = ?11,
           updated_at = ?12, started_at = ?13, completed_at = ?14
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        t.title,
        t.description,
        t.status.as_str(),
        t.priority,
        t.assignee,
        t.labels.get(),
        t.metadata.get(),
        t.result.as_ref().map(|r| r.get()),
        t.version,
        t.lease_expires_at,
        t.updated_at,
        t.started_at,
        t.completed_at
    ])?;
    if let Some(labels) = &patch.labels {
        c.prepare_cached("DELETE FROM task_labels WHERE task_id = ?1")?
            .execute([id])?;
        insert_labels(c, t.project_id, id, labels)?;
    }
    let changes = Json::Object(changes).to_string();
    events::record(c, t.project_id, Some(id), "updated", actor, &changes, now)?;
    Ok(t)
}

pub fn delete(
    c: &Connection,
    id: i64,
    pid: Option<i64>,
    if_match: Option<i64>,
    actor: Option<&str>,
) -> Result<()> {
    let t = get(c, id, pid)?;
    check_version(if_match, t.version)?;
    c.prepare_cached("DELETE FROM tasks WHERE id = ?1")?
        .execute([id])?;
    let changes = serde_json::json!({ "title": t.title }).to_string();
    events::record(
        c,
        t.project_id,
        Some(id),
        "deleted",
        actor,
        &changes,
        now_ms(),
    )?;
    Ok(())
}

/// The candidate subquery of a claim: the best pending task, or the best task whose
/// lease ran out, each found through an index (public for the plan test).
pub fn claim_candidate_sql(nlabels: usize) -> String {
    if nlabels == 0 {
        return "SELECT id FROM (
               SELECT * FROM (SELECT id, priority, created_at FROM tasks
                              WHERE project_id = ?1 AND status = 'pending'
                              ORDER BY priority DESC, created_at, id LIMIT 1)
               UNION ALL
               SELECT * FROM (SELECT id, priority, created_at FROM tasks
                              WHERE project_id = ?1 AND status = 'in_progress'
                                AND lease_expires_at < ?2
                              ORDER BY priority DESC, created_at, id LIMIT 1))
             ORDER BY priority DESC, created_at, id LIMIT 1"
            .to_string();
    }
    let mut sql = "SELECT id FROM tasks WHERE project_id = ?1
         AND (status = 'pending' OR (status = 'in_progress' AND lease_expires_at < ?2))"
        .to_string();
    for i in 0..nlabels {
        sql.push_str(&format!(
            " AND id IN (SELECT task_id FROM task_labels WHERE project_id = ?1 AND label = ?{})",
            i + 3
        ));
    }
    sql.push_str(" ORDER BY priority DESC, created_at, id LIMIT 1");
    sql
}

/// Claims the best claimable task of `pid` for `claim.agent`: finds the candidate,
/// then updates it by id. Both run in the writer's one transaction, so nothing can
/// come between them. (As one `UPDATE … WHERE id = (SELECT …) RETURNING …` SQLite
/// cannot tell the update touches one row and keeps a statement journal of every
/// page it changes: 13 % of a claim's instructions.)
pub fn claim_next(c: &Connection, pid: i64, claim: &Claim) -> Result<Option<Task>> {
    projects::ensure_exists(c, pid)?;
    let now = now_ms();
    let lease = now + claim.lease_seconds * 1000;
    // ?1 project, ?2 now, labels from ?3 on.
    let mut args: Vec<Value> = vec![pid.into(), now.into()];
    args.extend(claim.labels.iter().map(|l| Value::Text(l.clone())));
    let candidate: Option<i64> = optional(
        c.prepare_cached(&claim_candidate_sql(claim.labels.len()))?
            .query_row(params_from_iter(args), |r| r.get(0)),
    )?;
    let Some(id) = candidate else {
        return Ok(None);
    };
    // By id and without RETURNING (SQLite runs RETURNING as a trigger, which also
    // costs the statement journal), then read back.
    c.prepare_cached(
        "UPDATE tasks SET status = 'in_progress', assignee = ?3, lease_expires_at = ?4,
           started_at = COALESCE(started_at, ?2), completed_at = NULL, updated_at = ?2,
           version = version + 1
         WHERE id = ?1",
    )?
    .execute(params![id, now, claim.agent, lease])?;
    let changes = serde_json::json!({
        "status": "in_progress",
        "assignee": claim.agent,
        "lease_expires_at": crate::clock::rfc3339(lease),
    })
    .to_string();
    events::record(
        c,
        pid,
        Some(id),
        "claimed",
        Some(&claim.agent),
        &changes,
        now,
    )?;
    get(c, id, None).map(Some)
}

/// Extends the lease of a task that `agent` holds; 409 if someone else holds it.
/// The version does not change: a heartbeat must not break the holder's `If-Match`.
pub fn heartbeat(
    c: &Connection,
    id: i64,
    pid: Option<i64>,
    agent: &str,
    lease_seconds: i64,
) -> Result<Task> {
    let mut t = get(c, id, pid)?;
    if t.status != TaskStatus::InProgress {
        return Err(StoreError::Conflict(format!(
            "task is {}, not in_progress",
            t.status.as_str()
        )));
    }
    if t.assignee.as_deref() != Some(agent) {
        return Err(StoreError::Conflict("task is held by another agent".into()));
    }
    let lease = now_ms() + lease_seconds * 1000;
    c.prepare_cached("UPDATE tasks SET lease_expires_at = ?2 WHERE id = ?1")?
        .execute(params![id, lease])?;
    t.lease_expires_at = Some(lease);
    Ok(t)
}

pub const STATS_OLDEST_PENDING_SQL: &str =
    "SELECT created_at FROM tasks WHERE project_id = ?1 AND status = 'pending' ORDER BY id LIMIT 1";
/// Completed in the last hour: whole 10-second buckets after the one the hour starts
/// in (migration 0004), plus an exact count inside that first bucket from the
/// completion index — at most 361 counter rows and 10 s of completions.
/// ?1 project, ?2 the hour's start in ms.
pub const STATS_COMPLETED_SQL: &str = "SELECT
     (SELECT coalesce(sum(n), 0) FROM task_completions
       WHERE project_id = ?1 AND bucket > ?2 / 10000)
   + (SELECT count(*) FROM tasks
       WHERE project_id = ?1 AND status = 'completed'
         AND completed_at >= ?2 AND completed_at < (?2 / 10000 + 1) * 10000)";
/// Kept by the triggers of migration 0003: a few rows, whatever the number of tasks.
pub const STATS_BY_STATUS_SQL: &str =
    "SELECT status, n FROM task_counts WHERE project_id = ?1 AND n > 0";

pub fn stats(c: &Connection, pid: i64) -> Result<Stats> {
    projects::ensure_exists(c, pid)?;
    let now = now_ms();
    let mut by_status = Map::new();
    for s in TaskStatus::ALL {
        by_status.insert(s.as_str().into(), 0.into());
    }
    let mut total = 0;
    let mut st = c.prepare_cached(STATS_BY_STATUS_SQL)?;
    let rows = st.query_map([pid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (status, n) = row?;
        total += n;
        by_status.insert(status, n.into());
    }
    let oldest: Option<i64> = optional(
        c.prepare_cached(STATS_OLDEST_PENDING_SQL)?
            .query_row([pid], |r| r.get(0)),
    )?;
    let completed_last_hour = c
        .prepare_cached(STATS_COMPLETED_SQL)?
        .query_row(params![pid, now - 3_600_000], |r| r.get(0))?;
    Ok(Stats {
        project_id: pid,
        total,
        by_status,
        oldest_pending_age_seconds: oldest.map(|t| ((now - t) / 1000).max(0)),
        completed_last_hour,
        timestamp: crate::clock::rfc3339(now),
    })
}

/// Sums the per-project counts of migration 0003: O(projects × statuses).
pub const COUNT_BY_STATUS_SQL: &str = "SELECT status, sum(n) FROM task_counts GROUP BY status";

/// Task counts by status over every project.
pub fn count_by_status(c: &Connection) -> Result<Vec<(TaskStatus, i64)>> {
    let mut st = c.prepare_cached(COUNT_BY_STATUS_SQL)?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out: Vec<(TaskStatus, i64)> = TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for row in rows {
        let (status, n) = row?;
        if let Some(slot) = out.iter_mut().find(|(s, _)| s.as_str() == status) {
            slot.1 = n;
        }
    }
    Ok(out)
}
