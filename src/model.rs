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

/// Project status: claims take tasks only from an `active` project (SPEC §5a).
pub const PROJECT_STATUSES: [&str; 3] = ["active", "paused", "archived"];

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
    pub default_max_attempts: i64,
    pub retry_backoff_seconds: i64,
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
    /// The last failure (`{"reason":…}`), or null.
    pub error: Option<Box<RawValue>>,
    /// Claims so far.
    pub attempt: i64,
    pub max_attempts: i64,
    #[serde(serialize_with = "opt_ts")]
    pub not_before: Option<i64>,
    /// Ids of the tasks this one waits for, as a JSON array.
    pub depends_on: Box<RawValue>,
    pub version: i64,
    #[serde(serialize_with = "opt_ts")]
    pub lease_expires_at: Option<i64>,
    /// The fencing token: only in the answer of the claim that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    /// SHA-256 of the live lease's token (never shown).
    #[serde(skip)]
    pub lease_hash: Option<Vec<u8>>,
    /// Failed after its last attempt (a dead letter).
    #[serde(skip)]
    pub dead: bool,
    /// Dependencies not yet completed.
    #[serde(skip)]
    pub deps_waiting: i64,
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
    /// Pending, not yet due (`not_before` in the future).
    pub scheduled: i64,
    /// Pending on dependencies not yet completed.
    pub waiting: i64,
    /// Pending again after a failed or lost attempt.
    pub retrying: i64,
    /// Failed after the last attempt.
    pub dead: i64,
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
    pub default_max_attempts: i64,
    pub retry_backoff_seconds: i64,
}

/// A validated partial project update.
#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
    pub default_max_attempts: Option<i64>,
    pub retry_backoff_seconds: Option<i64>,
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
    /// `None`: the project's `default_max_attempts`.
    pub max_attempts: Option<i64>,
    pub not_before: Option<i64>,
    pub depends_on: Vec<i64>,
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
    pub max_attempts: Option<i64>,
    pub not_before: Option<Option<i64>>,
    pub depends_on: Option<Vec<i64>>,
}

/// A validated claim request.
#[derive(Debug, Clone)]
pub struct Claim {
    pub agent: String,
    pub lease_seconds: i64,
    pub labels: Vec<String>,
    /// Tasks to take at most (a batch claim answers a list even when it is 1).
    pub limit: usize,
}

/// Proof of holding a task's lease: its token, or (older agents) the agent's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseProof {
    Token(String),
    Agent(String),
}

/// A validated `fail`: the token, the agent's error (JSON) and whether to retry.
#[derive(Debug, Clone)]
pub struct Failure {
    pub token: String,
    pub error: Option<String>,
    pub retry: bool,
}

/// A stored answer of an idempotent request (SPEC §5a `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
