//! SPEC §5 limits: parsed JSON in, validated model values or `validation_failed`
//! details (field, problem) out. Every problem of a body is reported at once.

use serde_json::{Map, Value};

use crate::error::Detail;
use crate::model::*;

pub const TITLE_MAX: usize = 500;
pub const DESCRIPTION_MAX: usize = 100_000;
pub const NAME_MAX: usize = 200;
pub const AGENT_MAX: usize = 200;
pub const LABELS_MAX: usize = 50;
pub const LABEL_MAX: usize = 100;
pub const JSON_FIELD_MAX_BYTES: usize = 64 * 1024;
pub const NESTING_MAX: usize = 32;
pub const LEASE_MAX_SECONDS: i64 = 86_400;
pub const LEASE_DEFAULT_SECONDS: i64 = 300;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1_000_000..=1_000_000;
/// Most tasks in one bulk create.
pub const BULK_MAX: usize = 1000;
pub const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<i64> = 1..=100;
pub const BACKOFF_RANGE: std::ops::RangeInclusive<i64> = 0..=86_400;
pub const DEPENDS_MAX: usize = 100;
pub const CLAIM_LIMIT_MAX: i64 = 100;
pub const WAIT_MAX_SECONDS: i64 = 60;
/// A lease token as the claim hands it out: 32 hex digits (longer input is refused,
/// not hashed).
pub const TOKEN_MAX: usize = 128;

type Problems = Vec<Detail>;

/// Collects problems with a field-name prefix (`[3].title` in a bulk create).
struct Check<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
    out: Problems,
}

impl<'a> Check<'a> {
    fn new(v: &'a Value, prefix: &str, allowed: &[&str]) -> Result<Check<'a>, Problems> {
        let Some(obj) = v.as_object() else {
            return Err(vec![Detail::new(
                prefix.trim_end_matches('.'),
                "must be a JSON object",
            )]);
        };
        let mut c = Check {
            obj,
            prefix: prefix.to_string(),
            out: Vec::new(),
        };
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                c.problem(k, "unknown field");
            }
        }
        Ok(c)
    }

    fn problem(&mut self, field: &str, problem: impl Into<String>) {
        self.out
            .push(Detail::new(format!("{}{field}", self.prefix), problem));
    }

    fn present(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field)
    }

    /// A string of `min..=max` characters; `None` when absent (or invalid).
    fn string(&mut self, field: &str, required: bool, min: usize, max: usize) -> Option<String> {
        match self.present(field) {
            None if required => {
                self.problem(field, "required");
                None
            }
            None => None,
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n < min {
                    self.problem(
                        field,
                        if min == 1 {
                            "must not be empty".to_string()
                        } else {
                            format!("at least {min} characters")
                        },
                    );
                    None
                } else if n > max {
                    self.problem(field, format!("at most {max} characters"));
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(_) => {
                self.problem(field, "must be a string");
                None
            }
        }
    }

    /// A nullable string: `Some(None)` for an explicit null.
    fn nullable_string(&mut self, field: &str, max: usize) -> Option<Option<String>> {
        match self.present(field) {
            Some(Value::Null) => Some(None),
            _ => self.string(field, false, 1, max).map(Some),
        }
    }

    fn integer(&mut self, field: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let v = self.present(field)?;
        match whole_number(v) {
            Some(n) if range.contains(&n) => Some(n),
            _ if v.is_number() => {
                self.problem(
                    field,
                    format!(
                        "must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            _ => {
                self.problem(field, "must be an integer");
                None
            }
        }
    }

    fn labels(&mut self, field: &str) -> Option<Vec<String>> {
        let v = self.present(field)?;
        let Some(items) = v.as_array() else {
            self.problem(field, "must be an array of strings");
            return None;
        };
        if items.len() > LABELS_MAX {
            self.problem(field, format!("at most {LABELS_MAX} labels"));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= LABEL_MAX => {
                    out.push(s.to_string())
                }
                _ => {
                    self.problem(
                        &format!("{field}[{i}]"),
                        format!("must be a string of 1 to {LABEL_MAX} characters"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A JSON object within the size and nesting limits, serialized.
    fn object(&mut self, field: &str) -> Option<String> {
        let v = self.present(field)?;
        if !v.is_object() {
            self.problem(field, "must be a JSON object");
            return None;
        }
        if depth(v) > NESTING_MAX {
            self.problem(field, format!("nested deeper than {NESTING_MAX} levels"));
            return None;
        }
        let s = v.to_string();
        if s.len() > JSON_FIELD_MAX_BYTES {
            self.problem(
                field,
                format!("larger than {JSON_FIELD_MAX_BYTES} bytes serialized"),
            );
            return None;
        }
        Some(s)
    }

    fn nullable_object(&mut self, field: &str) -> Option<Option<String>> {
        match self.present(field) {
            Some(Value::Null) => Some(None),
            _ => self.object(field).map(Some),
        }
    }

    fn task_status(&mut self, field: &str) -> Option<TaskStatus> {
        let s = self.string(field, false, 1, 32)?;
        let st = TaskStatus::parse(&s);
        if st.is_none() {
            self.problem(
                field,
                "must be one of pending, in_progress, blocked, completed, failed, cancelled",
            );
        }
        st
    }

    fn project_status(&mut self, field: &str) -> Option<ProjectStatus> {
        let s = self.string(field, false, 1, 32)?;
        let st = ProjectStatus::parse(&s);
        if st.is_none() {
            self.problem(field, "must be active, paused or archived");
        }
        st
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.present(field)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.problem(field, "must be true or false");
                None
            }
        }
    }

    /// An RFC 3339 instant or null: `Some(None)` for null.
    fn nullable_time(&mut self, field: &str) -> Option<Option<i64>> {
        match self.present(field)? {
            Value::Null => Some(None),
            Value::String(s) => match crate::clock::parse_rfc3339(s) {
                Some(ms) => Some(Some(ms)),
                None => {
                    self.problem(field, "must be an RFC 3339 date-time or null");
                    None
                }
            },
            _ => {
                self.problem(field, "must be an RFC 3339 date-time or null");
                None
            }
        }
    }

    /// Task ids, at most `DEPENDS_MAX`, each once.
    fn task_ids(&mut self, field: &str) -> Option<Vec<i64>> {
        let v = self.present(field)?;
        let Some(items) = v.as_array() else {
            self.problem(field, "must be an array of task ids");
            return None;
        };
        if items.len() > DEPENDS_MAX {
            self.problem(field, format!("at most {DEPENDS_MAX} tasks"));
            return None;
        }
        let mut out: Vec<i64> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match whole_number(item) {
                Some(id) if id > 0 => {
                    if !out.contains(&id) {
                        out.push(id)
                    }
                }
                _ => {
                    self.problem(
                        &format!("{field}[{i}]"),
                        "must be a task id (an integer above 0)",
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Any JSON (an agent's error), within the size and nesting limits, serialized.
    fn any_json(&mut self, field: &str) -> Option<String> {
        let v = self.present(field)?;
        if depth(v) > NESTING_MAX {
            self.problem(field, format!("nested deeper than {NESTING_MAX} levels"));
            return None;
        }
        let s = v.to_string();
        if s.len() > JSON_FIELD_MAX_BYTES {
            self.problem(
                field,
                format!("larger than {JSON_FIELD_MAX_BYTES} bytes serialized"),
            );
            return None;
        }
        Some(s)
    }

    fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.out.is_empty() {
            Ok(value)
        } else {
            Err(self.out)
        }
    }
}

/// 2^53: every whole number up to it is exact as a JSON (f64) number.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// An integer, also when written as a whole number like 300.0: JSON has one number
/// type (as JSON Schema says).
fn whole_number(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_EXACT)
            .map(|f| f as i64)
    })
}

/// Nesting depth of a JSON value (a scalar is 0, `{}` is 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

const PROJECT_FIELDS: &[&str] = &[
    "name",
    "description",
    "status",
    "default_max_attempts",
    "retry_backoff_seconds",
];
const TASK_FIELDS: &[&str] = &[
    "title",
    "description",
    "status",
    "priority",
    "assignee",
    "labels",
    "metadata",
    "result",
    "max_attempts",
    "not_before",
    "depends_on",
];
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;
pub const DEFAULT_BACKOFF_SECONDS: i64 = 10;

pub fn new_project(v: &Value) -> Result<NewProject, Problems> {
    let mut c = Check::new(v, "", PROJECT_FIELDS)?;
    let name = c.string("name", true, 1, NAME_MAX);
    let description = c.string("description", false, 0, DESCRIPTION_MAX);
    let status = c.project_status("status");
    let p = NewProject {
        name: name.unwrap_or_default(),
        description: description.unwrap_or_default(),
        status: status.unwrap_or(ProjectStatus::Active),
        default_max_attempts: c
            .integer("default_max_attempts", MAX_ATTEMPTS_RANGE)
            .unwrap_or(DEFAULT_MAX_ATTEMPTS),
        retry_backoff_seconds: c
            .integer("retry_backoff_seconds", BACKOFF_RANGE)
            .unwrap_or(DEFAULT_BACKOFF_SECONDS),
    };
    c.finish(p)
}

pub fn project_patch(v: &Value) -> Result<ProjectPatch, Problems> {
    let mut c = Check::new(v, "", PROJECT_FIELDS)?;
    let p = ProjectPatch {
        name: c.string("name", false, 1, NAME_MAX),
        description: c.string("description", false, 0, DESCRIPTION_MAX),
        status: c.project_status("status"),
        default_max_attempts: c.integer("default_max_attempts", MAX_ATTEMPTS_RANGE),
        retry_backoff_seconds: c.integer("retry_backoff_seconds", BACKOFF_RANGE),
    };
    if c.obj.is_empty() {
        c.problem("", "no fields to update");
    }
    c.finish(p)
}

/// One task of a create; `prefix` names its place in a bulk array.
pub fn new_task(v: &Value, prefix: &str) -> Result<NewTask, Problems> {
    let mut c = Check::new(v, prefix, TASK_FIELDS)?;
    let t = NewTask {
        title: c.string("title", true, 1, TITLE_MAX).unwrap_or_default(),
        description: c
            .string("description", false, 0, DESCRIPTION_MAX)
            .unwrap_or_default(),
        status: c.task_status("status").unwrap_or(TaskStatus::Pending),
        priority: c.integer("priority", PRIORITY_RANGE).unwrap_or(0),
        assignee: c.nullable_string("assignee", AGENT_MAX).flatten(),
        labels: c.labels("labels").unwrap_or_default(),
        metadata: c.object("metadata").unwrap_or_else(|| "{}".into()),
        result: c.nullable_object("result").flatten(),
        max_attempts: c.integer("max_attempts", MAX_ATTEMPTS_RANGE),
        not_before: c.nullable_time("not_before").flatten(),
        depends_on: c.task_ids("depends_on").unwrap_or_default(),
    };
    c.finish(t)
}

/// A create body: one object, or an array of 1 to 1000 (all validated, all reported).
pub fn new_tasks(v: &Value) -> Result<(Vec<NewTask>, bool), Problems> {
    let Some(items) = v.as_array() else {
        return new_task(v, "").map(|t| (vec![t], false));
    };
    if items.is_empty() || items.len() > BULK_MAX {
        return Err(vec![Detail::new(
            "",
            format!("an array must hold 1 to {BULK_MAX} tasks"),
        )]);
    }
    let mut tasks = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match new_task(item, &format!("[{i}].")) {
            Ok(t) => tasks.push(t),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok((tasks, true))
    } else {
        Err(problems)
    }
}

pub fn task_patch(v: &Value) -> Result<TaskPatch, Problems> {
    let mut c = Check::new(v, "", TASK_FIELDS)?;
    let p = TaskPatch {
        title: c.string("title", false, 1, TITLE_MAX),
        description: c.string("description", false, 0, DESCRIPTION_MAX),
        status: c.task_status("status"),
        priority: c.integer("priority", PRIORITY_RANGE),
        assignee: c.nullable_string("assignee", AGENT_MAX),
        labels: c.labels("labels"),
        metadata: c.object("metadata"),
        result: c.nullable_object("result"),
        max_attempts: c.integer("max_attempts", MAX_ATTEMPTS_RANGE),
        not_before: c.nullable_time("not_before"),
        depends_on: c.task_ids("depends_on"),
    };
    if c.obj.is_empty() {
        c.problem("", "no fields to update");
    }
    c.finish(p)
}

/// A claim body, checked: the claim, whether it asked for a batch (`limit`: the
/// answer is a list), and how long to wait for work (SPEC §9).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub claim: Claim,
    pub batch: bool,
    pub wait_seconds: i64,
}

pub fn claim(v: &Value) -> Result<ClaimRequest, Problems> {
    let mut c = Check::new(
        v,
        "",
        &["agent", "lease_seconds", "labels", "limit", "wait_seconds"],
    )?;
    let agent = c.string("agent", true, 1, AGENT_MAX);
    let lease = c.integer("lease_seconds", 1..=LEASE_MAX_SECONDS);
    let labels = c.labels("labels");
    let limit = c.integer("limit", 1..=CLAIM_LIMIT_MAX);
    let wait = c.integer("wait_seconds", 0..=WAIT_MAX_SECONDS);
    let req = ClaimRequest {
        claim: Claim {
            agent: agent.unwrap_or_default(),
            lease_seconds: lease.unwrap_or(LEASE_DEFAULT_SECONDS),
            labels: labels.unwrap_or_default(),
            limit: limit.unwrap_or(1) as usize,
        },
        batch: limit.is_some(),
        wait_seconds: wait.unwrap_or(0),
    };
    c.finish(req)
}

/// A heartbeat body: the lease token (or, from older agents, the agent's name) and
/// an optional new lease length.
pub fn heartbeat(v: &Value) -> Result<(LeaseProof, i64), Problems> {
    let mut c = Check::new(v, "", &["lease_token", "agent", "lease_seconds"])?;
    let token = c.string("lease_token", false, 1, TOKEN_MAX);
    let agent = c.string("agent", false, 1, AGENT_MAX);
    let lease = c.integer("lease_seconds", 1..=LEASE_MAX_SECONDS);
    let proof = match (token, agent) {
        (Some(t), _) => Some(LeaseProof::Token(t)),
        (None, Some(a)) => Some(LeaseProof::Agent(a)),
        (None, None) => {
            if c.present("lease_token").is_none() && c.present("agent").is_none() {
                c.problem("lease_token", "required");
            }
            None
        }
    };
    let out = (
        proof.unwrap_or(LeaseProof::Agent(String::new())),
        lease.unwrap_or(LEASE_DEFAULT_SECONDS),
    );
    c.finish(out)
}

/// A `complete` body: the lease token and an optional result object.
pub fn complete(v: &Value) -> Result<(String, Option<String>), Problems> {
    let mut c = Check::new(v, "", &["lease_token", "result"])?;
    let token = c.string("lease_token", true, 1, TOKEN_MAX);
    let result = c.nullable_object("result").flatten();
    let out = (token.unwrap_or_default(), result);
    c.finish(out)
}

/// A `fail` body: the lease token, the agent's error (any JSON) and whether to retry
/// (default true).
pub fn fail(v: &Value) -> Result<Failure, Problems> {
    let mut c = Check::new(v, "", &["lease_token", "error", "retry"])?;
    let token = c.string("lease_token", true, 1, TOKEN_MAX);
    let error = c.any_json("error");
    let retry = c.boolean("retry");
    let out = Failure {
        token: token.unwrap_or_default(),
        error,
        retry: retry.unwrap_or(true),
    };
    c.finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_limits() {
        assert!(new_task(&json!({"title": "x"}), "").is_ok());
        let e = new_task(&json!({"title": ""}), "").unwrap_err();
        assert_eq!(e[0].field, "title");
        let e = new_task(&json!({"title": "x".repeat(501)}), "").unwrap_err();
        assert_eq!(e[0].problem, "at most 500 characters");
        let labels: Vec<String> = (0..51).map(|i| format!("l{i}")).collect();
        let e = new_task(&json!({"title": "x", "labels": labels}), "").unwrap_err();
        assert_eq!(e[0].field, "labels");
        let e = new_task(&json!({"title": "x", "bogus": 1}), "").unwrap_err();
        assert_eq!(e[0], Detail::new("bogus", "unknown field"));
        let e = new_task(&json!({"title": 5, "priority": "high"}), "").unwrap_err();
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn nesting_limit() {
        let mut v = json!(1);
        for _ in 0..33 {
            v = json!({ "a": v });
        }
        let e = new_task(&json!({"title": "x", "metadata": v}), "").unwrap_err();
        assert_eq!(e[0].field, "metadata");
    }

    #[test]
    fn dependency_ids_are_whole_numbers_as_json_has_them() {
        let t = new_task(&json!({"title": "x", "depends_on": [1.0, 2, 2]}), "").expect("ok");
        assert_eq!(t.depends_on, vec![1, 2]);
        for bad in [json!([1.5]), json!([0]), json!(["1"]), json!(1)] {
            assert!(new_task(&json!({"title": "x", "depends_on": bad}), "").is_err());
        }
    }

    #[test]
    fn bulk_reports_item_positions() {
        let e = new_tasks(&json!([{"title": "a"}, {"title": ""}])).unwrap_err();
        assert_eq!(e[0].field, "[1].title");
    }
}
