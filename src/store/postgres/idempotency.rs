//! SQL of `idempotency_keys` (PostgreSQL), as `sqlite/idempotency.rs`. Transactions
//! run side by side here, so a repeat of a key takes the key's advisory lock first:
//! it waits for the first request's commit and then replays its answer, or — when
//! the first is still running after `lock_timeout` — answers 409 (SPEC §5a).

use super::{Result, StoreError, Tx};
use crate::clock::now_ms;
use crate::model::Reply;
use crate::store::{Idem, Outcome, IDEMPOTENCY_TTL_MS};

/// First key of the idempotency advisory locks ("idem").
const IDEM_LOCK: i32 = 0x6964_656d;

/// Runs `op` unless `idem`'s key already has a live answer (see the SQLite twin).
pub fn run<T>(
    tx: &mut Tx<'_>,
    idem: Option<&Idem<T>>,
    op: impl FnOnce(&mut Tx<'_>) -> Result<T>,
) -> Result<Outcome<T>> {
    let Some(idem) = idem else {
        return op(tx).map(Outcome::Done);
    };
    // Waits at most the session's lock_timeout (5 s, connect.rs), then 409.
    let locked = tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2::bigint::text || ':' || $3))",
        &[&IDEM_LOCK, &idem.scope, &idem.key],
    );
    match locked {
        Err(StoreError::Busy) => return Err(StoreError::IdempotencyInFlight),
        other => other?,
    };
    let now = now_ms();
    let found = tx.query_opt(
        "SELECT fingerprint, status, headers, body FROM idempotency_keys
         WHERE scope = $1 AND key = $2 AND created_at > $3",
        &[&idem.scope, &idem.key, &(now - IDEMPOTENCY_TTL_MS)],
    )?;
    if let Some(r) = found {
        let fingerprint: Vec<u8> = r.get(0);
        if fingerprint != idem.fingerprint {
            return Err(StoreError::IdempotencyMismatch);
        }
        let status: i32 = r.get(1);
        let headers: String = r.get(2);
        let body: Vec<u8> = r.get(3);
        let body = super::tasks::reissue_tokens(tx, &body, now)?;
        return Ok(Outcome::Replay(Reply {
            status: status as u16,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            body,
        }));
    }
    let value = op(tx)?;
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
    tx.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers, body, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (scope, key) DO UPDATE SET fingerprint = $3, status = $4, headers = $5,
           body = $6, created_at = $7",
        &[
            &idem.scope,
            &idem.key,
            &&idem.fingerprint[..],
            &i32::from(reply.status),
            &headers,
            &body,
            &now,
        ],
    )?;
    Ok(Outcome::Done(value))
}

/// Up to $2 records created at or before $1 (`idempotency_keys_created` of 0003),
/// then each by its tuple id (a TID scan): as an `IN (…)` join the planner hashes
/// the whole table.
pub(super) const PURGE_SQL: &str = "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_keys WHERE created_at <= $1 LIMIT $2
    FOR UPDATE SKIP LOCKED))";

/// Deletes up to `limit` expired answers; how many. Rows another instance is
/// deleting are skipped, not waited for.
pub fn purge(tx: &mut Tx<'_>, now: i64, limit: usize) -> Result<usize> {
    let n = tx.execute(PURGE_SQL, &[&(now - IDEMPOTENCY_TTL_MS), &(limit as i64)])?;
    Ok(n as usize)
}
