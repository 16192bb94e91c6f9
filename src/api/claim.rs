//! Claim and heartbeat: the concurrency-critical path. The store runs a claim as one
//! statement on the single writer, so two agents can never get the same task.

use super::tasks::one;
use super::Call;
use crate::error::ApiError;
use crate::http::response::Response;
use crate::{metrics, validate};

/// `POST /projects/{id}/tasks/claim`: 200 with the task, 204 when none is claimable.
/// With `wait_seconds`, a claim that finds nothing waits for work (SPEC §9, src/live).
pub fn claim(c: &Call<'_>) -> Result<Response, ApiError> {
    // live: `wait_seconds` is split off here; the rest is the claim as before.
    let (wait, body) = crate::live::waiters::split_wait(c.json()?)?;
    let claim = validate::claim(&body).map_err(ApiError::validation)?;
    // live: waiters with the same labels want the same tasks.
    let key = claim.labels.join("\n");
    let (store, pid) = (c.app.store.clone(), c.params.id());
    let attempt = move || -> Result<Option<Response>, ApiError> {
        match store.claim(pid, claim.clone())? {
            Some(t) => {
                metrics::tasks_updated(1);
                Ok(Some(one(200, &t)))
            }
            None => Ok(None),
        }
    };
    crate::live::waiters::claim_or_park(c, wait, key, Box::new(attempt))
}

/// `POST /tasks/{id}/heartbeat`: extends the lease; 409 if another agent holds it.
pub fn heartbeat(c: &Call<'_>) -> Result<Response, ApiError> {
    let (agent, lease) = validate::heartbeat(&c.json()?).map_err(ApiError::validation)?;
    let t = c
        .app
        .store
        .heartbeat(c.params.id(), c.params.parent(), agent, lease)?;
    Ok(one(200, &t))
}
