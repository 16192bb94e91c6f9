//! `GET /projects/{id}/events/stream` (SPEC §9): the activity feed as server-sent
//! events, resumed after `Last-Event-ID` (or `?after=`). The handler only checks and
//! takes a place under `MAX_STREAMS`; src/live streams the events on the connection's
//! own thread, so no worker is held.

use super::params;
use super::Call;
use crate::error::ApiError;
use crate::live::{self, stream::EventStream};
use crate::wire::Response;

pub fn open(c: &Call<'_>) -> Result<Response, ApiError> {
    let pid = c.params.id();
    let q = c.query()?;
    // `?after=` is checked even when Last-Event-ID (which wins) comes with it: a bad
    // query value is a 400 either way.
    let after_query = q.int(&params::AFTER)?.unwrap_or(0);
    // An empty Last-Event-ID is as bad as any other non-id (the document's pattern).
    let after = match c.req.header("last-event-id").map(str::trim) {
        Some(id) => id.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request("Last-Event-ID must be an event id (an integer from 0)")
        })?,
        None => after_query,
    };
    // 404 for a project that does not exist, before a place is taken.
    c.app.store.get_project(pid)?;
    if c.app.life.phase() != crate::lifecycle::Phase::Ready {
        return Err(ApiError::unavailable("the server is shutting down", 1));
    }
    let slot = live::hub::hub().subscribe(pid).ok_or_else(|| {
        ApiError::unavailable(
            "too many event streams are open (MAX_STREAMS); retry shortly",
            1,
        )
    })?;
    live::defer(live::Deferred::Stream(EventStream::new(
        c.app.store.clone(),
        pid,
        after,
        slot,
    )));
    Ok(Response::empty(200)
        .with_header("Cache-Control", "no-cache")
        .with_header("X-Accel-Buffering", "no"))
}
