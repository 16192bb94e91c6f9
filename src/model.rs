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

/// A project's status: claims take tasks only from an `active` project (SPEC §5a).
/// Stored as its word (`TEXT`) in both engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectStatus {
    Active,
    Paused,
    Archived,
}

impl ProjectStatus {
    pub const ALL: [ProjectStatus; 3] = [
        ProjectStatus::Active,
        ProjectStatus::Paused,
        ProjectStatus::Archived,
    ];
    /// The words, in `ALL`'s order: the `status` query parameter's enum.
    pub const NAMES: [&'static str; 3] = [
        ProjectStatus::Active.as_str(),
        ProjectStatus::Paused.as_str(),
        ProjectStatus::Archived.as_str(),
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectStatus::Active => "active",
            ProjectStatus::Paused => "paused",
            ProjectStatus::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<ProjectStatus> {
        ProjectStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl Serialize for ProjectStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The type of an activity-feed entry (SPEC §5, §5a), stored as its word (`TEXT`).
///
/// `Other` holds a word this build does not know, read back from the database (a row
/// written by a newer version sharing the PostgreSQL database, or by hand): the feed
/// shows it as stored instead of failing every page and stream that reaches it. The
/// type carries no meaning on read, so passing it through is safe; the engines never
/// write `Other` (`parse` refuses unknown words, only `from_stored` makes one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
    Claimed,
    Completed,
    Failed,
    Retried,
    LeaseExpired,
    Blocked,
    Cancelled,
    Other(String),
}

impl EventKind {
    /// Every type the program writes.
    pub const ALL: [EventKind; 10] = [
        EventKind::Created,
        EventKind::Updated,
        EventKind::Deleted,
        EventKind::Claimed,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Retried,
        EventKind::LeaseExpired,
        EventKind::Blocked,
        EventKind::Cancelled,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
            EventKind::Claimed => "claimed",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Retried => "retried",
            EventKind::LeaseExpired => "lease_expired",
            EventKind::Blocked => "blocked",
            EventKind::Cancelled => "cancelled",
            EventKind::Other(s) => s,
        }
    }

    /// A type the program writes; `None` for any other word.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A stored row's type: a known one, or `Other` keeping the word as stored.
    pub fn from_stored(s: String) -> EventKind {
        EventKind::parse(&s).unwrap_or(EventKind::Other(s))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

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
    pub status: ProjectStatus,
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
    pub kind: EventKind,
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
    pub status: ProjectStatus,
    pub default_max_attempts: i64,
    pub retry_backoff_seconds: i64,
}

/// A validated partial project update.
#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: Option<ProjectStatus>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_status_words_round_trip_and_unknown_ones_are_refused() {
        for p in ProjectStatus::ALL {
            assert_eq!(ProjectStatus::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        let words: Vec<&str> = ProjectStatus::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(words, ProjectStatus::NAMES);
        assert_eq!(ProjectStatus::NAMES, ["active", "paused", "archived"]);
        for bad in [
            "", "Active", "ACTIVE", " active", "active ", "deleted", "pending",
        ] {
            assert_eq!(ProjectStatus::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn event_kind_words_round_trip_and_unknown_ones_are_refused() {
        let words: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            words,
            [
                "created",
                "updated",
                "deleted",
                "claimed",
                "completed",
                "failed",
                "retried",
                "lease_expired",
                "blocked",
                "cancelled"
            ]
        );
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k.clone()));
            assert_eq!(EventKind::from_stored(k.as_str().to_string()), k);
            assert_eq!(k.to_string(), k.as_str());
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        for bad in [
            "",
            "Created",
            "lease-expired",
            "claimed ",
            "other",
            "archived",
        ] {
            assert_eq!(EventKind::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_unknown_stored_event_type_is_shown_as_stored() {
        let k = EventKind::from_stored("renamed".to_string());
        assert_eq!(k, EventKind::Other("renamed".to_string()));
        assert_eq!(k.as_str(), "renamed");
        assert_eq!(serde_json::to_string(&k).unwrap(), r#""renamed""#);
        // Even a word that needs escaping comes out as the same JSON string as before.
        let odd = "a\"b\n";
        assert_eq!(
            serde_json::to_string(&EventKind::from_stored(odd.to_string())).unwrap(),
            serde_json::to_string(odd).unwrap()
        );
    }
}
