//! Tasks: list (filters, sort, cursor paging), create (one or bulk), get, update,
//! delete. Reachable as `/tasks/{id}` and `/projects/{pid}/tasks/{id}`.

use super::{answer, decode_cursor, encode_cursor, etag, list_response, params, Call};
use crate::error::ApiError;
use crate::model::{Task, TaskCursor, TaskQuery, TaskSort, TaskStatus};
use crate::wire::Response;
use crate::{metrics, validate};

/// One task with its `ETag`.
pub fn one(status: u16, t: &Task) -> Response {
    Response::json(status, t).with_header("ETag", etag(t.version))
}

fn sort_tag(s: TaskSort) -> char {
    match s {
        TaskSort::CreatedAt => 'c',
        TaskSort::Priority => 'p',
        TaskSort::UpdatedAt => 'u',
    }
}

fn sort_key(s: TaskSort, t: &Task) -> i64 {
    match s {
        TaskSort::CreatedAt => 0,
        TaskSort::Priority => t.priority,
        TaskSort::UpdatedAt => t.updated_at,
    }
}

pub fn list(c: &Call<'_>) -> Result<Response, ApiError> {
    let q = c.query()?;
    let mut statuses = Vec::new();
    // Every word was checked against `TASK_STATUSES`, which a test ties to the model.
    for st in q
        .words(&params::TASK_STATUS)?
        .into_iter()
        .filter_map(TaskStatus::parse)
    {
        if !statuses.contains(&st) {
            statuses.push(st);
        }
    }
    let sort = match q.text(&params::SORT)? {
        None => TaskSort::CreatedAt,
        Some(s) => TaskSort::parse(s).ok_or_else(ApiError::internal)?,
    };
    let after = match q.text(&params::CURSOR)? {
        Some(cur) => {
            let (key, id) = decode_cursor(cur, sort_tag(sort))?;
            Some(TaskCursor { key, id })
        }
        None => None,
    };
    let query = TaskQuery {
        statuses,
        assignee: q.text(&params::ASSIGNEE)?.map(String::from),
        label: q.text(&params::LABEL)?.map(String::from),
        sort,
        after,
        limit: q.limit()?,
    };
    let page = c.app.store.list_tasks(c.params.id(), query)?;
    let next = if page.more {
        page.items
            .last()
            .map(|t| encode_cursor(sort_tag(sort), sort_key(sort, t), t.id))
    } else {
        None
    };
    Ok(list_response(&page.items, next))
}

pub fn create(c: &Call<'_>) -> Result<Response, ApiError> {
    let (new, bulk) = validate::new_tasks(&c.json()?).map_err(ApiError::validation)?;
    let render = move |tasks: &Vec<Task>| created(tasks, bulk);
    let idem = c.idempotency(render)?;
    let out = c
        .app
        .store
        .create_tasks(c.params.id(), new, c.actor(), idem)?;
    if let crate::store::Outcome::Done(tasks) = &out {
        metrics::tasks_created(tasks.len());
    }
    answer(out, render)
}

/// 201 with the task and its `Location`, or (a bulk create) the list.
fn created(tasks: &[Task], bulk: bool) -> Response {
    match tasks.first() {
        Some(t) if !bulk => one(201, t).with_header("Location", format!("/tasks/{}", t.id)),
        _ => list_response(tasks, None).with_status(201),
    }
}

pub fn get(c: &Call<'_>) -> Result<Response, ApiError> {
    let t = c.app.store.get_task(c.params.id(), c.params.parent())?;
    Ok(one(200, &t))
}

pub fn update(c: &Call<'_>) -> Result<Response, ApiError> {
    let patch = validate::task_patch(&c.json()?).map_err(ApiError::validation)?;
    let t = c.app.store.update_task(
        c.params.id(),
        c.params.parent(),
        patch,
        c.if_match(),
        c.lease_token(),
        c.actor(),
    )?;
    metrics::tasks_updated(1);
    Ok(one(200, &t))
}

pub fn delete(c: &Call<'_>) -> Result<Response, ApiError> {
    c.app.store.delete_task(
        c.params.id(),
        c.params.parent(),
        c.if_match(),
        c.lease_token(),
        c.actor(),
    )?;
    Ok(Response::empty(204))
}
