//! SQL of `idempotency_keys`: a POST sent with an `Idempotency-Key` runs once; its
//! answer is stored in the same transaction as its write (SPEC §5a). On the single
//! writer, a repeat waits behind the first in the queue and then finds its answer,
//! so SQLite never has a "still running" request to refuse.

use rusqlite::{params, Connection};

use super::{optional, Result, StoreError};
use crate::clock::now_ms;
use crate::model::Reply;
use crate::store::{Idem, Outcome, IDEMPOTENCY_TTL_MS};

/// Runs `op` unless `idem`'s key already has a live answer: then that answer, or
/// `IdempotencyMismatch` when the key came with another request.
pub fn run<T>(
    c: &Connection,
    idem: Option<Idem<T>>,
    op: impl FnOnce(&Connection) -> Result<T>,
) -> Result<Outcome<T>> {
    let Some(idem) = idem else {
        return op(c).map(Outcome::Done);
    };
    let now = now_ms();
    let found = optional(
        c.prepare_cached(
            "SELECT fingerprint, status, headers, body FROM idempotency_keys
             WHERE scope = ?1 AND key = ?2 AND created_at > ?3",
        )?
        .query_row(
            params![idem.scope, idem.key, now - IDEMPOTENCY_TTL_MS],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, u16>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            },
        ),
    )?;
    if let Some((fingerprint, status, headers, body)) = found {
        if fingerprint != idem.fingerprint {
            return Err(StoreError::IdempotencyMismatch);
        }
        let headers = serde_json::from_str(&headers).unwrap_or_default();
        let body = super::tasks::reissue_tokens(c, &body, now)?;
        return Ok(Outcome::Replay(Reply {
            status,
            headers,
            body,
        }));
    }
    let value = op(c)?;
    let reply = (idem.render)(&value);
    // An answer that changed nothing (a claim that found no task: 204) is not kept,
    // so a repeat, or a long-poll claim trying again, runs afresh.
    if reply.status == 204 {
        return Ok(Outcome::Done(value));
    }
    let headers =
        serde_json::to_string(&reply.headers).map_err(|e| StoreError::Other(e.to_string()))?;
    // No live lease token rests in the database: a replay issues a fresh one.
    let body = crate::store::queue::scrub_tokens(&reply.body).unwrap_or(reply.body);
    // REPLACE: an expired answer under the same key gives way.
    c.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys
           (scope, key, fingerprint, status, headers, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        idem.scope,
        idem.key,
        &idem.fingerprint[..],
        reply.status,
        headers,
        body,
        now
    ])?;
    Ok(Outcome::Done(value))
}

/// Deletes up to `limit` expired answers; how many.
pub fn purge(c: &Connection, now: i64, limit: usize) -> Result<usize> {
    Ok(c.prepare_cached(
        "DELETE FROM idempotency_keys WHERE rowid IN
           (SELECT rowid FROM idempotency_keys WHERE created_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now - IDEMPOTENCY_TTL_MS, limit as i64])?)
}
