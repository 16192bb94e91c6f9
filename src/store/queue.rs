//! The work-queue rules of SPEC §5a that both engines apply alike: lease tokens and
//! the checks that fence a stale holder out, what ending an attempt does (retry with
//! backoff, or the dead letter), and the `error` objects the API shows. Pure: the
//! engines read the task, ask here, and write what comes back.

use std::io::Read;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Result, StoreError};
use crate::model::*;

/// Longest retry backoff: an hour (SPEC §5a).
pub const BACKOFF_CAP_MS: i64 = 3_600_000;
/// The lease of a task an operator sets `in_progress` by `PATCH` (it has no agent
/// heartbeating it, so it must not stay in progress for good).
pub const PATCH_LEASE_MS: i64 = 300_000;

/// `n` bytes from the OS random source.
fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| StoreError::Other(format!("random source: {e}")))?;
    Ok(b)
}

/// A fresh lease token (128 bits from the OS, hex) and the hash that is stored.
pub fn new_token() -> Result<(String, Vec<u8>)> {
    let bytes: [u8; 16] = random_bytes()?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// What the store keeps of a token: its SHA-256, so a database read shows no lease
/// anyone could use.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Equal hashes, compared in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn token_matches(t: &Task, token: &str) -> bool {
    t.lease_hash
        .as_deref()
        .is_some_and(|h| same(h, &token_hash(token)))
}

/// A lease is live while its task is in progress and its time has not run out.
pub fn lease_live(t: &Task, now: i64) -> bool {
    t.status == TaskStatus::InProgress && t.lease_expires_at.is_some_and(|e| e > now)
}

/// The caller holds `t`'s live lease, or `LeaseLost` says why not.
pub fn check_lease(t: &Task, proof: &LeaseProof, now: i64) -> Result<()> {
    if t.status != TaskStatus::InProgress {
        return Err(StoreError::LeaseLost(format!(
            "the task is {}, no lease is held",
            t.status.as_str()
        )));
    }
    if !lease_live(t, now) {
        return Err(StoreError::LeaseLost("the lease expired".into()));
    }
    let held = match proof {
        LeaseProof::Token(token) => token_matches(t, token),
        LeaseProof::Agent(agent) => t.assignee.as_deref() == Some(agent.as_str()),
    };
    if held {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(match proof {
            LeaseProof::Token(_) => "the lease token is not the current one".into(),
            LeaseProof::Agent(_) => "another agent holds the lease".into(),
        }))
    }
}

/// A `PATCH` or `DELETE` of a task under a live lease needs `If-Match` (an operator
/// forcing it) or the lease's token (its holder). Only a claim's lease has a holder
/// to protect: the lease of a task set `in_progress` by hand has no token.
pub fn check_override(
    t: &Task,
    if_match: Option<i64>,
    token: Option<&str>,
    now: i64,
) -> Result<()> {
    if !lease_live(t, now)
        || t.lease_hash.is_none()
        || if_match.is_some()
        || token.is_some_and(|k| token_matches(t, k))
    {
        Ok(())
    } else {
        Err(StoreError::LeaseHeld)
    }
}

/// `retry_backoff_seconds × 2^(attempt−1)`, capped at an hour, ±10 % jitter.
pub fn backoff_ms(backoff_seconds: i64, attempt: i64) -> i64 {
    let exp = (attempt - 1).clamp(0, 40) as u32;
    let base = (backoff_seconds.max(0) * 1000)
        .saturating_mul(1i64 << exp.min(30))
        .min(BACKOFF_CAP_MS);
    // A uniform fraction in [-0.1, 0.1]; without a random source, no jitter.
    let r = random_bytes::<4>()
        .map(u32::from_le_bytes)
        .unwrap_or(u32::MAX / 2);
    let jitter = (r as f64 / u32::MAX as f64) * 0.2 - 0.1;
    (base as f64 * (1.0 + jitter)).round() as i64
}

/// What ending an attempt does to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    pub status: TaskStatus,
    pub not_before: Option<i64>,
    /// The task's new `error` (JSON).
    pub error: String,
    pub dead: bool,
    /// The event it records.
    pub event: &'static str,
}

fn error_json(reason: &str, attempt: i64, detail: Option<&str>) -> String {
    let detail = detail
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .unwrap_or(serde_json::Value::Null);
    json!({ "reason": reason, "attempt": attempt, "detail": detail }).to_string()
}

/// An agent's `fail`: back to pending after the backoff, or failed when it said
/// `retry: false` or this was the last attempt (the dead letter).
pub fn after_failure(t: &Task, f: &Failure, backoff_seconds: i64, now: i64) -> End {
    let detail = f.error.as_deref();
    if !f.retry {
        return End {
            status: TaskStatus::Failed,
            not_before: t.not_before,
            error: error_json("failed", t.attempt, detail),
            dead: false,
            event: "failed",
        };
    }
    if t.attempt >= t.max_attempts {
        return End {
            status: TaskStatus::Failed,
            not_before: t.not_before,
            error: error_json("max_attempts", t.attempt, detail),
            dead: true,
            event: "failed",
        };
    }
    End {
        status: TaskStatus::Pending,
        not_before: Some(now + backoff_ms(backoff_seconds, t.attempt)),
        error: error_json("failed", t.attempt, detail),
        dead: false,
        event: "retried",
    }
}

/// A lease that ran out: a lost agent is not a failing task, so back to pending and
/// claimable at once; at the last attempt, the dead letter.
pub fn after_expiry(t: &Task) -> End {
    let last = t.attempt >= t.max_attempts;
    End {
        status: if last {
            TaskStatus::Failed
        } else {
            TaskStatus::Pending
        },
        not_before: t.not_before,
        error: error_json("lease_expired", t.attempt, None),
        dead: last,
        event: "lease_expired",
    }
}

/// The `changes` of an attempt's end, for its event.
pub fn end_changes(t: &Task, end: &End) -> String {
    let error: serde_json::Value = serde_json::from_str(&end.error).unwrap_or_default();
    let mut c = json!({ "status": end.status.as_str(), "attempt": t.attempt, "error": error });
    if end.status == TaskStatus::Pending {
        c["not_before"] = match end.not_before {
            Some(ms) => crate::clock::rfc3339(ms).into(),
            None => serde_json::Value::Null,
        };
    }
    c.to_string()
}

/// Applies an attempt's end to `t` (status, schedule, error, dead letter, version),
/// returning the event's `changes` and the ripple to its dependents; the engine
/// writes the row, the event and the ripple.
pub fn apply_end(t: &mut Task, end: &End, now: i64) -> Result<(String, Ripple)> {
    let from = t.status;
    let changes = end_changes(t, end);
    super::patch::transition(t, end.status, now);
    t.not_before = end.not_before;
    t.error = Some(raw(end.error.clone())?);
    t.dead = end.dead;
    if end.status == TaskStatus::Pending {
        t.assignee = None;
    }
    t.version += 1;
    t.updated_at = now;
    Ok((changes, ripple(from, t.status)))
}

/// Completes `t` with `result`; the event's `changes` and the ripple.
pub fn apply_complete(t: &mut Task, result: Option<String>, now: i64) -> Result<(String, Ripple)> {
    let from = t.status;
    super::patch::transition(t, TaskStatus::Completed, now);
    if let Some(r) = result {
        t.result = Some(raw(r)?);
    }
    t.error = None;
    t.version += 1;
    t.updated_at = now;
    let changes = json!({ "status": "completed", "attempt": t.attempt }).to_string();
    Ok((changes, ripple(from, t.status)))
}

/// How a new task starts: its status (blocked when a dependency already failed),
/// error, lifecycle times, lease and attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub status: TaskStatus,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub lease_expires_at: Option<i64>,
    pub max_attempts: i64,
}

/// The start of `t` in a project whose default is `default_max_attempts`, given
/// the first of its dependencies that failed (if one did).
pub fn start(t: &NewTask, default_max_attempts: i64, failed_dep: Option<i64>, now: i64) -> Start {
    let status = match failed_dep {
        Some(_) if t.status == TaskStatus::Pending => TaskStatus::Blocked,
        _ => t.status,
    };
    let started_at = (status == TaskStatus::InProgress).then_some(now);
    Start {
        status,
        error: failed_dep
            .filter(|_| status == TaskStatus::Blocked)
            .map(blocked_error),
        started_at,
        completed_at: status.is_terminal().then_some(now),
        lease_expires_at: started_at.map(|n| n + PATCH_LEASE_MS),
        max_attempts: t.max_attempts.unwrap_or(default_max_attempts),
    }
}

fn raw(s: String) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(s).map_err(|e| StoreError::Other(e.to_string()))
}

/// The `error` of a task blocked because `dependency` failed, was cancelled, or was
/// deleted unfinished.
pub fn blocked_error(dependency: i64) -> String {
    json!({ "reason": "dependency_failed", "dependency": dependency }).to_string()
}

/// The `changes` of a `blocked` event.
pub fn blocked_changes(dependency: i64) -> String {
    json!({ "status": "blocked", "error": { "reason": "dependency_failed", "dependency": dependency } })
        .to_string()
}

/// How a status change reaches the tasks that depend on this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ripple {
    /// Nothing for them to do.
    None,
    /// One fewer dependency to wait for.
    Satisfied,
    /// One more (a completed task reopened).
    Reopened,
    /// Failed or cancelled: pending dependents become blocked, transitively.
    Block,
}

/// The ripple of moving a task from `from` to `to`.
pub fn ripple(from: TaskStatus, to: TaskStatus) -> Ripple {
    use TaskStatus::*;
    if from == to {
        return Ripple::None;
    }
    match (from, to) {
        (_, Completed) => Ripple::Satisfied,
        (Completed, Failed | Cancelled) => Ripple::Block,
        (Completed, _) => Ripple::Reopened,
        (_, Failed | Cancelled) => Ripple::Block,
        _ => Ripple::None,
    }
}

/// The `changes` of a status change for the event feed, and its event type: a
/// cancellation is `cancelled`, anything else `updated`.
pub fn patch_event(to: Option<TaskStatus>) -> &'static str {
    match to {
        Some(TaskStatus::Cancelled) => "cancelled",
        _ => "updated",
    }
}

/// Checks a `depends_on` list against the graph: no task of another project (or
/// missing), no cycle through `id`. `project_of(x)` names x's project (None:
/// missing); `deps_of(x)` its dependencies.
pub fn check_dependencies(
    id: Option<i64>,
    pid: i64,
    deps: &[i64],
    mut project_of: impl FnMut(i64) -> Result<Option<i64>>,
    mut deps_of: impl FnMut(i64) -> Result<Vec<i64>>,
) -> Result<()> {
    for &d in deps {
        if Some(d) == id {
            return Err(StoreError::Invalid(
                "depends_on",
                "a task cannot depend on itself".into(),
            ));
        }
        if project_of(d)? != Some(pid) {
            return Err(StoreError::Invalid(
                "depends_on",
                format!("task {d} is not a task of this project"),
            ));
        }
    }
    let Some(id) = id else { return Ok(()) };
    // A cycle exists if `id` is reachable from one of its new dependencies.
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<i64> = deps.to_vec();
    while let Some(x) = todo.pop() {
        if x == id {
            return Err(StoreError::Invalid(
                "depends_on",
                "the dependencies would form a cycle".into(),
            ));
        }
        if seen.insert(x) && seen.len() <= 100_000 {
            todo.extend(deps_of(x)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(attempt: i64, max: i64) -> Task {
        Task {
            id: 1,
            project_id: 1,
            title: "t".into(),
            description: String::new(),
            status: TaskStatus::InProgress,
            priority: 0,
            assignee: Some("a".into()),
            labels: serde_json::value::RawValue::from_string("[]".into()).unwrap(),
            metadata: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            result: None,
            error: None,
            attempt,
            max_attempts: max,
            not_before: None,
            depends_on: serde_json::value::RawValue::from_string("[]".into()).unwrap(),
            version: 1,
            lease_expires_at: Some(2_000),
            lease_token: None,
            lease_hash: Some(token_hash("tok")),
            dead: false,
            deps_waiting: 0,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            completed_at: None,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps_at_an_hour() {
        for attempt in 1..=5 {
            let want = 10_000.0 * f64::from(1 << (attempt - 1));
            for _ in 0..50 {
                let got = backoff_ms(10, attempt as i64) as f64;
                assert!((got - want).abs() <= want * 0.1 + 1.0, "{attempt}: {got}");
            }
        }
        assert!(backoff_ms(10, 30) <= (BACKOFF_CAP_MS as f64 * 1.1) as i64);
        assert!(backoff_ms(10, 30) >= (BACKOFF_CAP_MS as f64 * 0.9) as i64);
    }

    #[test]
    fn a_stale_or_wrong_token_or_an_expired_lease_is_lost() {
        let t = task(1, 3);
        assert!(check_lease(&t, &LeaseProof::Token("tok".into()), 1_000).is_ok());
        assert!(check_lease(&t, &LeaseProof::Agent("a".into()), 1_000).is_ok());
        for (proof, now) in [
            (LeaseProof::Token("other".into()), 1_000),
            (LeaseProof::Agent("b".into()), 1_000),
            (LeaseProof::Token("tok".into()), 2_000),
        ] {
            assert!(matches!(
                check_lease(&t, &proof, now),
                Err(StoreError::LeaseLost(_))
            ));
        }
        assert!(matches!(
            check_override(&t, None, None, 1_000),
            Err(StoreError::LeaseHeld)
        ));
        assert!(check_override(&t, Some(1), None, 1_000).is_ok());
        assert!(check_override(&t, None, Some("tok"), 1_000).is_ok());
        assert!(check_override(&t, None, None, 2_000).is_ok());
    }

    #[test]
    fn the_last_attempt_is_the_dead_letter() {
        let f = Failure {
            token: "tok".into(),
            error: Some(r#"{"m":1}"#.into()),
            retry: true,
        };
        let e = after_failure(&task(1, 3), &f, 10, 0);
        assert_eq!(
            (e.status, e.dead, e.event),
            (TaskStatus::Pending, false, "retried")
        );
        assert!(e.not_before.is_some());
        let e = after_failure(&task(3, 3), &f, 10, 0);
        assert_eq!((e.status, e.dead), (TaskStatus::Failed, true));
        assert!(e.error.contains("max_attempts"));
        let e = after_expiry(&task(3, 3));
        assert_eq!((e.status, e.dead), (TaskStatus::Failed, true));
        assert!(e.error.contains("lease_expired"));
        let e = after_expiry(&task(2, 3));
        assert_eq!(e.status, TaskStatus::Pending);
        let no = Failure { retry: false, ..f };
        let e = after_failure(&task(1, 3), &no, 10, 0);
        assert_eq!((e.status, e.dead), (TaskStatus::Failed, false));
    }

    #[test]
    fn cycles_and_foreign_tasks_are_refused() {
        // 1 -> 2 -> 3; making 3 depend on 1 closes a cycle.
        let deps = |x: i64| {
            Ok(match x {
                1 => vec![2],
                2 => vec![3],
                _ => vec![],
            })
        };
        let proj = |x: i64| Ok((x < 10).then_some(7));
        assert!(check_dependencies(Some(3), 7, &[1], proj, deps).is_err());
        assert!(check_dependencies(Some(1), 7, &[3], proj, deps).is_ok());
        assert!(check_dependencies(Some(1), 7, &[1], proj, deps).is_err());
        assert!(check_dependencies(None, 7, &[11], proj, deps).is_err());
        assert!(check_dependencies(None, 8, &[1], proj, deps).is_err());
    }
}
