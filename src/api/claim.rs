//! The agent's side of the queue (SPEC §5a): claim (one task or a batch), heartbeat,
//! complete and fail, each fenced by the lease token the claim handed out. The store
//! runs each as one transaction on the writer (SQLite) or with row locks and
//! `SKIP LOCKED` (PostgreSQL), so two agents never get the same task.

use super::tasks::one;
use super::{answer, list_response, Call};
use crate::error::ApiError;
use crate::model::Task;
use crate::wire::Response;
use crate::{metrics, validate};

/// `POST /projects/{id}/tasks/claim`: 200 with the task, 204 when none is
/// claimable; with `limit`, 200 with `{"items":[…]}` (or 204).
pub fn claim(c: &Call<'_>) -> Result<Response, ApiError> {
    let req = validate::claim(&c.json()?).map_err(ApiError::validation)?;
    let batch = req.batch;
    let render = move |tasks: &Vec<Task>| claimed(tasks, batch);
    let idem = c.idempotency(render)?;
    let out = c.app.store.claim(c.params.id(), req.claim, idem)?;
    if let crate::store::Outcome::Done(tasks) = &out {
        metrics::tasks_updated(tasks.len());
    }
    answer(out, render)
}

/// The claim's answer: 204 when nothing was claimable, else the task (or, for a
/// batch, the list).
fn claimed(tasks: &[Task], batch: bool) -> Response {
    match tasks.first() {
        None => Response::empty(204),
        Some(t) if !batch => one(200, t),
        Some(_) => list_response(tasks, None),
    }
}

/// `POST /tasks/{id}/heartbeat`: extends a live lease; 409 `lease_lost` otherwise.
pub fn heartbeat(c: &Call<'_>) -> Result<Response, ApiError> {
    let (proof, lease) = validate::heartbeat(&c.json()?).map_err(ApiError::validation)?;
    let idem = c.idempotency(ok)?;
    let out = c
        .app
        .store
        .heartbeat(c.params.id(), c.params.parent(), proof, lease, idem)?;
    answer(out, ok)
}

/// `POST /tasks/{id}/complete`: the holder finishes its task.
pub fn complete(c: &Call<'_>) -> Result<Response, ApiError> {
    let (token, result) = validate::complete(&c.json()?).map_err(ApiError::validation)?;
    let idem = c.idempotency(ok)?;
    let out = c
        .app
        .store
        .complete(c.params.id(), c.params.parent(), token, result, idem)?;
    if let crate::store::Outcome::Done(_) = &out {
        metrics::tasks_updated(1);
    }
    answer(out, ok)
}

/// `POST /tasks/{id}/fail`: the holder gives up this attempt (retried after a
/// backoff unless `retry: false` or it was the last).
pub fn fail(c: &Call<'_>) -> Result<Response, ApiError> {
    let failure = validate::fail(&c.json()?).map_err(ApiError::validation)?;
    let idem = c.idempotency(ok)?;
    let out = c
        .app
        .store
        .fail(c.params.id(), c.params.parent(), failure, idem)?;
    if let crate::store::Outcome::Done(_) = &out {
        metrics::tasks_updated(1);
    }
    answer(out, ok)
}

fn ok(t: &Task) -> Response {
    one(200, t)
}
