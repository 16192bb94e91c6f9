//! SQL of the `api_keys` table. Only SHA-256 hashes of keys are stored.

use rusqlite::{params, Connection, Row};

use super::{optional, Result, StoreError};
use crate::model::{ApiKey, Role};

const COLUMNS: &str = "id, name, role, prefix, created_at, revoked_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let role: String = r.get(2)?;
    Ok(ApiKey {
        id: r.get(0)?,
        name: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Read),
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

/// The unrevoked key with this hash. The index finds the candidate; the final
/// comparison is constant-time so no timing tells how much of a hash matched.
pub fn find(c: &Connection, hash: &[u8; 32]) -> Result<Option<ApiKey>> {
    let sql =
        format!("SELECT {COLUMNS}, hash FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL");
    let row = optional(c.prepare_cached(&sql)?.query_row([&hash[..]], |r| {
        let stored: Vec<u8> = r.get(6)?;
        Ok((from_row(r)?, stored))
    }))?;
    Ok(row.and_then(|(key, stored)| crate::auth::constant_time_eq(&stored, hash).then_some(key)))
}

pub fn insert(
    c: &Connection,
    name: &str,
    role: Role,
    prefix: &str,
    hash: &[u8; 32],
) -> Result<ApiKey> {
    let now = crate::clock::now_ms();
    c.execute(
        "INSERT INTO api_keys (name, role, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, role.as_str(), prefix, &hash[..], now],
    )?;
    Ok(ApiKey {
        id: c.last_insert_rowid(),
        name: name.to_string(),
        role,
        prefix: prefix.to_string(),
        created_at: now,
        revoked_at: None,
    })
}

pub fn list(c: &Connection) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY id");
    let mut st = c.prepare(&sql)?;
    let rows = st.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Revokes key `id` (idempotent) and returns it.
pub fn revoke(c: &Connection, id: i64) -> Result<ApiKey> {
    c.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, crate::clock::now_ms()],
    )?;
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1");
    optional(c.query_row(&sql, [id], from_row))?.ok_or(StoreError::NotFound("api key"))
}
