//! The domain: projects, tasks, events and API keys as the API shows them (SPEC §5),
//! plus the validated inputs handlers pass to the store.
//!
//! Instants are epoch milliseconds inside the program and RFC 3339 on the wire; JSON
//! columns (labels, metadata, result, changes) travel as raw JSON text so a read never
//! re-parses what the store already holds.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A task's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Pending,
    InProgress,
    Blocked,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::InProgress,
        TaskStatus::Blocked,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Completed, failed and cancelled tasks are finished: they get `completed_at`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl Serialize for TaskStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Project status.
pub const PROJECT_STATUSES: [&str; 2] = ["active", "archived"];

fn ts<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    crate::clock::with_rfc3339(*ms, |t| s.serialize_str(t))
}

fn opt_ts<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => ts(ms, s),
        None => s.serialize_none(),
    }
}

/// A project as the API shows it. `version` travels in the `ETag` only.
#[derive(Debug, Serialize)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub status: String,
    #[serde(skip)]
    pub version: i64,
    #[serde(serialize_with = "ts")]
    pub created_at: i64,
    #[serde(serialize_with = "ts")]
    pub updated_at: i64,
}

/// A task as the API shows it.
#[derive(Debug, Serialize)]
pub struct Task {
    pub id: i64,
    pub project_id: i64,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub priority: i64,
    pub assignee: Option<String>,
    pub labels: Box<RawValue>,
    pub metadata: Box<RawValue>,
    pub result: Option<Box<RawValue>>,
    pub version: i64,
    #[serde(serialize_with = "opt_ts")]
    pub lease_expires_at: Option<i64>,
    #[serde(serialize_with = "ts")]
    pub created_at: i64,
    #[serde(serialize_with = "ts")]
    pub updated_at: i64,
    #[serde(serialize_with = "opt_ts")]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "opt_ts")]
    pub completed_at: Option<i64>,
}

/// One entry of a project's activity feed.
#[derive(Debug, Serialize)]
pub struct Event {
    pub id: i64,
    pub project_id: i64,
    pub task_id: Option<i64>,
    #[serde(rename = "type")]
    pub kind: String,
    pub actor: Option<String>,
    pub changes: Box<RawValue>,
    #[serde(serialize_with = "ts")]
    pub created_at: i64,
}

/// Per-project counts for `GET /projects/{id}/stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub project_id: i64,
    pub total: i64,
    pub by_status: serde_json::Map<String, serde_json::Value>,
    pub oldest_pending_age_seconds: Option<i64>,
    pub completed_last_hour: i64,
    pub timestamp: String,
}

/// An API key's public face (never the secret or its hash).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    #[serde(serialize_with = "ts")]
    pub created_at: i64,
    #[serde(serialize_with = "opt_ts")]
    pub revoked_at: Option<i64>,
}

/// What a key may do: `read` only GETs, `write` everything (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Write,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            _ => None,
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A validated new project.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub description: String,
    pub status: String,
}

/// A validated partial project update.
#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
}

/// A validated new task; JSON fields are already serialized.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub priority: i64,
    pub assignee: Option<String>,
    pub labels: Vec<String>,
    pub metadata: String,
    pub result: Option<String>,
}

/// A validated partial task update. `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<TaskStatus>,
    pub priority: Option<i64>,
    pub assignee: Option<Option<String>>,
    pub labels: Option<Vec<String>>,
    pub metadata: Option<String>,
    pub result: Option<Option<String>>,
}

/// A validated claim request.
#[derive(Debug, Clone)]
pub struct Claim {
    pub agent: String,
    pub lease_seconds: i64,
    pub labels: Vec<String>,
}

/// Order of a task listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSort {
    /// Oldest first (id order): stable while tasks are added.
    CreatedAt,
    /// Highest priority first, then oldest.
    Priority,
    /// Least recently updated first.
    UpdatedAt,
}

impl TaskSort {
    pub fn parse(s: &str) -> Option<TaskSort> {
        match s {
            "created_at" => Some(TaskSort::CreatedAt),
            "priority" => Some(TaskSort::Priority),
            "updated_at" => Some(TaskSort::UpdatedAt),
            _ => None,
        }
    }
}

/// Where a page starts: the sort key and id of the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCursor {
    pub key: i64,
    pub id: i64,
}

/// Filters, order and page of `GET /projects/{id}/tasks`.
#[derive(Debug, Clone)]
pub struct TaskQuery {
    pub statuses: Vec<TaskStatus>,
    pub assignee: Option<String>,
    pub label: Option<String>,
    pub sort: TaskSort,
    pub after: Option<TaskCursor>,
    pub limit: usize,
}

/// One page of a listing; `more` says whether another page follows.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}
