//! The rules of a patch, shared by both engines so they answer alike: which fields a
//! `TaskPatch` or `ProjectPatch` changes, how a status change moves the lifecycle
//! timestamps, and the `changes` object the activity feed records.

use serde_json::{Map, Value as Json};

use super::{Result, StoreError};
use crate::model::*;

fn to_raw(s: String) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(s).map_err(|e| StoreError::Other(e.to_string()))
}

/// Moves `t` to status `to`, keeping the lifecycle timestamps and the lease right:
/// leaving `in_progress` ends the lease (its holder's `complete` then gets
/// `lease_lost`); entering it by hand gives a lease without a token, so the sweeper
/// returns the task if nobody finishes it; back to `pending` re-arms it (SPEC §5a).
pub fn transition(t: &mut Task, to: TaskStatus, now: i64) {
    if to == TaskStatus::InProgress {
        if t.started_at.is_none() {
            t.started_at = Some(now);
        }
        if t.lease_expires_at.is_none() {
            t.lease_expires_at = Some(now + super::queue::PATCH_LEASE_MS);
        }
    } else {
        t.lease_expires_at = None;
        t.lease_hash = None;
    }
    t.completed_at = to.is_terminal().then_some(now);
    if to == TaskStatus::Pending {
        if t.status.is_terminal() {
            t.attempt = 0;
        }
        t.error = None;
        t.dead = false;
    }
    t.status = to;
}

/// Applies `patch` to `t`, returning the changed fields for the activity feed.
pub fn apply_task(t: &mut Task, patch: &TaskPatch, now: i64) -> Result<Map<String, Json>> {
    let mut changes = Map::new();
    let parse = |s: &str| serde_json::from_str::<Json>(s).unwrap_or(Json::Null);
    if let Some(v) = &patch.title {
        t.title = v.clone();
        changes.insert("title".into(), v.clone().into());
    }
    if let Some(v) = &patch.description {
        t.description = v.clone();
        changes.insert("description".into(), v.clone().into());
    }
    if let Some(v) = patch.priority {
        t.priority = v;
        changes.insert("priority".into(), v.into());
    }
    if let Some(v) = &patch.assignee {
        t.assignee = v.clone();
        changes.insert("assignee".into(), v.clone().into());
    }
    if let Some(v) = &patch.labels {
        let s = serde_json::to_string(v).map_err(|e| StoreError::Other(e.to_string()))?;
        t.labels = to_raw(s)?;
        changes.insert("labels".into(), v.clone().into());
    }
    if let Some(v) = &patch.metadata {
        t.metadata = to_raw(v.clone())?;
        changes.insert("metadata".into(), parse(v));
    }
    if let Some(v) = &patch.result {
        t.result = v.clone().map(to_raw).transpose()?;
        changes.insert(
            "result".into(),
            v.as_deref().map(parse).unwrap_or(Json::Null),
        );
    }
    if let Some(v) = patch.max_attempts {
        t.max_attempts = v;
        changes.insert("max_attempts".into(), v.into());
    }
    if let Some(v) = patch.not_before {
        t.not_before = v;
        changes.insert(
            "not_before".into(),
            v.map(|ms| crate::clock::rfc3339(ms).into())
                .unwrap_or(Json::Null),
        );
    }
    if let Some(v) = &patch.depends_on {
        let s = serde_json::to_string(v).map_err(|e| StoreError::Other(e.to_string()))?;
        t.depends_on = to_raw(s)?;
        changes.insert("depends_on".into(), v.clone().into());
    }
    if let Some(s) = patch.status {
        if s != t.status {
            transition(t, s, now);
        }
        changes.insert("status".into(), s.as_str().into());
    }
    Ok(changes)
}

/// Applies `patch` to `p`, returning the changed fields for the activity feed.
pub fn apply_project(p: &mut Project, patch: &ProjectPatch) -> Map<String, Json> {
    let mut changes = Map::new();
    if let Some(v) = &patch.name {
        changes.insert("name".into(), v.clone().into());
        p.name = v.clone();
    }
    if let Some(v) = &patch.description {
        changes.insert("description".into(), v.clone().into());
        p.description = v.clone();
    }
    if let Some(v) = patch.status {
        changes.insert("status".into(), v.as_str().into());
        p.status = v;
    }
    if let Some(v) = patch.default_max_attempts {
        changes.insert("default_max_attempts".into(), v.into());
        p.default_max_attempts = v;
    }
    if let Some(v) = patch.retry_backoff_seconds {
        changes.insert("retry_backoff_seconds".into(), v.into());
        p.retry_backoff_seconds = v;
    }
    changes
}
