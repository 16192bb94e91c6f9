//! Claim and heartbeat: the concurrency-critical path. The store runs a claim as one
//! statement on the single writer, so two agents can never get the same task.

use super::tasks::one;
use super::Call;
use crate::error::ApiError;
use crate::http::response::Response;
use crate::{metrics, validate};

/// `POST /projects/{id}/tasks/claim`: 200 with the task, 204 when none is claimable.
pub fn claim(c: &Call<'_>) -> Result<Response, ApiError> {
    let claim = validate::claim(&c.json()?).map_err(ApiError::validation)?;
    match c.app.store.claim(c.params.id(), claim)? {
        Some(t) => {
            metrics::tasks_updated(1);
            Ok(one(200, &t))
        }
        None => Ok(Response::empty(204)),
    }
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
