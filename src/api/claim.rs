//! The agent's side of the queue (SPEC §5a): claim (one task or a batch), heartbeat,
//! complete and fail, each fenced by the lease token the claim handed out. The store
//! runs each as one transaction on the writer (SQLite) or with row locks and
//! `SKIP LOCKED` (PostgreSQL), so two agents never get the same task.

use super::tasks::one;
use super::{answer, list_response, replayed, Call};
use crate::error::ApiError;
use crate::model::Task;
use crate::store::Outcome;
use crate::wire::Response;
use crate::{metrics, validate};

/// `POST /projects/{id}/tasks/claim`: 200 with the task, 204 when none is
/// claimable; with `limit`, 200 with `{"items":[…]}` (or 204). With `wait_seconds`,
/// a claim that finds nothing waits for work without holding a worker (SPEC §9,
/// src/live): each wake-up runs `attempt` again.
pub fn claim(c: &Call<'_>) -> Result<Response, ApiError> {
    let req = validate::claim(&c.json()?).map_err(ApiError::validation)?;
    let batch = req.batch;
    let render = move |tasks: &Vec<Task>| claimed(tasks, batch);
    let idem = c.idempotency_key()?;
    // Waiters with the same labels want the same tasks.
    let key = req.claim.labels.join("\n");
    let (store, pid, claim) = (c.app.store.clone(), c.params.id(), req.claim);
    let attempt = move || -> Result<Option<Response>, ApiError> {
        let idem = idem.as_ref().map(|k| k.with(render));
        match store.claim(pid, claim.clone(), idem)? {
            Outcome::Done(tasks) if tasks.is_empty() => Ok(None),
            Outcome::Done(tasks) => {
                metrics::tasks_updated(tasks.len());
                Ok(Some(render(&tasks)))
            }
            Outcome::Replay(r) => Ok(Some(replayed(r))),
        }
    };
    let wait = std::time::Duration::from_secs(req.wait_seconds as u64);
    let serving = c.app.life.phase() == crate::lifecycle::Phase::Ready;
    crate::live::waiters::claim_or_park(pid, serving, wait, key, Box::new(attempt))
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
