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
use crate::store::queue;

const COLUMNS: &str = "id, project_id, title, description, status, priority, assignee, labels, \
     metadata, result, version, lease_expires_at, created_at, updated_at, started_at, completed_at, \
     error, attempt, max_attempts, not_before, depends_on, lease_token, dead, deps_waiting";

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
        error: r.get::<_, Option<String>>(16)?.map(raw_json).transpose()?,
        attempt: r.get(17)?,
        max_attempts: r.get(18)?,
        not_before: r.get(19)?,
        depends_on: raw_json(r.get(20)?)?,
        lease_token: None,
        lease_hash: r.get(21)?,
        dead: r.get(22)?,
        deps_waiting: r.get(23)?,
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
/// rolls its whole transaction back (`writer::commit_batch`). Every dependency is
/// checked before the first insert.
pub fn insert_many(
    c: &Connection,
    pid: i64,
    new: Vec<NewTask>,
    actor: Option<&str>,
) -> Result<Vec<Task>> {
    let project = projects::get(c, pid)?;
    for t in &new {
        queue::check_dependencies(
            None,
            pid,
            &t.depends_on,
            |d| project_of(c, d),
            |d| deps_of(c, d),
        )?;
    }
    let now = now_ms();
    let mut out = Vec::with_capacity(new.len());
    for t in new {
        let (waiting, failed_dep) = dependency_state(c, &t.depends_on)?;
        let st = queue::start(&t, project.default_max_attempts, failed_dep, now);
        let labels =
            serde_json::to_string(&t.labels).map_err(|e| StoreError::Other(e.to_string()))?;
        let depends_on =
            serde_json::to_string(&t.depends_on).map_err(|e| StoreError::Other(e.to_string()))?;
        c.prepare_cached(
            "INSERT INTO tasks (project_id, title, description, status, priority, assignee,
               labels, metadata, result, version, created_at, updated_at, started_at, completed_at,
               error, max_attempts, not_before, depends_on, deps_waiting, lease_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
               ?17, ?18)",
        )?
        .execute(params![
            pid,
            t.title,
            t.description,
            st.status.as_str(),
            t.priority,
            t.assignee,
            labels,
            t.metadata,
            t.result,
            now,
            st.started_at,
            st.completed_at,
            st.error,
            st.max_attempts,
            t.not_before,
            depends_on,
            waiting,
            st.lease_expires_at
        ])?;
        let id = c.last_insert_rowid();
        insert_labels(c, pid, id, &t.labels)?;
        insert_deps(c, id, &t.depends_on)?;
        events::record(c, pid, Some(id), &EventKind::Created, actor, "{}", now)?;
        out.push(Task {
            id,
            project_id: pid,
            title: t.title,
            description: t.description,
            status: st.status,
            priority: t.priority,
            assignee: t.assignee,
            labels: to_raw(labels)?,
            metadata: to_raw(t.metadata)?,
            result: t.result.map(to_raw).transpose()?,
            error: st.error.map(to_raw).transpose()?,
            attempt: 0,
            max_attempts: st.max_attempts,
            not_before: t.not_before,
            depends_on: to_raw(depends_on)?,
            version: 1,
            lease_expires_at: st.lease_expires_at,
            lease_token: None,
            lease_hash: None,
            dead: false,
            deps_waiting: waiting,
            created_at: now,
            updated_at: now,
            started_at: st.started_at,
            completed_at: st.completed_at,
        });
    }
    Ok(out)
}

/// The project of task `id`, if it exists.
fn project_of(c: &Connection, id: i64) -> Result<Option<i64>> {
    optional(
        c.prepare_cached("SELECT project_id FROM tasks WHERE id = ?1")?
            .query_row([id], |r| r.get(0)),
    )
}

/// The ids task `id` depends on.
fn deps_of(c: &Connection, id: i64) -> Result<Vec<i64>> {
    let mut st = c.prepare_cached("SELECT dep_id FROM task_deps WHERE task_id = ?1")?;
    let rows = st.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
}

fn insert_deps(c: &Connection, id: i64, deps: &[i64]) -> Result<()> {
    let mut st =
        c.prepare_cached("INSERT OR IGNORE INTO task_deps (dep_id, task_id) VALUES (?1, ?2)")?;
    for d in deps {
        st.execute(params![d, id])?;
    }
    Ok(())
}

/// Of `deps`: how many are not completed yet, and one that failed or was cancelled
/// (or is blocked itself). A dependency that no longer exists was pruned after it
/// finished, or deleted: it counts as satisfied (SPEC §5c).
fn dependency_state(c: &Connection, deps: &[i64]) -> Result<(i64, Option<i64>)> {
    let mut waiting = 0;
    let mut failed = None;
    let mut st = c.prepare_cached("SELECT status FROM tasks WHERE id = ?1")?;
    for &d in deps {
        let status: Option<String> = optional(st.query_row([d], |r| r.get(0)))?;
        match status.as_deref().and_then(TaskStatus::parse) {
            None | Some(TaskStatus::Completed) => {}
            Some(TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Blocked) => {
                waiting += 1;
                failed.get_or_insert(d);
            }
            Some(_) => waiting += 1,
        }
    }
    Ok((waiting, failed))
}

/// Carries a status change of task `id` to the tasks that depend on it: their count
/// of dependencies to wait for moves by `r.delta`, and on a failure, cancellation or
/// deletion of an unfinished task every pending dependent, transitively, becomes
/// `blocked` with one event each.
fn ripple(c: &Connection, id: i64, pid: i64, r: queue::Ripple, now: i64) -> Result<()> {
    if r.delta != 0 {
        c.prepare_cached(
            "UPDATE tasks SET deps_waiting = deps_waiting + ?2
             WHERE id IN (SELECT task_id FROM task_deps WHERE dep_id = ?1)",
        )?
        .execute(params![id, r.delta])?;
    }
    if !r.block {
        return Ok(());
    }
    let error = queue::blocked_error(id);
    let changes = queue::blocked_changes(id);
    let mut todo = vec![id];
    while let Some(x) = todo.pop() {
        let mut st = c.prepare_cached(
            "SELECT t.id FROM task_deps d JOIN tasks t ON t.id = d.task_id
             WHERE d.dep_id = ?1 AND t.status = 'pending'",
        )?;
        let ids = st
            .query_map([x], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        for d in ids {
            c.prepare_cached(
                "UPDATE tasks SET status = 'blocked', error = ?2, updated_at = ?3,
                   version = version + 1
                 WHERE id = ?1",
            )?
            .execute(params![d, error, now])?;
            events::record(c, pid, Some(d), &EventKind::Blocked, None, &changes, now)?;
            todo.push(d);
        }
    }
    Ok(())
}

/// A task back in `pending`: counts what it waits for again, or blocks it when one
/// of its dependencies failed or was cancelled (SPEC §5a); the blocking dependency.
fn rearm(c: &Connection, t: &mut Task) -> Result<Option<i64>> {
    let deps: Vec<i64> = serde_json::from_str(t.depends_on.get()).unwrap_or_default();
    let (waiting, failed) = dependency_state(c, &deps)?;
    queue::rearm(t, waiting, failed)
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

/// Writes every column a patch or an attempt's end can change.
fn write_back(c: &Connection, t: &Task) -> Result<()> {
    c.prepare_cached(
        "UPDATE tasks SET title = ?2, description = ?3, status = ?4, priority = ?5, assignee = ?6,
           labels = ?7, metadata = ?8, result = ?9, version = ?10, lease_expires_at = ?11,
           updated_at = ?12, started_at = ?13, completed_at = ?14, error = ?15, attempt = ?16,
           max_attempts = ?17, not_before = ?18, depends_on = ?19, lease_token = ?20, dead = ?21,
           deps_waiting = ?22
         WHERE id = ?1",
    )?
    .execute(params![
        t.id,
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
        t.completed_at,
        t.error.as_ref().map(|r| r.get()),
        t.attempt,
        t.max_attempts,
        t.not_before,
        t.depends_on.get(),
        t.lease_hash,
        t.dead,
        t.deps_waiting
    ])?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn update(
    c: &Connection,
    id: i64,
    pid: Option<i64>,
    patch: &TaskPatch,
    if_match: Option<i64>,
    token: Option<&str>,
    actor: Option<&str>,
) -> Result<Task> {
    let mut t = get(c, id, pid)?;
    check_version(if_match, t.version)?;
    let now = now_ms();
    queue::check_override(&t, if_match, token, now)?;
    if let Some(deps) = &patch.depends_on {
        queue::check_dependencies(
            Some(id),
            t.project_id,
            deps,
            |d| project_of(c, d),
            |d| deps_of(c, d),
        )?;
    }
    let from = t.status;
    let changes = crate::store::patch::apply_task(&mut t, patch, now)?;
    if patch.max_attempts.is_some() {
        queue::check_attempts(&t)?;
    }
    // Re-armed or re-wired: count what it waits for again (or block it).
    let blocked_by =
        if patch.depends_on.is_some() || (t.status == TaskStatus::Pending && from != t.status) {
            rearm(c, &mut t)?
        } else {
            None
        };
    t.version += 1;
    t.updated_at = now;
    write_back(c, &t)?;
    if let Some(labels) = &patch.labels {
        c.prepare_cached("DELETE FROM task_labels WHERE task_id = ?1")?
            .execute([id])?;
        insert_labels(c, t.project_id, id, labels)?;
    }
    if let Some(deps) = &patch.depends_on {
        c.prepare_cached("DELETE FROM task_deps WHERE task_id = ?1")?
            .execute([id])?;
        insert_deps(c, id, deps)?;
    }
    let changes = Json::Object(changes).to_string();
    let kind = queue::patch_event(patch.status.filter(|s| *s != from));
    events::record(c, t.project_id, Some(id), &kind, actor, &changes, now)?;
    if let Some(dep) = blocked_by {
        let changes = queue::blocked_changes(dep);
        events::record(
            c,
            t.project_id,
            Some(id),
            &EventKind::Blocked,
            None,
            &changes,
            now,
        )?;
    }
    let r = queue::ripple(from, t.status).blocking_if(blocked_by.is_some());
    ripple(c, id, t.project_id, r, now)?;
    Ok(t)
}

pub fn delete(
    c: &Connection,
    id: i64,
    pid: Option<i64>,
    if_match: Option<i64>,
    token: Option<&str>,
    actor: Option<&str>,
) -> Result<()> {
    let t = get(c, id, pid)?;
    check_version(if_match, t.version)?;
    let now = now_ms();
    queue::check_override(&t, if_match, token, now)?;
    c.prepare_cached("DELETE FROM tasks WHERE id = ?1")?
        .execute([id])?;
    let changes = serde_json::json!({ "title": t.title }).to_string();
    events::record(
        c,
        t.project_id,
        Some(id),
        &EventKind::Deleted,
        actor,
        &changes,
        now,
    )?;
    // Deleted unfinished: its dependents can never see it complete (SPEC §5c).
    if !t.status.is_terminal() {
        ripple(c, id, t.project_id, queue::Ripple::DELETED, now)?;
    }
    Ok(())
}

/// The candidate query of a claim: up to ?2 claimable tasks in claim order, from the
/// partial index `tasks_claim` (public for the plan test). ?1 project, ?3 now,
/// labels from ?4 on.
pub fn claim_candidate_sql(nlabels: usize) -> String {
    let mut sql = "SELECT id FROM tasks WHERE project_id = ?1 AND status = 'pending'
         AND deps_waiting = 0 AND coalesce(not_before, created_at) <= ?3"
        .to_string();
    for i in 0..nlabels {
        sql.push_str(&format!(
            " AND id IN (SELECT task_id FROM task_labels WHERE project_id = ?1 AND label = ?{})",
            i + 4
        ));
    }
    sql.push_str(" ORDER BY priority DESC, coalesce(not_before, created_at), id LIMIT ?2");
    sql
}

/// Claims up to `claim.limit` claimable tasks of `pid` for `claim.agent`: first the
/// project's own expired leases go back (so they are claimable at once), then the
/// candidates are found and each updated by id, all in the writer's one
/// transaction, so nothing can come between. (As one `UPDATE … WHERE id IN (SELECT
/// …) RETURNING …` SQLite keeps a statement journal of every page it changes.)
/// A paused or archived project has nothing to claim.
pub fn claim_next(c: &Connection, pid: i64, claim: &Claim) -> Result<Vec<Task>> {
    let project = projects::get(c, pid)?;
    if project.status != ProjectStatus::Active {
        return Ok(Vec::new());
    }
    let now = now_ms();
    sweep(c, Some(pid), now, 1000)?;
    let lease = now + claim.lease_seconds * 1000;
    let mut args: Vec<Value> = vec![pid.into(), (claim.limit as i64).into(), now.into()];
    args.extend(claim.labels.iter().map(|l| Value::Text(l.clone())));
    let ids = c
        .prepare_cached(&claim_candidate_sql(claim.labels.len()))?
        .query_map(params_from_iter(args), |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    let tokens = queue::new_tokens(ids.len())?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, (token, hash)) in ids.into_iter().zip(tokens) {
        // By id and without RETURNING (SQLite runs RETURNING as a trigger, which also
        // costs the statement journal), then read back.
        c.prepare_cached(
            "UPDATE tasks SET status = 'in_progress', assignee = ?3, lease_expires_at = ?4,
               lease_token = ?5, attempt = attempt + 1,
               started_at = COALESCE(started_at, ?2), completed_at = NULL, updated_at = ?2,
               version = version + 1
             WHERE id = ?1",
        )?
        .execute(params![id, now, claim.agent, lease, hash])?;
        let mut t = get(c, id, None)?;
        let changes = serde_json::json!({
            "status": "in_progress",
            "assignee": claim.agent,
            "lease_expires_at": crate::clock::rfc3339(lease),
            "attempt": t.attempt,
        })
        .to_string();
        events::record(
            c,
            pid,
            Some(id),
            &EventKind::Claimed,
            Some(&claim.agent),
            &changes,
            now,
        )?;
        t.lease_token = Some(token);
        out.push(t);
    }
    Ok(out)
}

/// A replayed claim answer with fresh tokens for the leases it still holds
/// (`queue::reissue_tokens`).
pub fn reissue_tokens(c: &Connection, body: &[u8], now: i64) -> Result<Vec<u8>> {
    queue::reissue_tokens(body, |id, attempt, agent| {
        let Ok(t) = get(c, id, None) else {
            return Ok(None);
        };
        if !queue::same_lease(&t, attempt, agent, now) {
            return Ok(None);
        }
        let (token, hash) = queue::new_token()?;
        c.prepare_cached("UPDATE tasks SET lease_token = ?2 WHERE id = ?1")?
            .execute(params![id, hash])?;
        Ok(Some(token))
    })
}

/// Extends a live lease the caller proves it holds. The version does not change: a
/// heartbeat must not break the holder's `If-Match`.
pub fn heartbeat(
    c: &Connection,
    id: i64,
    pid: Option<i64>,
    proof: &LeaseProof,
    lease_seconds: i64,
) -> Result<Task> {
    let mut t = get(c, id, pid)?;
    let now = now_ms();
    queue::check_lease(&t, proof, now)?;
    let lease = now + lease_seconds * 1000;
    c.prepare_cached("UPDATE tasks SET lease_expires_at = ?2 WHERE id = ?1")?
        .execute(params![id, lease])?;
    t.lease_expires_at = Some(lease);
    Ok(t)
}

/// Completes a task whose live lease `token` names.
pub fn complete(
    c: &Connection,
    id: i64,
    pid: Option<i64>,
    token: &str,
    result: Option<String>,
) -> Result<Task> {
    let mut t = get(c, id, pid)?;
    let now = now_ms();
    queue::check_lease(&t, &LeaseProof::Token(token.into()), now)?;
    let from = t.status;
    crate::store::patch::transition(&mut t, TaskStatus::Completed, now);
    if let Some(r) = result {
        t.result = Some(to_raw(r)?);
    }
    t.error = None;
    t.version += 1;
    t.updated_at = now;
    write_back(c, &t)?;
    let changes = serde_json::json!({ "status": "completed", "attempt": t.attempt }).to_string();
    let actor = t.assignee.clone();
    events::record(
        c,
        t.project_id,
        Some(id),
        &EventKind::Completed,
        actor.as_deref(),
        &changes,
        now,
    )?;
    ripple(c, id, t.project_id, queue::ripple(from, t.status), now)?;
    Ok(t)
}

/// Ends the attempt of a task whose live lease the failure's token names.
pub fn fail(c: &Connection, id: i64, pid: Option<i64>, f: &Failure) -> Result<Task> {
    let mut t = get(c, id, pid)?;
    let now = now_ms();
    queue::check_lease(&t, &LeaseProof::Token(f.token.clone()), now)?;
    let backoff = projects::get(c, t.project_id)?.retry_backoff_seconds;
    let end = queue::after_failure(&t, f, backoff, now);
    let actor = t.assignee.clone();
    end_attempt(c, &mut t, &end, actor.as_deref(), now)?;
    Ok(t)
}

/// Applies an attempt's end to `t`: its new status, schedule and error, one event,
/// and the ripple to its dependents.
fn end_attempt(
    c: &Connection,
    t: &mut Task,
    end: &queue::End,
    actor: Option<&str>,
    now: i64,
) -> Result<()> {
    let (changes, r) = queue::apply_end(t, end, now)?;
    let blocked_by = match t.status {
        TaskStatus::Pending => rearm(c, t)?,
        _ => None,
    };
    write_back(c, t)?;
    events::record(
        c,
        t.project_id,
        Some(t.id),
        &end.event,
        actor,
        &changes,
        now,
    )?;
    if let Some(dep) = blocked_by {
        let changes = queue::blocked_changes(dep);
        events::record(
            c,
            t.project_id,
            Some(t.id),
            &EventKind::Blocked,
            None,
            &changes,
            now,
        )?;
    }
    ripple(
        c,
        t.id,
        t.project_id,
        r.blocking_if(blocked_by.is_some()),
        now,
    )
}

/// Whether any lease has run out (a cheap read, so an idle sweeper never takes the
/// writer).
pub fn any_expired(c: &Connection, now: i64) -> Result<bool> {
    Ok(optional(
        c.prepare_cached(
            "SELECT 1 FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= ?1 LIMIT 1",
        )?
        .query_row([now], |_| Ok(())),
    )?
    .is_some())
}

/// Returns up to `limit` tasks whose lease ran out (of project `pid`, or of every
/// project) to pending, or fails them at their last attempt, one `lease_expired`
/// event each; how many.
pub fn sweep(c: &Connection, pid: Option<i64>, now: i64, limit: usize) -> Result<usize> {
    let ids = c
        .prepare_cached(
            "SELECT id FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= ?1
               AND (?2 IS NULL OR project_id = ?2)
             ORDER BY lease_expires_at LIMIT ?3",
        )?
        .query_map(params![now, pid, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    for &id in &ids {
        let mut t = get(c, id, None)?;
        let end = queue::after_expiry(&t);
        end_attempt(c, &mut t, &end, None, now)?;
    }
    Ok(ids.len())
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
/// The queue's figures of SPEC §5a. `scheduled` depends on the clock (pending with
/// not_before > now), so it is counted from its partial index, tasks_scheduled
/// (migration 0005; `INDEXED BY`: without statistics the planner would take the
/// status index and count every pending task). waiting, retrying and dead are
/// counters, the reserved keys of task_counts (migration 0007): O(1) each, however
/// many tasks are in those states. ?1 project, ?2 now.
pub const STATS_QUEUE_SQL: &str = "SELECT
     (SELECT count(*) FROM tasks INDEXED BY tasks_scheduled
       WHERE project_id = ?1 AND status = 'pending' AND not_before IS NOT NULL
         AND not_before > ?2),
     (SELECT coalesce(sum(n), 0) FROM task_counts
       WHERE project_id = ?1 AND status = 'pending:waiting'),
     (SELECT coalesce(sum(n), 0) FROM task_counts
       WHERE project_id = ?1 AND status = 'pending:retrying'),
     (SELECT coalesce(sum(n), 0) FROM task_counts
       WHERE project_id = ?1 AND status = 'failed:dead')";
/// Kept by the triggers of migration 0003: a few rows, whatever the number of tasks.
/// The keys with a ':' are 0007's sub-state counters, not statuses.
pub const STATS_BY_STATUS_SQL: &str = "SELECT status, n FROM task_counts
     WHERE project_id = ?1 AND n > 0 AND instr(status, ':') = 0";

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
    let (scheduled, waiting, retrying, dead) = c
        .prepare_cached(STATS_QUEUE_SQL)?
        .query_row(params![pid, now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    Ok(Stats {
        project_id: pid,
        total,
        by_status,
        scheduled,
        waiting,
        retrying,
        dead,
        oldest_pending_age_seconds: oldest.map(|t| ((now - t) / 1000).max(0)),
        completed_last_hour,
        timestamp: crate::clock::rfc3339(now),
    })
}

/// Sums the per-project counts of migration 0003: O(projects × statuses).
pub const COUNT_BY_STATUS_SQL: &str =
    "SELECT status, sum(n) FROM task_counts WHERE instr(status, ':') = 0 GROUP BY status";

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
