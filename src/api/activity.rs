//! Stats and the events feed of a project.

use super::{list_response, params, Call};
use crate::error::ApiError;
use crate::wire::Response;

pub fn stats(c: &Call<'_>) -> Result<Response, ApiError> {
    Ok(Response::json(200, &c.app.store.stats(c.params.id())?))
}

/// Every project's stats in one answer: `{"items": [Stats…], "timestamp"}`.
pub fn stats_all(c: &Call<'_>) -> Result<Response, ApiError> {
    let items = c.app.store.stats_all()?;
    Ok(Response::json(
        200,
        &serde_json::json!({ "items": items, "timestamp": crate::clock::now_rfc3339() }),
    ))
}

/// `?after=<event id>&limit=`: oldest first; `next_cursor` is the `after` of the next page.
pub fn events(c: &Call<'_>) -> Result<Response, ApiError> {
    let q = c.query()?;
    let after = match (q.int(&params::AFTER)?, q.int(&params::EVENT_CURSOR)?) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => 0,
    };
    let page = c.app.store.list_events(c.params.id(), after, q.limit()?)?;
    let next = page
        .more
        .then(|| page.items.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(list_response(&page.items, next))
}
