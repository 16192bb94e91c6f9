//! The rules of a patch, shared by both engines so they answer alike: which fields a
//! `TaskPatch` or `ProjectPatch` changes, how a status change moves the lifecycle
//! timestamps, and the `changes` object the activity feed records.

use serde_json::{Map, Value as Json};

use super::{Result, StoreError};
use crate::model::*;

fn to_raw(s: String) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(s).map_err(|e| StoreError::Other(e.to_string()))
}

/// Moves `t` to status `to`, keeping the lifecycle timestamps right.
pub fn transition(t: &mut Task, to: TaskStatus, now: i64) {
    if to == TaskStatus::InProgress && t.started_at.is_none() {
        t.started_at = Some(now);
    }
    t.completed_at = to.is_terminal().then_some(now);
    if to != TaskStatus::InProgress {
        t.lease_expires_at = None;
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
    if let Some(v) = &patch.status {
        changes.insert("status".into(), v.clone().into());
        p.status = v.clone();
    }
    changes
}
