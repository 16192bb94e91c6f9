//! The work-queue rules of SPEC §5a that both engines apply alike: lease tokens and
//! the checks that fence a stale holder out, what ending an attempt does (retry with
//! backoff, or the dead letter), and the `error` objects the API shows. Pure: the
//! engines read the task, ask here, and write what comes back.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Result, StoreError};
use crate::model::*;

/// Longest retry backoff: an hour (SPEC §5a).
pub const BACKOFF_CAP_MS: i64 = 3_600_000;
/// The lease of a task an operator sets `in_progress` by `PATCH` (it has no agent
/// heartbeating it, so it must not stay in progress for good).
pub const PATCH_LEASE_MS: i64 = 300_000;

/// `N` bytes from the OS random source (`getrandom(2)`: no file to open, so no
/// descriptor to run out of).
#[allow(unsafe_code)]
fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: writes at most N - got bytes into the buffer's remaining space.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), N - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(StoreError::Other(format!("random source: {e}")));
        }
        got += n as usize;
    }
    Ok(b)
}

/// A fresh lease token (128 bits from the OS, hex) and the hash that is stored.
pub fn new_token() -> Result<(String, Vec<u8>)> {
    let bytes: [u8; 16] = random_bytes()?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// `n` fresh tokens and their hashes, made before a claim's first write: a claim
/// must refuse (here, if the random source fails) before it changes anything.
pub fn new_tokens(n: usize) -> Result<Vec<(String, Vec<u8>)>> {
    (0..n).map(|_| new_token()).collect()
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

/// `retry_backoff_seconds × 2^(attempt−1)`, ±10 % jitter, capped at an hour: the cap
/// bounds the wait itself, so a retry at the cap waits between 54 and 60 minutes.
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
    ((base as f64 * (1.0 + jitter)).round() as i64).min(BACKOFF_CAP_MS)
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
    pub event: EventKind,
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
            event: EventKind::Failed,
        };
    }
    if t.attempt >= t.max_attempts {
        return End {
            status: TaskStatus::Failed,
            not_before: t.not_before,
            error: error_json("max_attempts", t.attempt, detail),
            dead: true,
            event: EventKind::Failed,
        };
    }
    End {
        status: TaskStatus::Pending,
        not_before: Some(now + backoff_ms(backoff_seconds, t.attempt)),
        error: error_json("failed", t.attempt, detail),
        dead: false,
        event: EventKind::Retried,
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
        event: EventKind::LeaseExpired,
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

const TOKEN_KEY: &[u8] = b"\"lease_token\":";

/// A claim's answer as it is stored for an `Idempotency-Key` replay: every
/// `lease_token` blanked (`""`), so no live token rests in the database (or its
/// backups); `None` when the answer holds none. Textual, so the stored bytes are
/// the answer's own but for the tokens.
pub fn scrub_tokens(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    let mut found = false;
    while let Some(at) = find(rest, TOKEN_KEY) {
        let (head, tail) = rest.split_at(at + TOKEN_KEY.len());
        out.extend_from_slice(head);
        // The value: a string of hex digits (ours), replaced by "".
        let end = tail
            .iter()
            .skip(1)
            .position(|b| *b == b'"')
            .map_or(tail.len(), |p| p + 2);
        out.extend_from_slice(b"\"\"");
        rest = &tail[end..];
        found = true;
    }
    out.extend_from_slice(rest);
    found.then_some(out)
}

/// A stored claim answer replayed: each task whose lease this claim still holds
/// (same attempt, same agent, not expired: `reissue` checks and re-keys it) gets a
/// fresh token — the one first handed out may never have arrived — and the others
/// `lease_token: null` (the lease moved on: `complete` would answer `lease_lost`).
pub fn reissue_tokens(
    body: &[u8],
    mut reissue: impl FnMut(i64, i64, &str) -> Result<Option<String>>,
) -> Result<Vec<u8>> {
    if find(body, TOKEN_KEY).is_none() {
        return Ok(body.to_vec());
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(body.to_vec());
    };
    let tasks: Vec<&serde_json::Value> = match v.get("items") {
        Some(items) => items
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        None => vec![&v],
    };
    let mut fresh = Vec::new();
    for t in tasks.iter().filter(|t| t.get("lease_token").is_some()) {
        let id = t["id"].as_i64().unwrap_or(0);
        let attempt = t["attempt"].as_i64().unwrap_or(0);
        let agent = t["assignee"].as_str().unwrap_or("");
        fresh.push(match reissue(id, attempt, agent)? {
            Some(token) => format!("\"{token}\""),
            None => "null".to_string(),
        });
    }
    // The stored answer holds `"lease_token":""` once per task, in the same order.
    let blank = [TOKEN_KEY, b"\"\""].concat();
    let mut out = Vec::with_capacity(body.len() + 40 * fresh.len());
    let mut rest = body;
    let mut fresh = fresh.into_iter();
    while let Some(at) = find(rest, &blank) {
        out.extend_from_slice(&rest[..at + TOKEN_KEY.len()]);
        out.extend_from_slice(fresh.next().unwrap_or_else(|| "null".into()).as_bytes());
        rest = &rest[at + blank.len()..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `t` is still the lease a claim handed out: in progress, the same attempt
/// and agent, not expired.
pub fn same_lease(t: &Task, attempt: i64, agent: &str, now: i64) -> bool {
    lease_live(t, now) && t.attempt == attempt && t.assignee.as_deref() == Some(agent)
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

/// How a status change reaches the tasks that depend on this one: their count of
/// dependencies not yet completed moves by `delta` (exactly: every move into
/// `completed` takes one off, every move out of it adds one), and on a failure or
/// cancellation the pending ones become `blocked`, transitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ripple {
    pub delta: i64,
    pub block: bool,
}

impl Ripple {
    pub const NONE: Ripple = Ripple {
        delta: 0,
        block: false,
    };
    /// A task deleted while unfinished: its dependents can never see it complete.
    pub const DELETED: Ripple = Ripple {
        delta: 0,
        block: true,
    };

    /// This ripple, blocking too when the task's re-arm left it `blocked` (one of
    /// its own dependencies failed): its pending dependents can no more run than
    /// had it failed, and are blocked as they would have been had it been pending
    /// when that dependency failed.
    pub fn blocking_if(self, rearm_blocked: bool) -> Ripple {
        Ripple {
            block: self.block || rearm_blocked,
            ..self
        }
    }
}

/// The ripple of moving a task from `from` to `to`.
pub fn ripple(from: TaskStatus, to: TaskStatus) -> Ripple {
    use TaskStatus::*;
    if from == to {
        return Ripple::NONE;
    }
    Ripple {
        delta: match (from, to) {
            (_, Completed) => -1,
            (Completed, _) => 1,
            _ => 0,
        },
        block: matches!(to, Failed | Cancelled),
    }
}

/// What a task that returns to `pending` (re-armed, retried, its lease lost) does
/// about its dependencies, given their state: wait for `waiting` of them, or — one
/// failed, was cancelled or is blocked — become `blocked` itself, as it would have
/// been had it been pending when that happened.
pub fn rearm(t: &mut Task, waiting: i64, failed_dep: Option<i64>) -> Result<Option<i64>> {
    t.deps_waiting = waiting;
    match failed_dep {
        Some(dep) if t.status == TaskStatus::Pending => {
            t.status = TaskStatus::Blocked;
            t.error = Some(raw(blocked_error(dep))?);
            Ok(Some(dep))
        }
        _ => Ok(None),
    }
}

/// The `changes` of a status change for the event feed, and its event type: a
/// cancellation is `cancelled`, anything else `updated`.
pub fn patch_event(to: Option<TaskStatus>) -> EventKind {
    match to {
        Some(TaskStatus::Cancelled) => EventKind::Cancelled,
        _ => EventKind::Updated,
    }
}

/// A task may not be given fewer attempts than it has had (a claim would hand out
/// attempt 3 of 1).
pub fn check_attempts(t: &Task) -> Result<()> {
    if t.max_attempts < t.attempt {
        return Err(StoreError::Invalid(
            "max_attempts",
            format!("must be at least the {} attempts made", t.attempt),
        ));
    }
    Ok(())
}

/// Most tasks a cycle check walks before it refuses the change.
pub const MAX_GRAPH: usize = 10_000;

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
        if seen.insert(x) {
            if seen.len() > MAX_GRAPH {
                return Err(StoreError::Invalid(
                    "depends_on",
                    format!("more than {MAX_GRAPH} tasks depend on each other here; cannot check for a cycle"),
                ));
            }
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
        // The cap bounds the wait itself: jitter never pushes a retry past the hour.
        for _ in 0..200 {
            let got = backoff_ms(10, 30);
            assert!(got <= BACKOFF_CAP_MS, "{got} > {BACKOFF_CAP_MS}");
            assert!(got >= (BACKOFF_CAP_MS as f64 * 0.9) as i64, "{got}");
        }
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
            (TaskStatus::Pending, false, EventKind::Retried)
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
    fn tokens_are_blanked_when_stored_and_reissued_in_order_on_replay() {
        let body = br#"{"items":[{"id":1,"attempt":1,"assignee":"a","lease_token":"ab12"},{"id":2,"attempt":1,"assignee":"a","lease_token":"cd34"}],"next_cursor":null}"#;
        let stored = scrub_tokens(body).expect("tokens");
        assert!(!stored.windows(4).any(|w| w == b"ab12" || w == b"cd34"));
        let replay = reissue_tokens(
            &stored,
            |id, _, _| Ok((id == 2).then(|| "ffff".to_string())),
        )
        .expect("replay");
        let v: serde_json::Value = serde_json::from_slice(&replay).expect("json");
        assert_eq!(v["items"][0]["lease_token"], serde_json::Value::Null);
        assert_eq!(v["items"][1]["lease_token"], "ffff");
        assert!(scrub_tokens(br#"{"id":1,"title":"x"}"#).is_none());
        let plain = br#"{"b":1,"a":2}"#;
        assert_eq!(
            reissue_tokens(plain, |_, _, _| Ok(None)).expect("same"),
            plain
        );
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
