//! SQL of the `projects` table.

use rusqlite::{params, Connection, Row};

use super::{check_version, events, optional, Result, StoreError};
use crate::clock::now_ms;
use crate::model::{EventKind, NewProject, Page, Project, ProjectPatch, ProjectStatus};

const COLUMNS: &str = "id, name, description, status, version, created_at, updated_at, \
     default_max_attempts, retry_backoff_seconds";

/// A stored status this build does not know fails the read (a 500 whose cause is
/// logged): claims and patches depend on it, so no guess is safe.
fn status(r: &Row<'_>, i: usize) -> rusqlite::Result<ProjectStatus> {
    let s: String = r.get(i)?;
    ProjectStatus::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown project status {s:?}").into(),
        )
    })
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        status: status(r, 3)?,
        version: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        default_max_attempts: r.get(7)?,
        retry_backoff_seconds: r.get(8)?,
    })
}

/// NotFound unless project `pid` exists.
pub fn ensure_exists(c: &Connection, pid: i64) -> Result<()> {
    let found = optional(
        c.prepare_cached("SELECT 1 FROM projects WHERE id = ?1")?
            .query_row([pid], |_| Ok(())),
    )?;
    found.ok_or(StoreError::NotFound("project"))
}

pub fn get(c: &Connection, id: i64) -> Result<Project> {
    let sql = format!("SELECT {COLUMNS} FROM projects WHERE id = ?1");
    optional(c.prepare_cached(&sql)?.query_row([id], from_row))?
        .ok_or(StoreError::NotFound("project"))
}

pub fn list(
    c: &Connection,
    status: Option<ProjectStatus>,
    after: i64,
    limit: usize,
) -> Result<Page<Project>> {
    let sql = match status {
        Some(_) => format!(
            "SELECT {COLUMNS} FROM projects WHERE status = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ),
        None => format!(
            "SELECT {COLUMNS} FROM projects WHERE ?1 IS NULL AND id > ?2 ORDER BY id LIMIT ?3"
        ),
    };
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(
        params![status.map(ProjectStatus::as_str), after, limit as i64 + 1],
        from_row,
    )?;
    let mut items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, more })
}

pub fn insert(c: &Connection, p: &NewProject, actor: Option<&str>) -> Result<Project> {
    let now = now_ms();
    c.prepare_cached(
        "INSERT INTO projects (name, description, status, version, created_at, updated_at,
           default_max_attempts, retry_backoff_seconds)
         VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5, ?6)",
    )?
    .execute(params![
        p.name,
        p.description,
        p.status.as_str(),
        now,
        p.default_max_attempts,
        p.retry_backoff_seconds
    ])?;
    let id = c.last_insert_rowid();
    events::record(c, id, None, &EventKind::Created, actor, "{}", now)?;
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
    c: &Connection,
    id: i64,
    patch: &ProjectPatch,
    if_match: Option<i64>,
    actor: Option<&str>,
) -> Result<Project> {
    let mut p = get(c, id)?;
    check_version(if_match, p.version)?;
    let changes = crate::store::patch::apply_project(&mut p, patch);
    p.updated_at = now_ms();
    p.version += 1;
    c.prepare_cached(
        "UPDATE projects SET name = ?2, description = ?3, status = ?4, version = ?5,
           updated_at = ?6, default_max_attempts = ?7, retry_backoff_seconds = ?8 WHERE id = ?1",
    )?
    .execute(params![
        id,
        p.name,
        p.description,
        p.status.as_str(),
        p.version,
        p.updated_at,
        p.default_max_attempts,
        p.retry_backoff_seconds
    ])?;
    let changes = serde_json::Value::Object(changes).to_string();
    events::record(
        c,
        id,
        None,
        &EventKind::Updated,
        actor,
        &changes,
        p.updated_at,
    )?;
    Ok(p)
}

/// Deletes a project; its tasks, labels and events go with it (foreign keys).
pub fn delete(c: &Connection, id: i64, if_match: Option<i64>) -> Result<()> {
    let p = get(c, id)?;
    check_version(if_match, p.version)?;
    c.prepare_cached("DELETE FROM projects WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}
