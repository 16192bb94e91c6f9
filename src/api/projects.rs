//! Projects: list, create, get, update, delete.

use super::{answer, decode_cursor, encode_cursor, etag, list_response, params, Call};
use crate::error::ApiError;
use crate::model::{Project, ProjectStatus};
use crate::validate;
use crate::wire::Response;

fn one(status: u16, p: &Project) -> Response {
    Response::json(status, p).with_header("ETag", etag(p.version))
}

pub fn list(c: &Call<'_>) -> Result<Response, ApiError> {
    let q = c.query()?;
    // `text` has checked the word against `ProjectStatus::NAMES`: it parses.
    let status = q
        .text(&params::PROJECT_STATUS)?
        .and_then(ProjectStatus::parse);
    let after = match q.text(&params::CURSOR)? {
        Some(cur) => decode_cursor(cur, 'p')?.1,
        None => 0,
    };
    let page = c.app.store.list_projects(status, after, q.limit()?)?;
    let next = page
        .more
        .then(|| page.items.last().map(|p| encode_cursor('p', 0, p.id)))
        .flatten();
    Ok(list_response(&page.items, next))
}

pub fn create(c: &Call<'_>) -> Result<Response, ApiError> {
    let new = validate::new_project(&c.json()?).map_err(ApiError::validation)?;
    let idem = c.idempotency(created)?;
    let out = c.app.store.create_project(new, c.actor(), idem)?;
    answer(out, created)
}

fn created(p: &Project) -> Response {
    one(201, p).with_header("Location", format!("/projects/{}", p.id))
}

pub fn get(c: &Call<'_>) -> Result<Response, ApiError> {
    Ok(one(200, &c.app.store.get_project(c.params.id())?))
}

pub fn update(c: &Call<'_>) -> Result<Response, ApiError> {
    let patch = validate::project_patch(&c.json()?).map_err(ApiError::validation)?;
    let p = c
        .app
        .store
        .update_project(c.params.id(), patch, c.if_match(), c.actor())?;
    Ok(one(200, &p))
}

pub fn delete(c: &Call<'_>) -> Result<Response, ApiError> {
    c.app.store.delete_project(c.params.id(), c.if_match())?;
    crate::live::project_deleted(c.params.id());
    Ok(Response::empty(204))
}
