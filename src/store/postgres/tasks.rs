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
use crate::store::queue;

const COLUMNS: &str = "id, project_id, title, description, status, priority, assignee, labels, \
     metadata, result, version, lease_expires_at, created_at, updated_at, started_at, completed_at, \
     error, attempt, max_attempts, not_before, depends_on, lease_token, dead, deps_waiting";

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
        error: r.get::<_, Option<String>>(16).map(raw_json).transpose()?,
        attempt: r.get(17),
        max_attempts: r.get(18),
        not_before: r.get(19),
        depends_on: raw_json(r.get(20))?,
        lease_token: None,
        lease_hash: r.get(21),
        dead: r.get(22),
        deps_waiting: r.get(23),
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
            "INSERT INTO task_counts AS c (project_id, status, shard, n)
               SELECT $1, s, count_shard(), 0 FROM unnest($2::text[]) AS s ORDER BY s
             ON CONFLICT (project_id, status, shard) DO UPDATE SET n = c.n WHERE false",
            &[&pid, &statuses],
        )?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(e.to_string()))
}

/// The columns of a batch of new tasks, one array each, for one `unnest()` insert.
#[derive(Default)]
struct Columns {
    title: Vec<String>,
    description: Vec<String>,
    status: Vec<&'static str>,
    priority: Vec<i64>,
    assignee: Vec<Option<String>>,
    labels: Vec<String>,
    metadata: Vec<String>,
    result: Vec<Option<String>>,
    started_at: Vec<Option<i64>>,
    completed_at: Vec<Option<i64>>,
    error: Vec<Option<String>>,
    max_attempts: Vec<i64>,
    not_before: Vec<Option<i64>>,
    depends_on: Vec<String>,
    deps_waiting: Vec<i64>,
    lease_expires_at: Vec<Option<i64>>,
}

/// Inserts every task of `new` (all or nothing: one transaction) in one statement,
/// so a bulk create costs one round trip and one run of the count triggers, not one
/// per task; then their labels in one more, dependencies (rare) a task at a time,
/// and their `created` events last, under the project's event lock.
pub fn insert_many(
    tx: &mut Tx<'_>,
    pid: i64,
    new: Vec<NewTask>,
    actor: Option<&str>,
) -> Result<Vec<Task>> {
    let project = projects::get(tx, pid, false)?;
    projects::ensure_exists(tx, pid)?;
    for t in &new {
        check_dependencies(tx, None, pid, &t.depends_on)?;
    }
    lock_counts(tx, pid, &new)?;
    let now = now_ms();
    let mut c = Columns::default();
    let mut starts = Vec::with_capacity(new.len());
    for t in &new {
        let (waiting, failed_dep) = dependency_state(tx, &t.depends_on, true)?;
        let st = queue::start(t, project.default_max_attempts, failed_dep, now);
        c.title.push(t.title.clone());
        c.description.push(t.description.clone());
        c.status.push(st.status.as_str());
        c.priority.push(t.priority);
        c.assignee.push(t.assignee.clone());
        c.labels.push(to_json(&t.labels)?);
        c.metadata.push(t.metadata.clone());
        c.result.push(t.result.clone());
        c.started_at.push(st.started_at);
        c.completed_at.push(st.completed_at);
        c.error.push(st.error.clone());
        c.max_attempts.push(st.max_attempts);
        c.not_before.push(t.not_before);
        c.depends_on.push(to_json(&t.depends_on)?);
        c.deps_waiting.push(waiting);
        c.lease_expires_at.push(st.lease_expires_at);
        starts.push(st);
    }
    // Identities are drawn as the sorted rows are inserted, so ascending ids follow
    // the batch's order whatever order RETURNING hands them back in.
    let mut ids: Vec<i64> = tx
        .query(
            "INSERT INTO tasks (project_id, title, description, status, priority, assignee,
               labels, metadata, result, version, created_at, updated_at, started_at,
               completed_at, error, max_attempts, not_before, depends_on, deps_waiting,
               lease_expires_at)
             SELECT $1, u.title, u.description, u.status, u.priority, u.assignee, u.labels,
               u.metadata, u.result, 1, $2, $2, u.started_at, u.completed_at, u.error,
               u.max_attempts, u.not_before, u.depends_on, u.deps_waiting, u.lease_expires_at
             FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
               $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[],
               $14::bigint[], $15::bigint[], $16::text[], $17::bigint[], $18::bigint[])
               WITH ORDINALITY AS u(title, description, status, priority, assignee, labels,
                 metadata, result, started_at, completed_at, error, max_attempts, not_before,
                 depends_on, deps_waiting, lease_expires_at, ord)
             ORDER BY u.ord
             RETURNING id",
            &[
                &pid,
                &now,
                &c.title,
                &c.description,
                &c.status,
                &c.priority,
                &c.assignee,
                &c.labels,
                &c.metadata,
                &c.result,
                &c.started_at,
                &c.completed_at,
                &c.error,
                &c.max_attempts,
                &c.not_before,
                &c.depends_on,
                &c.deps_waiting,
                &c.lease_expires_at,
            ],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ids.sort_unstable();
    if ids.len() != new.len() {
        return Err(StoreError::Other(format!(
            "inserted {} tasks of {}",
            ids.len(),
            new.len()
        )));
    }
    let (label_tasks, label_names): (Vec<i64>, Vec<&String>) = new
        .iter()
        .zip(&ids)
        .flat_map(|(t, id)| t.labels.iter().map(move |l| (*id, l)))
        .unzip();
    if !label_names.is_empty() {
        tx.execute(
            "INSERT INTO task_labels (project_id, label, task_id)
             SELECT $1, l, t FROM unnest($2::text[], $3::bigint[]) AS x(l, t)
             ON CONFLICT DO NOTHING",
            &[&pid, &label_names, &label_tasks],
        )?;
    }
    let mut out = Vec::with_capacity(new.len());
    let json = c.labels.into_iter().zip(c.depends_on).zip(c.deps_waiting);
    for (((t, id), st), ((labels, depends_on), waiting)) in
        new.into_iter().zip(ids).zip(starts).zip(json)
    {
        insert_deps(tx, id, &t.depends_on)?;
        out.push(Task {
            id,
            project_id: pid,
            title: t.title,
            description: t.description,
            status: st.status,
            priority: t.priority,
            assignee: t.assignee,
            labels: raw_json(labels)?,
            metadata: raw_json(t.metadata)?,
            result: t.result.map(raw_json).transpose()?,
            error: st.error.map(raw_json).transpose()?,
            attempt: 0,
            max_attempts: st.max_attempts,
            not_before: t.not_before,
            depends_on: raw_json(depends_on)?,
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
    let evs: Vec<NewEvent<'_>> = out
        .iter()
        .map(|t| (Some(t.id), EventKind::Created, actor, "{}".to_string()))
        .collect();
    events::record(tx, pid, &evs, now)?;
    Ok(out)
}

/// First key of the advisory locks that serialize dependency changes of a project
/// ("deps").
const DEPS_LOCK: i32 = 0x6465_7073;

/// Events an operation appends, recorded together as its transaction's last
/// statement (see `events::record`): task id, type, actor, changes.
type Pending = Vec<(Option<i64>, EventKind, Option<String>, String)>;

fn record_all(tx: &mut Tx<'_>, pid: i64, evs: Pending, now: i64) -> Result<()> {
    let evs: Vec<NewEvent<'_>> = evs
        .iter()
        .map(|(id, kind, actor, changes)| (*id, kind.clone(), actor.as_deref(), changes.clone()))
        .collect();
    events::record(tx, pid, &evs, now)
}

fn check_dependencies(tx: &mut Tx<'_>, id: Option<i64>, pid: i64, deps: &[i64]) -> Result<()> {
    if deps.is_empty() {
        return Ok(());
    }
    // Two closures cannot both borrow the transaction: fetch as asked, one at a time.
    let tx = std::cell::RefCell::new(tx);
    queue::check_dependencies(
        id,
        pid,
        deps,
        |d| {
            Ok(tx
                .borrow_mut()
                .query_opt("SELECT project_id FROM tasks WHERE id = $1", &[&d])?
                .map(|r| r.get(0)))
        },
        |d| {
            Ok(tx
                .borrow_mut()
                .query("SELECT dep_id FROM task_deps WHERE task_id = $1", &[&d])?
                .iter()
                .map(|r| r.get(0))
                .collect())
        },
    )
}

fn insert_deps(tx: &mut Tx<'_>, id: i64, deps: &[i64]) -> Result<()> {
    if deps.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO task_deps (dep_id, task_id) SELECT d, $2 FROM unnest($1::bigint[]) AS d
         ON CONFLICT DO NOTHING",
        &[&deps, &id],
    )?;
    Ok(())
}

/// Of `deps`: how many are not completed yet, and one that failed, was cancelled or
/// is blocked. A dependency that no longer exists counts as satisfied (SPEC §5c).
/// With `lock` (a task being created or re-wired, holding no task lock yet) the
/// dependencies are read FOR SHARE, in id order: none can change status until this
/// transaction, with its task_deps rows, commits, so a completion or failure, which
/// locks its task and then updates the dependents, always finds the new one. A task
/// that already holds its own row lock reads without (the completion would wait for
/// it, and it for the completion); the completion's update of its count then
/// follows once it commits.
fn dependency_state(tx: &mut Tx<'_>, deps: &[i64], lock: bool) -> Result<(i64, Option<i64>)> {
    if deps.is_empty() {
        return Ok((0, None));
    }
    let mut waiting = 0;
    let mut failed = None;
    let sql = if lock {
        "SELECT id, status FROM tasks WHERE id = ANY($1) ORDER BY id FOR SHARE"
    } else {
        "SELECT id, status FROM tasks WHERE id = ANY($1) ORDER BY id"
    };
    let rows = tx.query(sql, &[&deps])?;
    for r in rows {
        let (id, status): (i64, String) = (r.get(0), r.get(1));
        match TaskStatus::parse(&status) {
            Some(TaskStatus::Completed) | None => {}
            Some(TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Blocked) => {
                waiting += 1;
                failed.get_or_insert(id);
            }
            Some(_) => waiting += 1,
        }
    }
    Ok((waiting, failed))
}

/// Carries a status change of task `id` to its dependents (see SQLite's `ripple`);
/// their events go to `evs`.
///
/// The block walks level by level, each level one statement: a statement sees what
/// committed before it began, so a dependent created (or re-wired) while this
/// transaction waited for a lock is found at the next level, and a task that
/// completed meanwhile is re-checked under its lock and spared, with what hangs from
/// it. (One recursive statement from a single snapshot missed the first and blocked
/// the second.) Each statement locks its rows in id order, as `dependency_state`
/// reads dependencies, which makes deadlocks with creations and re-arms rare; they
/// remain possible (ids across levels, re-wired dependencies, several ripples in one
/// sweep step), and `PgStore::run` repeats the transaction PostgreSQL aborts.
fn ripple(tx: &mut Tx<'_>, id: i64, r: queue::Ripple, now: i64, evs: &mut Pending) -> Result<()> {
    if r.delta != 0 {
        tx.execute(
            "WITH l AS (SELECT id FROM tasks
                 WHERE id IN (SELECT task_id FROM task_deps WHERE dep_id = $1)
                 ORDER BY id FOR NO KEY UPDATE)
             UPDATE tasks t SET deps_waiting = t.deps_waiting + $2 FROM l WHERE t.id = l.id",
            &[&id, &r.delta],
        )?;
    }
    if !r.block {
        return Ok(());
    }
    let error = queue::blocked_error(id);
    let changes = queue::blocked_changes(id);
    let mut level = vec![id];
    while !level.is_empty() {
        // In-progress dependents are locked too, and blocked if they turn out
        // pending: an attempt ending beside this one re-arms its task from
        // dependencies it reads without a lock (it holds its own row), so it may
        // have read this level's task as still running; once it commits, its task
        // is pending here and is blocked like the rest. The status that counts is
        // the one the lock returns (the newest version), not this statement's
        // snapshot.
        let rows = tx.query(
            "WITH l AS (SELECT id, status FROM tasks
                 WHERE id IN (SELECT task_id FROM task_deps WHERE dep_id = ANY($1))
                   AND status IN ('pending', 'in_progress')
                 ORDER BY id FOR NO KEY UPDATE)
             UPDATE tasks t SET status = 'blocked', error = $2, updated_at = $3,
               version = t.version + 1
             FROM l WHERE t.id = l.id AND l.status = 'pending'
             RETURNING t.id",
            &[&level, &error, &now],
        )?;
        level = rows.iter().map(|r| r.get(0)).collect();
        level.sort_unstable();
        for d in &level {
            evs.push((Some(*d), EventKind::Blocked, None, changes.clone()));
        }
    }
    Ok(())
}

/// A task back in `pending`: counts what it waits for again, or blocks it (see
/// SQLite's `rearm`); its event goes to `evs`. `lock`: see `dependency_state`.
/// Whether it blocked the task.
fn rearm(tx: &mut Tx<'_>, t: &mut Task, lock: bool, now: i64, evs: &mut Pending) -> Result<bool> {
    let deps: Vec<i64> = serde_json::from_str(t.depends_on.get()).unwrap_or_default();
    let (waiting, failed) = dependency_state(tx, &deps, lock)?;
    let Some(dep) = queue::rearm(t, waiting, failed)? else {
        return Ok(false);
    };
    let _ = now;
    evs.push((
        Some(t.id),
        EventKind::Blocked,
        None,
        queue::blocked_changes(dep),
    ));
    Ok(true)
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

/// Writes every column a patch or an attempt's end can change.
fn write_back(tx: &mut Tx<'_>, t: &Task) -> Result<()> {
    tx.execute(
        "UPDATE tasks SET title = $2, description = $3, status = $4, priority = $5,
           assignee = $6, labels = $7, metadata = $8, result = $9, version = $10,
           lease_expires_at = $11, updated_at = $12, started_at = $13, completed_at = $14,
           error = $15, attempt = $16, max_attempts = $17, not_before = $18, depends_on = $19,
           lease_token = $20, dead = $21, deps_waiting = $22
         WHERE id = $1",
        &[
            &t.id,
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
            &t.error.as_ref().map(|r| r.get()),
            &t.attempt,
            &t.max_attempts,
            &t.not_before,
            &t.depends_on.get(),
            &t.lease_hash,
            &t.dead,
            &t.deps_waiting,
        ],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn update(
    tx: &mut Tx<'_>,
    id: i64,
    pid: Option<i64>,
    patch: &TaskPatch,
    if_match: Option<i64>,
    token: Option<&str>,
    actor: Option<&str>,
) -> Result<Task> {
    // Locks in the order a completion takes them — dependencies, then their
    // dependents — or the two deadlock: first the project's re-wiring lock (two
    // re-wirings checked side by side could each see no cycle and together make
    // one), then the dependencies, old and new, FOR SHARE, then the task itself.
    let rearming = patch.status == Some(TaskStatus::Pending);
    if patch.depends_on.is_some() || rearming {
        let row = tx.query_opt(
            "SELECT project_id, depends_on FROM tasks WHERE id = $1",
            &[&id],
        )?;
        if let Some(r) = row {
            let project: i64 = r.get(0);
            if patch.depends_on.is_some() {
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    &[&DEPS_LOCK, &(project as i32)],
                )?;
            }
            let mut deps: Vec<i64> = serde_json::from_str(r.get::<_, &str>(1)).unwrap_or_default();
            deps.extend(patch.depends_on.iter().flatten());
            deps.sort_unstable();
            deps.dedup();
            tx.query(
                "SELECT 1 FROM tasks WHERE id = ANY($1) ORDER BY id FOR SHARE",
                &[&deps],
            )?;
        }
    }
    let mut t = get(tx, id, pid, true)?;
    check_version(if_match, t.version)?;
    let now = now_ms();
    queue::check_override(&t, if_match, token, now)?;
    if let Some(deps) = &patch.depends_on {
        check_dependencies(tx, Some(id), t.project_id, deps)?;
    }
    let from = t.status;
    let changes = crate::store::patch::apply_task(&mut t, patch, now)?;
    if patch.max_attempts.is_some() {
        queue::check_attempts(&t)?;
    }
    let kind = queue::patch_event(patch.status.filter(|s| *s != from));
    let mut evs: Pending = vec![(
        Some(id),
        kind,
        actor.map(String::from),
        Json::Object(changes).to_string(),
    )];
    // Its dependencies are locked already (above): reading them again waits for
    // nothing.
    let blocked = (patch.depends_on.is_some()
        || (t.status == TaskStatus::Pending && from != t.status))
        && rearm(tx, &mut t, false, now, &mut evs)?;
    t.version += 1;
    t.updated_at = now;
    write_back(tx, &t)?;
    if let Some(labels) = &patch.labels {
        tx.execute("DELETE FROM task_labels WHERE task_id = $1", &[&id])?;
        insert_labels(tx, t.project_id, id, labels)?;
    }
    if let Some(deps) = &patch.depends_on {
        tx.execute("DELETE FROM task_deps WHERE task_id = $1", &[&id])?;
        insert_deps(tx, id, deps)?;
    }
    let r = queue::ripple(from, t.status).blocking_if(blocked);
    ripple(tx, id, r, now, &mut evs)?;
    record_all(tx, t.project_id, evs, now)?;
    Ok(t)
}

pub fn delete(
    tx: &mut Tx<'_>,
    id: i64,
    pid: Option<i64>,
    if_match: Option<i64>,
    token: Option<&str>,
    actor: Option<&str>,
) -> Result<()> {
    let t = get(tx, id, pid, true)?;
    check_version(if_match, t.version)?;
    let now = now_ms();
    queue::check_override(&t, if_match, token, now)?;
    tx.execute("DELETE FROM tasks WHERE id = $1", &[&id])?;
    let changes = serde_json::json!({ "title": t.title }).to_string();
    let mut evs: Pending = vec![(
        Some(id),
        EventKind::Deleted,
        actor.map(String::from),
        changes,
    )];
    if !t.status.is_terminal() {
        ripple(tx, id, queue::Ripple::DELETED, now, &mut evs)?;
    }
    record_all(tx, t.project_id, evs, now)
}

/// The claim statement: up to $5 claimable tasks in claim order, from the partial
/// index `tasks_claim`, skipping rows another claimer has locked; one statement per
/// batch. $1 project, $2 now, $3 agent, $4 lease end, $5 limit, $6 the tokens'
/// hashes (one per row, in claim order), labels from $7 on.
pub fn claim_sql(nlabels: usize) -> String {
    let mut filter = String::new();
    for i in 0..nlabels {
        filter.push_str(&format!(
            " AND id IN (SELECT task_id FROM task_labels WHERE project_id = $1 AND label = ${})",
            i + 7
        ));
    }
    let returning = COLUMNS
        .split(", ")
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH candidate AS MATERIALIZED (
           SELECT id, row_number() OVER (ORDER BY priority DESC, due, id) AS n FROM (
             SELECT id, priority, coalesce(not_before, created_at) AS due FROM tasks
              WHERE project_id = $1 AND status = 'pending' AND deps_waiting = 0
                AND coalesce(not_before, created_at) <= $2{filter}
              ORDER BY priority DESC, coalesce(not_before, created_at), id LIMIT $5
              FOR UPDATE SKIP LOCKED) c)
         UPDATE tasks t SET status = 'in_progress', assignee = $3, lease_expires_at = $4,
           lease_token = ($6::bytea[])[candidate.n], attempt = t.attempt + 1,
           started_at = COALESCE(t.started_at, $2), completed_at = NULL, updated_at = $2,
           version = t.version + 1
         FROM candidate WHERE t.id = candidate.id
         RETURNING {returning}, candidate.n"
    )
}

/// The claim must walk `tasks_claim` in its order and stop after `limit` rows. Until
/// ANALYZE has seen a bulk load, the planner guesses one pending row and sorts all of
/// the project's pending tasks instead (53 ms a claim at 20 000 — every claim, while
/// the others queued behind it): the sort is forbidden for the rest of the claim's
/// transaction, whose other statements have an index for their order too.
pub fn steer_claim_plan(tx: &mut Tx<'_>) -> Result<()> {
    tx.batch("SET LOCAL enable_sort = off")
}

/// Claims up to `claim.limit` claimable tasks of `pid` for `claim.agent`, after
/// returning the project's own expired leases (so they are claimable at once).
pub fn claim_next(tx: &mut Tx<'_>, pid: i64, claim: &Claim) -> Result<Vec<Task>> {
    let project = projects::get(tx, pid, false)?;
    if project.status != ProjectStatus::Active {
        return Ok(Vec::new());
    }
    projects::ensure_exists(tx, pid)?;
    let now = now_ms();
    let mut evs: Pending = Vec::new();
    sweep_in(tx, Some(pid), now, 100, &mut evs)?;
    let lease = now + claim.lease_seconds * 1000;
    let limit = claim.limit as i64;
    let (tokens, hashes): (Vec<String>, Vec<Vec<u8>>) =
        queue::new_tokens(claim.limit)?.into_iter().unzip();
    let mut args: Vec<&(dyn ToSql + Sync)> =
        vec![&pid, &now, &claim.agent, &lease, &limit, &hashes];
    for l in &claim.labels {
        args.push(l);
    }
    steer_claim_plan(tx)?;
    let rows = tx.query(&claim_sql(claim.labels.len()), &args)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut task = from_row(&row)?;
        let n: i64 = row.get(COLUMNS.split(", ").count());
        task.lease_token = tokens.get(n as usize - 1).cloned();
        out.push(task);
    }
    // The order of claim: best first, as the candidates were numbered.
    out.sort_by_key(|t| {
        tokens
            .iter()
            .position(|k| Some(k) == t.lease_token.as_ref())
            .unwrap_or(usize::MAX)
    });
    for t in &out {
        let changes = serde_json::json!({
            "status": "in_progress",
            "assignee": claim.agent,
            "lease_expires_at": crate::clock::rfc3339(lease),
            "attempt": t.attempt,
        })
        .to_string();
        evs.push((
            Some(t.id),
            EventKind::Claimed,
            Some(claim.agent.clone()),
            changes,
        ));
    }
    if !evs.is_empty() {
        record_all(tx, pid, evs, now)?;
    }
    Ok(out)
}

/// A replayed claim answer with fresh tokens for the leases it still holds
/// (`queue::reissue_tokens`).
pub fn reissue_tokens(tx: &mut Tx<'_>, body: &[u8], now: i64) -> Result<Vec<u8>> {
    queue::reissue_tokens(body, |id, attempt, agent| {
        let Ok(t) = get(tx, id, None, true) else {
            return Ok(None);
        };
        if !queue::same_lease(&t, attempt, agent, now) {
            return Ok(None);
        }
        let (token, hash) = queue::new_token()?;
        tx.execute(
            "UPDATE tasks SET lease_token = $2 WHERE id = $1",
            &[&id, &hash],
        )?;
        Ok(Some(token))
    })
}

/// Extends a live lease the caller proves it holds. The version does not change: a
/// heartbeat must not break the holder's `If-Match`.
pub fn heartbeat(
    tx: &mut Tx<'_>,
    id: i64,
    pid: Option<i64>,
    proof: &LeaseProof,
    lease_seconds: i64,
) -> Result<Task> {
    let mut t = get(tx, id, pid, true)?;
    let now = now_ms();
    queue::check_lease(&t, proof, now)?;
    let lease = now + lease_seconds * 1000;
    tx.execute(
        "UPDATE tasks SET lease_expires_at = $2 WHERE id = $1",
        &[&id, &lease],
    )?;
    t.lease_expires_at = Some(lease);
    Ok(t)
}

/// Completes a task whose live lease `token` names.
pub fn complete(
    tx: &mut Tx<'_>,
    id: i64,
    pid: Option<i64>,
    token: &str,
    result: Option<String>,
) -> Result<Task> {
    let mut t = get(tx, id, pid, true)?;
    let now = now_ms();
    queue::check_lease(&t, &LeaseProof::Token(token.into()), now)?;
    let (changes, r) = queue::apply_complete(&mut t, result, now)?;
    write_back(tx, &t)?;
    let mut evs: Pending = vec![(Some(id), EventKind::Completed, t.assignee.clone(), changes)];
    ripple(tx, id, r, now, &mut evs)?;
    record_all(tx, t.project_id, evs, now)?;
    Ok(t)
}

/// Ends the attempt of a task whose live lease the failure's token names.
pub fn fail(tx: &mut Tx<'_>, id: i64, pid: Option<i64>, f: &Failure) -> Result<Task> {
    let mut t = get(tx, id, pid, true)?;
    let now = now_ms();
    queue::check_lease(&t, &LeaseProof::Token(f.token.clone()), now)?;
    let backoff = projects::get(tx, t.project_id, false)?.retry_backoff_seconds;
    let end = queue::after_failure(&t, f, backoff, now);
    let actor = t.assignee.clone();
    let mut evs = Pending::new();
    end_attempt(tx, &mut t, &end, actor, now, &mut evs)?;
    record_all(tx, t.project_id, evs, now)?;
    Ok(t)
}

fn end_attempt(
    tx: &mut Tx<'_>,
    t: &mut Task,
    end: &queue::End,
    actor: Option<String>,
    now: i64,
    evs: &mut Pending,
) -> Result<()> {
    let r = end_in_memory(tx, t, end, actor, now, evs)?;
    write_back(tx, t)?;
    ripple(tx, t.id, r, now, evs)
}

/// The part of an attempt's end before the row is written: `t` changed, its event
/// (and a re-arm's) in `evs`; the ripple still to carry to its dependents.
fn end_in_memory(
    tx: &mut Tx<'_>,
    t: &mut Task,
    end: &queue::End,
    actor: Option<String>,
    now: i64,
    evs: &mut Pending,
) -> Result<queue::Ripple> {
    let (changes, r) = queue::apply_end(t, end, now)?;
    evs.push((Some(t.id), end.event.clone(), actor, changes));
    let blocked = t.status == TaskStatus::Pending && rearm(tx, t, false, now, evs)?;
    Ok(r.blocking_if(blocked))
}

/// Writes the columns an attempt's end (and a re-arm) can change, for many tasks in
/// one statement: a burst of expired leases costs one round trip, not one a task.
fn write_back_ended(tx: &mut Tx<'_>, ts: &[Task]) -> Result<()> {
    let col = |f: fn(&Task) -> Option<i64>| ts.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<i64> = ts.iter().map(|t| t.id).collect();
    let status: Vec<&str> = ts.iter().map(|t| t.status.as_str()).collect();
    let assignee: Vec<Option<&str>> = ts.iter().map(|t| t.assignee.as_deref()).collect();
    let version = col(|t| Some(t.version));
    let lease = col(|t| t.lease_expires_at);
    let updated = col(|t| Some(t.updated_at));
    let started = col(|t| t.started_at);
    let completed = col(|t| t.completed_at);
    let error: Vec<Option<&str>> = ts
        .iter()
        .map(|t| t.error.as_ref().map(|e| e.get()))
        .collect();
    let attempt = col(|t| Some(t.attempt));
    let not_before = col(|t| t.not_before);
    let token: Vec<Option<&[u8]>> = ts.iter().map(|t| t.lease_hash.as_deref()).collect();
    let dead: Vec<bool> = ts.iter().map(|t| t.dead).collect();
    let waiting = col(|t| Some(t.deps_waiting));
    tx.execute(
        "UPDATE tasks t SET status = u.status, assignee = u.assignee, version = u.version,
           lease_expires_at = u.lease, updated_at = u.updated, started_at = u.started,
           completed_at = u.completed, error = u.error, attempt = u.attempt,
           not_before = u.not_before, lease_token = u.token, dead = u.dead,
           deps_waiting = u.waiting
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[],
                     $11::bigint[], $12::bytea[], $13::boolean[], $14::bigint[])
           AS u(id, status, assignee, version, lease, updated, started, completed, error,
                attempt, not_before, token, dead, waiting)
         WHERE t.id = u.id",
        &[
            &ids,
            &status,
            &assignee,
            &version,
            &lease,
            &updated,
            &started,
            &completed,
            &error,
            &attempt,
            &not_before,
            &token,
            &dead,
            &waiting,
        ],
    )?;
    Ok(())
}

/// Returns up to `limit` expired leases of project `pid` to pending (or fails them),
/// skipping rows another instance is sweeping; events go to `evs`; how many.
fn sweep_in(
    tx: &mut Tx<'_>,
    pid: Option<i64>,
    now: i64,
    limit: i64,
    evs: &mut Pending,
) -> Result<usize> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= $1
           AND ($2::bigint IS NULL OR project_id = $2)
         ORDER BY lease_expires_at LIMIT $3 FOR UPDATE SKIP LOCKED"
    );
    let rows = tx.query(&sql, &[&now, &pid, &limit])?;
    let mut ended = Vec::with_capacity(rows.len());
    let mut ripples = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut t = from_row(r)?;
        let end = queue::after_expiry(&t);
        ripples.push((t.id, end_in_memory(tx, &mut t, &end, None, now, evs)?));
        ended.push(t);
    }
    // All rows in one statement, then the ripples (a dead letter blocks its
    // dependents), as end_attempt does for one.
    if !ended.is_empty() {
        write_back_ended(tx, &ended)?;
    }
    for (id, r) in ripples {
        ripple(tx, id, r, now, evs)?;
    }
    Ok(rows.len())
}

/// The project of one expired lease nobody else is sweeping, if any.
pub fn next_expired(tx: &mut Tx<'_>, now: i64) -> Result<Option<i64>> {
    Ok(tx
        .query_opt(
            "SELECT project_id FROM tasks WHERE status = 'in_progress' AND lease_expires_at <= $1
             ORDER BY lease_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&now],
        )?
        .map(|r| r.get(0)))
}

/// Sweeps up to `limit` expired leases of project `pid` in this transaction, with
/// their events under the project's event lock; how many.
pub fn sweep_project(tx: &mut Tx<'_>, pid: i64, now: i64, limit: i64) -> Result<usize> {
    let mut evs = Pending::new();
    let swept = sweep_in(tx, Some(pid), now, limit, &mut evs)?;
    if !evs.is_empty() {
        record_all(tx, pid, evs, now)?;
    }
    Ok(swept)
}

/// Stats of the projects in $3 (an array of ids), one row each, in one statement
/// (one round trip for a project or for a page of the overview); $1 now, $2 the start
/// of the last hour, both in ms. Per project it reads:
/// - its counter rows (migrations 0002 and 0006: at most 16 shards a key, whatever
///   the number of tasks): counts by status, and the waiting, retrying and dead
///   sub-state counters (the keys with a ':');
/// - the oldest pending task, the first entry of an index;
/// - completions of the last hour: whole 10-second buckets after the one the hour
///   starts in, plus an exact count inside that first bucket from the completion
///   index (at most 361 counter rows and 10 s of completions);
/// - `scheduled` (pending with not_before > now, which depends on the clock) from its
///   partial index, tasks_scheduled (migration 0003).
pub const STATS_SQL: &str = "SELECT p.id, k.by_status, k.waiting, k.retrying, k.dead,
     (SELECT created_at FROM tasks
       WHERE project_id = p.id AND status = 'pending' ORDER BY id LIMIT 1),
     (SELECT coalesce(sum(n), 0)::bigint FROM task_completions
       WHERE project_id = p.id AND bucket > $2::bigint / 10000)
   + (SELECT count(*) FROM tasks
       WHERE project_id = p.id AND status = 'completed'
         AND completed_at >= $2::bigint AND completed_at < ($2::bigint / 10000 + 1) * 10000),
     (SELECT count(*) FROM tasks WHERE project_id = p.id AND status = 'pending'
        AND not_before IS NOT NULL AND not_before > $1::bigint)
   FROM projects p,
   LATERAL (SELECT
       coalesce(json_object_agg(c.status, c.n)
         FILTER (WHERE c.status NOT LIKE '%:%' AND c.n > 0), '{}')::text AS by_status,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'pending:waiting'), 0)::bigint AS waiting,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'pending:retrying'), 0)::bigint AS retrying,
       coalesce(sum(c.n) FILTER (WHERE c.status = 'failed:dead'), 0)::bigint AS dead
     FROM (SELECT status, sum(n)::bigint AS n FROM task_counts
            WHERE project_id = p.id GROUP BY status) c) k
  WHERE p.id = ANY($3::bigint[])
  ORDER BY p.id";

/// Stats of these projects (those that exist), as SQLite answers them, read in one
/// statement: its single snapshot makes every figure of a project agree.
pub fn stats_many(tx: &mut Tx<'_>, pids: &[i64]) -> Result<Vec<Stats>> {
    let now = now_ms();
    let rows = tx.query(STATS_SQL, &[&now, &(now - 3_600_000), &pids])?;
    rows.iter()
        .map(|r| {
            let counted: String = r.get(1);
            let counted: Map<String, serde_json::Value> = serde_json::from_str(&counted)
                .map_err(|e| StoreError::Other(format!("stats: {e}")))?;
            let mut by_status = Map::new();
            let mut total = 0;
            for s in TaskStatus::ALL {
                let n = counted
                    .get(s.as_str())
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                total += n;
                by_status.insert(s.as_str().into(), n.into());
            }
            let oldest: Option<i64> = r.get(5);
            Ok(Stats {
                project_id: r.get(0),
                total,
                by_status,
                scheduled: r.get(7),
                waiting: r.get(2),
                retrying: r.get(3),
                dead: r.get(4),
                oldest_pending_age_seconds: oldest.map(|t| ((now - t) / 1000).max(0)),
                completed_last_hour: r.get(6),
                timestamp: crate::clock::rfc3339(now),
            })
        })
        .collect()
}

/// Project `pid`'s stats (`stats_many` of one).
pub fn stats(tx: &mut Tx<'_>, pid: i64) -> Result<Stats> {
    stats_many(tx, &[pid])?
        .pop()
        .ok_or(StoreError::NotFound("project"))
}

/// Sums the per-project counts of migration 0002: O(projects × statuses).
pub const COUNT_BY_STATUS_SQL: &str =
    "SELECT status, sum(n)::bigint FROM task_counts WHERE status NOT LIKE '%:%' GROUP BY status";

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
