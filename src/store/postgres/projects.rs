//! SQL of the `projects` table (PostgreSQL); the same answers as `sqlite/projects.rs`.

use postgres::Row;

use super::{check_version, events, Result, StoreError, Tx};
use crate::clock::now_ms;
use crate::model::{EventKind, NewProject, Page, Project, ProjectPatch, ProjectStatus};

const COLUMNS: &str = "id, name, description, status, version, created_at, updated_at, \
     default_max_attempts, retry_backoff_seconds";

/// A stored status this build does not know fails the read (a 500 whose cause is
/// logged): claims and patches depend on it, so no guess is safe.
fn from_row(r: &Row) -> Result<Project> {
    let status: String = r.get(3);
    let status = ProjectStatus::parse(&status).ok_or_else(|| {
        StoreError::Other(format!(
            "unknown project status {status:?} (project {})",
            r.get::<_, i64>(0)
        ))
    })?;
    Ok(Project {
        id: r.get(0),
        name: r.get(1),
        description: r.get(2),
        status,
        version: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
        default_max_attempts: r.get(7),
        retry_backoff_seconds: r.get(8),
    })
}

/// NotFound unless project `pid` exists. `FOR KEY SHARE`: a project cannot be
/// deleted under a write that adds to it (the insert would fail on the foreign key).
pub fn ensure_exists(tx: &mut Tx<'_>, pid: i64) -> Result<()> {
    tx.query_opt(
        "SELECT 1 FROM projects WHERE id = $1 FOR KEY SHARE",
        &[&pid],
    )?
    .map(|_| ())
    .ok_or(StoreError::NotFound("project"))
}

/// A project; `for_update` locks its row for a read-modify-write.
pub fn get(tx: &mut Tx<'_>, id: i64, for_update: bool) -> Result<Project> {
    let sql = if for_update {
        // NO KEY UPDATE: does not wait for writers that only hold KEY SHARE (adding
        // tasks or events to the project); `DELETE` still waits for them.
        format!("SELECT {COLUMNS} FROM projects WHERE id = $1 FOR NO KEY UPDATE")
    } else {
        format!("SELECT {COLUMNS} FROM projects WHERE id = $1")
    };
    tx.query_opt(&sql, &[&id])?
        .map(|r| from_row(&r))
        .ok_or(StoreError::NotFound("project"))?
}

pub fn list(
    tx: &mut Tx<'_>,
    status: Option<ProjectStatus>,
    after: i64,
    limit: usize,
) -> Result<Page<Project>> {
    let n = limit as i64 + 1;
    let rows = match status {
        Some(s) => tx.query(
            &format!(
                "SELECT {COLUMNS} FROM projects WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"
            ),
            &[&s.as_str(), &after, &n],
        )?,
        None => tx.query(
            &format!("SELECT {COLUMNS} FROM projects WHERE id > $1 ORDER BY id LIMIT $2"),
            &[&after, &n],
        )?,
    };
    let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    let more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, more })
}

pub fn insert(tx: &mut Tx<'_>, p: &NewProject, actor: Option<&str>) -> Result<Project> {
    let now = now_ms();
    let id: i64 = tx
        .query_one(
            "INSERT INTO projects (name, description, status, version, created_at, updated_at,
               default_max_attempts, retry_backoff_seconds)
             VALUES ($1, $2, $3, 1, $4, $4, $5, $6) RETURNING id",
            &[
                &p.name,
                &p.description,
                &p.status.as_str(),
                &now,
                &p.default_max_attempts,
                &p.retry_backoff_seconds,
            ],
        )?
        .get(0);
    events::record(
        tx,
        id,
        &[(None, EventKind::Created, actor, "{}".into())],
        now,
    )?;
    Ok(Project {
        id,
        name: p.name.clone(),
        description: p.description.clone(),
        status: p.status,
        default_max_attempts: p.default_max_attempts,
        retry_backoff_seconds: p.retry_backoff_seconds,
        version: 1,
        created_at: now,
        updated_at: now,
    })
}

pub fn update(
    tx: &mut Tx<'_>,
    id: i64,
    patch: &ProjectPatch,
    if_match: Option<i64>,
    actor: Option<&str>,
) -> Result<Project> {
    let mut p = get(tx, id, true)?;
    check_version(if_match, p.version)?;
    let changes = crate::store::patch::apply_project(&mut p, patch);
    p.updated_at = now_ms();
    p.version += 1;
    tx.execute(
        "UPDATE projects SET name = $2, description = $3, status = $4, version = $5,
           updated_at = $6, default_max_attempts = $7, retry_backoff_seconds = $8 WHERE id = $1",
        &[
            &id,
            &p.name,
            &p.description,
            &p.status.as_str(),
            &p.version,
            &p.updated_at,
            &p.default_max_attempts,
            &p.retry_backoff_seconds,
        ],
    )?;
    let changes = serde_json::Value::Object(changes).to_string();
    events::record(
        tx,
        id,
        &[(None, EventKind::Updated, actor, changes)],
        p.updated_at,
    )?;
    Ok(p)
}

/// Deletes a project; its tasks, labels and events go with it (foreign keys).
pub fn delete(tx: &mut Tx<'_>, id: i64, if_match: Option<i64>) -> Result<()> {
    let p = get(tx, id, true)?;
    check_version(if_match, p.version)?;
    tx.execute("DELETE FROM projects WHERE id = $1", &[&id])?;
    Ok(())
}
