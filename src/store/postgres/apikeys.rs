//! SQL of the `api_keys` table (PostgreSQL). Only SHA-256 hashes of keys are stored.

use postgres::Row;

use super::{Result, StoreError, Tx};
use crate::model::{ApiKey, Role};

const COLUMNS: &str = "id, name, role, prefix, created_at, revoked_at";

fn from_row(r: &Row) -> ApiKey {
    let role: String = r.get(2);
    ApiKey {
        id: r.get(0),
        name: r.get(1),
        role: Role::parse(&role).unwrap_or(Role::Read),
        prefix: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
    }
}

/// The unrevoked key with this hash; the final comparison is constant-time.
pub fn find(tx: &mut Tx<'_>, hash: &[u8; 32]) -> Result<Option<ApiKey>> {
    let sql =
        format!("SELECT {COLUMNS}, hash FROM api_keys WHERE hash = $1 AND revoked_at IS NULL");
    let row = tx.query_opt(&sql, &[&&hash[..]])?;
    Ok(row.and_then(|r| {
        let stored: Vec<u8> = r.get(6);
        crate::auth::constant_time_eq(&stored, hash).then(|| from_row(&r))
    }))
}

pub fn insert(
    tx: &mut Tx<'_>,
    name: &str,
    role: Role,
    prefix: &str,
    hash: &[u8; 32],
) -> Result<ApiKey> {
    let now = crate::clock::now_ms();
    let id: i64 = tx
        .query_one(
            "INSERT INTO api_keys (name, role, prefix, hash, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&name, &role.as_str(), &prefix, &&hash[..], &now],
        )?
        .get(0);
    Ok(ApiKey {
        id,
        name: name.to_string(),
        role,
        prefix: prefix.to_string(),
        created_at: now,
        revoked_at: None,
    })
}

pub fn list(tx: &mut Tx<'_>) -> Result<Vec<ApiKey>> {
    let rows = tx.query(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY id"), &[])?;
    Ok(rows.iter().map(from_row).collect())
}

/// Revokes key `id` (idempotent) and returns it.
pub fn revoke(tx: &mut Tx<'_>, id: i64) -> Result<ApiKey> {
    tx.execute(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        &[&id, &crate::clock::now_ms()],
    )?;
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"),
        &[&id],
    )?
    .map(|r| from_row(&r))
    .ok_or(StoreError::NotFound("api key"))
}
