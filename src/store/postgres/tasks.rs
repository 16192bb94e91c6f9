//! SQL of the `tasks` and `task_labels` tables (PostgreSQL): create, read, list,
//! update, delete, claim, heartbeat and stats, with the same answers as
//! `sqlite/tasks.rs`. Read-modify-writes lock their row first (`FOR UPDATE`); a claim
//! is one statement that skips rows other claimers hold (`FOR UPDATE SKIP LOCKED`),
//! so across instances a task goes to exactly one agent (SPEC §10).

use postgres::types::ToSql;
use postgres::Row;
use serde_json::{Map, Value as Json};

use super::events::{self, NewEvent};
use super::{check_version, projects, raw_json, Result, StoreError, Tx};
use crate::clock::now_ms;
use crate::model::*;

const COLUMNS: &str = "id, project_id, title, description, status, priority, assignee, labels, \
     metadata, result, version, lease_expires_at, created_at, updated_at, started_at, completed_at";

fn from_row(r: &Row) -> Result<Task> {
    let status: String = r.get(4);
    Ok(Task {
        id: r.get(0),
        project_id: r.get(1),
        title: r.get(2),
        description: r.get(3),
        status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Pending),
        priority: r.get(5),
        assignee: r.get(6),
        labels: raw_json(r.get(7))?,
        metadata: raw_json(r.get(8))?,
        result: r.get::<_, Option<String>>(9).map(raw_json).transpose()?,
        version: r.get(10),
        lease_expires_at: r.get(11),
        created_at: r.get(12),
        updated_at: r.get(13),
        started_at: r.get(14),
        completed_at: r.get(15),
    })
}

/// A task by id, optionally only within project `pid`; `for_update` locks the row.
pub fn get(tx: &mut Tx<'_>, id: i64, pid: Option<i64>, for_update: bool) -> Result<Task> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1{lock}");
    let task = tx
        .query_opt(&sql, &[&id])?
        .map(|r| from_row(&r))
        .transpose()?;
    match task {
        Some(t) if pid.is_none_or(|p| p == t.project_id) => Ok(t),
        _ => Err(StoreError::NotFound("task")),
    }
}

fn insert_labels(tx: &mut Tx<'_>, pid: i64, id: i64, labels: &[String]) -> Result<()> {
    for l in labels {
        tx.execute(
            "INSERT INTO task_labels (project_id, label, task_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&pid, l, &id],
        )?;
    }
    Ok(())
}

/// Locks the count rows (migration 0002) of a batch with several statuses, in key
/// order, before its inserts change them one statement at a time in batch order:
/// a claim locks (pid, 'in_progress') then (pid, 'pending'), so a batch locking
/// them the other way round would deadlock with it. Locks only (`WHERE false`).
fn lock_counts(tx: &mut Tx<'_>, pid: i64, new: &[NewTask]) -> Result<()> {
    let mut statuses: Vec<&str> = new.iter().map(|t| t.status.as_str()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    if statuses.len() > 1 {
        tx.execute(
            "INSERT INTO task_counts AS c (project_id, status, n)
               SELECT $1, s, 0 FROM unnest($2::text[]) AS s ORDER BY s
             ON CONFLICT (project_id, status) DO UPDATE SET n = c.n WHERE false",
            &[&pid, &statuses],
        )?;
    }
    Ok(())
}

/// Inserts every task of `new` (all or nothing: one transaction), then their
/// `created` events, last, under the project's event lock.
pub fn insert_many(
    tx: &mut Tx<'_>,
    pid: i64,
    new: Vec<NewTask>,
    actor: Option<&str>,
) -> Result<Vec<Task>> {
    projects::ensure_exists(tx, pid)?;
    lock_counts(tx, pid, &new)?;
    let now = now_ms();
    let mut out = Vec::with_capacity(new.len());
    for t in new {
        let started = (t.status == TaskStatus::InProgress).then_some(now);
        let completed = t.status.is_terminal().then_some(now);
        let labels =
            serde_json::to_string(&t.labels).map_err(|e| StoreError::Other(e.to_string()))?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO tasks (project_id, title, description, status, priority, assignee,
                   labels, metadata, result, version, created_at, updated_at, started_at,
                   completed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10, $11, $12) RETURNING id",
                &[
                    &pid,
                    &t.title,
                    &t.description,
                    &t.status.as_str(),
                    &t.priority,
                    &t.assignee,
                    &labels,
                    &t.metadata,
                    &t.result,
                    &now,
                    &started,
                    &completed,
                ],
            )?
            .get(0);
        insert_labels(tx, pid, id, &t.labels)?;
        out.push(Task {
            id,
            project_id: pid,
            title: t.title,
            description: t.description,
            status: t.status,
            priority: t.priority,
            assignee: t.assignee,
            labels: raw_json(labels)?,
            metadata: raw_json(t.metadata)?,
            result: t.result.map(raw_json).transpose()?,
            version: 1,
            lease_expires_at: None,
            created_at: now,
            updated_at: now,
            started_at: started,
            completed_at: completed,
        });
    }
    let evs: Vec<NewEvent<'_>> = out
        .iter()
        .map(|t| (Some(t.id), "created", actor, "{}".to_string()))
        .collect();
    events::record(tx, pid, &evs, now)?;
    Ok(out)
}

/// The SQL of a task listing with this shape of filters.
pub fn list_sql(q: &TaskQuery) -> String {
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE project_id = $1");
    if !q.statuses.is_empty() {
        let list: Vec<String> = q.statuses.iter().map(|_| next()).collect();
        sql.push_str(&format!(" AND status IN ({})", list.join(", ")));
    }
    if q.assignee.is_some() {
        sql.push_str(&format!(" AND assignee = {}", next()));
    }
    if q.label.is_some() {
        sql.push_str(&format!(
            " AND id IN (SELECT task_id FROM task_labels WHERE project_id = $1 AND label = {})",
            next()
        ));
    }
    if q.after.is_some() {
        match q.sort {
            TaskSort::CreatedAt => sql.push_str(&format!(" AND id > {}", next())),
            TaskSort::Priority => {
                let (k, id) = (next(), next());
                sql.push_str(&format!(
                    " AND priority <= {k} AND (priority < {k} OR id > {id})"
                ))
            }
            TaskSort::UpdatedAt => {
                let (k, id) = (next(), next());
                sql.push_str(&format!(
                    " AND updated_at >= {k} AND (updated_at > {k} OR id > {id})"
                ))
            }
        }
    }
    sql.push_str(match q.sort {
        TaskSort::CreatedAt => " ORDER BY id",
        TaskSort::Priority => " ORDER BY priority DESC, id",
        TaskSort::UpdatedAt => " ORDER BY updated_at, id",
    });
    sql.push_str(&format!(" LIMIT {}", next()));
    sql
}

/// One page of project `pid`'s tasks, filtered and ordered by `q`.
pub fn list(tx: &mut Tx<'_>, pid: i64, q: &TaskQuery) -> Result<Page<Task>> {
    projects::ensure_exists(tx, pid)?;
    let mut args: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(pid)];
    for s in &q.statuses {
        args.push(Box::new(s.as_str()));
    }
    if let Some(a) = &q.assignee {
        args.push(Box::new(a.clone()));
    }
    if let Some(l) = &q.label {
        args.push(Box::new(l.clone()));
    }
    if let Some(cur) = q.after {
        if q.sort != TaskSort::CreatedAt {
            args.push(Box::new(cur.key));
        }
        args.push(Box::new(cur.id));
    }
    args.push(Box::new(q.limit as i64 + 1));
    let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|b| b.as_ref()).collect();
    let rows = tx.query(&list_sql(q), &refs)?;
    let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    let more = items.len() > q.limit;
    items.truncate(q.limit);
    Ok(Page { items, more })
}

pub fn update(
    tx: &mut Tx<'_>,
    id: i64,
    pid: Option<i64>,
    patch: &TaskPatch,
    if_match: Option<i64>,
    actor: Option<&str>,
) -> Result<Task> {
    let mut t = get(tx, id, pid, true)?;
    check_version(if_match, t.version)?;
    let now = now_ms();
    let changes = crate::store::patch::apply_task(&mut t, patch, now)?;
    t.version += 1;
    t.updated_at = now;
    tx.execute(
        "UPDATE tasks SET title = $2, description = $3, status = $4, priority = $5,
           assignee = $6, labels = $7, metadata = $8, result = $9, version = $10,
           lease_expires_at = $11, updated_at = $12, started_at = $13, completed_at = $14
         WHERE id = $1",
        &[
            &id,
            &t.title,
            &t.description,
            &t.status.as_str(),
            &t.priority,
            &t.assignee,
            &t.labels.get(),
            &t.metadata.get(),
            &t.result.as_ref().map(|r| r.get()),
            &t.version,
            &t.lease_expires_at,
            &t.updated_at,
            &t.started_at,
            &t.completed_at,
        ],
    )?;
    if let Some(labels) = &patch.labels {
        tx.execute("DELETE FROM task_labels WHERE task_id = $1", &[&id])?;
        insert_labels(tx, t.project_id, id, labels)?;
    }
    let changes = Json::Object(changes).to_string();
    events::record(
        tx,
        t.project_id,
        &[(Some(id), "updated", actor, changes)],
        now,
    )?;
    Ok(t)
}

pub fn delete(
    tx: &mut Tx<'_>,
    id: i64,
    pid: Option<i64>,
    if_match: Option<i64>,
    actor: Option<&str>,
) -> Result<()> {
    let t = get(tx, id, pid, true)?;
    check_version(if_match, t.version)?;
    tx.execute("DELETE FROM tasks WHERE id = $1", &[&id])?;
    let changes = serde_json::json!({ "title": t.title }).to_string();
    events::record(
        tx,
        t.project_id,
        &[(Some(id), "deleted", actor, changes)],
        now_ms(),
    )?;
    Ok(())
}

/// The claim statement: SQLite's claimable rule and order (pending, or in progress
/// with a lease that ran out; priority desc, created_at, id), served by the partial
/// index `tasks_claim`, skipping rows another claimer has locked. $1 project, $2 now,
/// $3 agent, $4 lease end, labels from $5 on.
pub fn claim_sql(nlabels: usize) -> String {
    let mut filter = String::new();
    for i in 0..nlabels {
        filter.push_str(&format!(
            " AND id IN (SELECT task_id FROM task_labels WHERE project_id = $1 AND label = ${})",
            i + 5
        ));
    }
    let returning = COLUMNS
        .split(", ")
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH candidate AS MATERIALIZED (
           SELECT id FROM tasks
            WHERE project_id = $1 AND status IN ('pending', 'in_progress')
              AND (status = 'pending' OR lease_expires_at < $2){filter}
            ORDER BY priority DESC, created_at, id LIMIT 1
            FOR UPDATE SKIP LOCKED)
         UPDATE tasks t SET status = 'in_progress', assignee = $3, lease_expires_at = $4,
           started_at = COALESCE(t.started_at, $2), completed_at = NULL, updated_at = $2,
           version = t.version + 1
         FROM candidate WHERE t.id = candidate.id
         RETURNING {returning}"
    )
}

/// Claims the best claimable task of `pid` for `claim.agent`, or `None`.
pub fn claim_next(tx: &mut Tx<'_>, pid: i64, claim: &Claim) -> Result<Option<Task>> {
    projects::ensure_exists(tx, pid)?;
    let now = now_ms();
    let lease = now + claim.lease_seconds * 1000;
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&pid, &now, &claim.agent, &lease];
    for l in &claim.labels {
        args.push(l);
    }
    let Some(row) = tx.query_opt(&claim_sql(claim.labels.len()), &args)? else {
        return Ok(None);
    };
    let task = from_row(&row)?;
    let changes = serde_json::json!({
        "status": "in_progress",
        "assignee": claim.agent,
        "lease_expires_at": crate::clock::rfc3339(lease),
    })
    .to_string();
    events::record(
        tx,
        pid,
        &[(Some(task.id), "claimed", Some(&claim.agent), changes)],
        now,
    )?;
    Ok(Some(task))
}

/// Extends the lease of a task that `agent` holds; 409 if someone else holds it.
/// The version does not change: a heartbeat must not break the holder's `If-Match`.
pub fn heartbeat(
    tx: &mut Tx<'_>,
    id: i64,
    pid: Option<i64>,
    agent: &str,
    lease_seconds: i64,
) -> Result<Task> {
    let mut t = get(tx, id, pid, true)?;
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
    tx.execute(
        "UPDATE tasks SET lease_expires_at = $2 WHERE id = $1",
        &[&id, &lease],
    )?;
    t.lease_expires_at = Some(lease);
    Ok(t)
}

pub const STATS_OLDEST_PENDING_SQL: &str = "SELECT created_at FROM tasks
     WHERE project_id = $1 AND status = 'pending' ORDER BY id LIMIT 1";
/// Completed in the last hour: whole 10-second buckets after the one the hour starts
/// in (migration 0002), plus an exact count inside that first bucket from the
/// completion index — at most 361 counter rows and 10 s of completions.
/// $1 project, $2 the hour's start in ms.
pub const STATS_COMPLETED_SQL: &str = "SELECT
     (SELECT coalesce(sum(n), 0)::bigint FROM task_completions
       WHERE project_id = $1 AND bucket > $2::bigint / 10000)
   + (SELECT count(*) FROM tasks
       WHERE project_id = $1 AND status = 'completed'
         AND completed_at >= $2::bigint AND completed_at < ($2::bigint / 10000 + 1) * 10000)";
/// Kept by the triggers of migration 0002: a few rows, whatever the number of tasks.
pub const STATS_BY_STATUS_SQL: &str =
    "SELECT status, n FROM task_counts WHERE project_id = $1 AND n > 0";

/// Project `pid`'s counts by status, oldest pending task and completions of the
/// last hour, as SQLite answers them.
pub fn stats(tx: &mut Tx<'_>, pid: i64) -> Result<Stats> {
    projects::ensure_exists(tx, pid)?;
    let now = now_ms();
    let mut by_status = Map::new();
    for s in TaskStatus::ALL {
        by_status.insert(s.as_str().into(), 0.into());
    }
    let mut total = 0;
    for r in tx.query(STATS_BY_STATUS_SQL, &[&pid])? {
        let (status, n): (String, i64) = (r.get(0), r.get(1));
        total += n;
        by_status.insert(status, n.into());
    }
    let oldest: Option<i64> = tx
        .query_opt(STATS_OLDEST_PENDING_SQL, &[&pid])?
        .map(|r| r.get(0));
    let completed_last_hour: i64 = tx
        .query_one(STATS_COMPLETED_SQL, &[&pid, &(now - 3_600_000)])?
        .get(0);
    Ok(Stats {
        project_id: pid,
        total,
        by_status,
        oldest_pending_age_seconds: oldest.map(|t| ((now - t) / 1000).max(0)),
        completed_last_hour,
        timestamp: crate::clock::rfc3339(now),
    })
}

/// Sums the per-project counts of migration 0002: O(projects × statuses).
pub const COUNT_BY_STATUS_SQL: &str =
    "SELECT status, sum(n)::bigint FROM task_counts GROUP BY status";

/// Task counts by status over every project.
pub fn count_by_status(tx: &mut Tx<'_>) -> Result<Vec<(TaskStatus, i64)>> {
    let rows = tx.query(COUNT_BY_STATUS_SQL, &[])?;
    let mut out: Vec<(TaskStatus, i64)> = TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for r in rows {
        let status: String = r.get(0);
        if let Some(slot) = out.iter_mut().find(|(s, _)| s.as_str() == status) {
            slot.1 = r.get(1);
        }
    }
    Ok(out)
}
