//! Query and path parameters: one definition each, read by the handlers to parse a
//! request and by `openapi_tests` to check the parameter schemas of `openapi.json`.
//! The document used to promise more than the server took (a free-string `status`
//! the server refused, `cursor` without the i64 bound: issue #18); with parser and
//! schema made from the same value they cannot drift apart again.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::model::ProjectStatus;
use crate::validate;
use crate::wire::Request;

/// What values a parameter takes.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Exactly one of these words.
    Word(&'static [&'static str]),
    /// A comma list of these words (OpenAPI: array, `style: form`, `explode: false`);
    /// an empty value is the empty list.
    Words(&'static [&'static str]),
    /// A decimal integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A string of 1 to `max` characters.
    Text { max: usize },
    /// An opaque `next_cursor` this server issued: pairs of hex digits, at most
    /// `CURSOR_MAX` long; empty means the first page.
    Cursor,
}

/// A query or path parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    /// The value used when the parameter is absent, as the document states it.
    pub default: Option<DefaultValue>,
}

/// A default value, in the parameter's own type.
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    Int(i64),
    Word(&'static str),
}

/// Longest cursor accepted: far above any this server issues (`encode_cursor`).
pub const CURSOR_MAX: usize = 200;
/// What `decode_cursor` reads: hex pairs (either case).
pub const CURSOR_PATTERN: &str = "^([0-9a-fA-F]{2})*$";

/// The words of `TaskStatus` (a test checks them against `TaskStatus::ALL`).
pub const TASK_STATUSES: [&str; 6] = [
    "pending",
    "in_progress",
    "blocked",
    "completed",
    "failed",
    "cancelled",
];
/// The words of `TaskSort` (a test checks them against `TaskSort::parse`).
pub const TASK_SORTS: [&str; 3] = ["created_at", "priority", "updated_at"];

/// A path id (`{id}`, `{pid}`): the router takes up to 20 digits, answers 400 above
/// i64 and 404 for an id no row has (0 included).
pub const PATH_ID: Param = Param {
    name: "id",
    kind: Kind::Int {
        min: 1,
        max: i64::MAX,
    },
    default: None,
};
pub const LIMIT: Param = Param {
    name: "limit",
    kind: Kind::Int { min: 1, max: 500 },
    default: Some(DefaultValue::Int(50)),
};
pub const CURSOR: Param = Param {
    name: "cursor",
    kind: Kind::Cursor,
    default: None,
};
pub const PROJECT_STATUS: Param = Param {
    name: "status",
    kind: Kind::Word(&ProjectStatus::NAMES),
    default: None,
};
pub const TASK_STATUS: Param = Param {
    name: "status",
    kind: Kind::Words(&TASK_STATUSES),
    default: None,
};
pub const ASSIGNEE: Param = Param {
    name: "assignee",
    kind: Kind::Text {
        max: validate::AGENT_MAX,
    },
    default: None,
};
pub const LABEL: Param = Param {
    name: "label",
    kind: Kind::Text {
        max: validate::LABEL_MAX,
    },
    default: None,
};
pub const SORT: Param = Param {
    name: "sort",
    kind: Kind::Word(&TASK_SORTS),
    default: Some(DefaultValue::Word("created_at")),
};
/// An event id: the feed starts after it.
pub const AFTER: Param = Param {
    name: "after",
    kind: Kind::Int {
        min: 0,
        max: i64::MAX,
    },
    default: None,
};
/// The events feed's `cursor` is its `after` (the `next_cursor` it gave).
pub const EVENT_CURSOR: Param = Param {
    name: "cursor",
    ..AFTER
};

/// The query parameters of `GET /projects`.
pub const LIST_PROJECTS: &[Param] = &[PROJECT_STATUS, LIMIT, CURSOR];
/// The query parameters of `GET /projects/{id}/tasks`.
pub const LIST_TASKS: &[Param] = &[TASK_STATUS, ASSIGNEE, LABEL, SORT, LIMIT, CURSOR];
/// The query parameters of `GET /projects/{id}/events`.
pub const LIST_EVENTS: &[Param] = &[AFTER, LIMIT, EVENT_CURSOR];
pub const STREAM_EVENTS: &[Param] = &[AFTER];

/// Query parameters of each route that reads any, by method and template; every
/// other route ignores its query string.
pub const QUERIES: &[(&str, &str, &[Param])] = &[
    ("GET", "/projects", LIST_PROJECTS),
    ("GET", "/projects/{id}/tasks", LIST_TASKS),
    ("GET", "/projects/{id}/events", LIST_EVENTS),
    ("GET", "/projects/{id}/events/stream", STREAM_EVENTS),
];

impl Param {
    /// The parameter's JSON Schema, exactly as `openapi.json` must state it.
    pub fn schema(&self) -> Value {
        let mut s = match self.kind {
            Kind::Word(words) => json!({"type": "string", "enum": words}),
            Kind::Words(words) => {
                json!({"type": "array", "items": {"type": "string", "enum": words}})
            }
            Kind::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
            Kind::Text { max } => json!({"type": "string", "minLength": 1, "maxLength": max}),
            Kind::Cursor => {
                json!({"type": "string", "maxLength": CURSOR_MAX, "pattern": CURSOR_PATTERN})
            }
        };
        match self.default {
            Some(DefaultValue::Int(n)) => s["default"] = json!(n),
            Some(DefaultValue::Word(w)) => s["default"] = json!(w),
            None => {}
        }
        s
    }

    /// What a value must be, for the 400 message: "limit must be …".
    fn rule(&self) -> String {
        match self.kind {
            Kind::Word(words) => format!("must be one of {}", words.join(", ")),
            Kind::Words(words) => format!("must be a comma list of {}", words.join(", ")),
            Kind::Int { min, max } => format!("must be an integer from {min} to {max}"),
            Kind::Text { max } => format!("must be 1 to {max} characters"),
            Kind::Cursor => "is not valid for this listing".to_string(),
        }
    }

    fn bad(&self) -> ApiError {
        ApiError::bad_request(format!("{} {}", self.name, self.rule()))
    }

    /// Checks one raw value against the definition (`Words`: every item; `Cursor`:
    /// its syntax only, `decode_cursor` reads the rest).
    pub fn check(&self, v: &str) -> Result<(), ApiError> {
        let ok = match self.kind {
            Kind::Word(words) => words.contains(&v),
            Kind::Words(words) => v.is_empty() || v.split(',').all(|w| words.contains(&w)),
            Kind::Int { min, max } => v.parse::<i64>().is_ok_and(|n| (min..=max).contains(&n)),
            Kind::Text { max } => !v.is_empty() && v.chars().count() <= max,
            Kind::Cursor => {
                v.len() <= CURSOR_MAX
                    && v.len() % 2 == 0
                    && v.bytes().all(|b| b.is_ascii_hexdigit())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(self.bad())
        }
    }
}

/// Query parameters with typed accessors that answer `bad_request` on bad values.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// The request's query string, decoded (`bad_request` on bad escapes).
    pub fn of(req: &Request) -> Result<Query, ApiError> {
        Ok(Query(req.query_pairs()?))
    }

    /// The last value given for `p`, checked against its definition.
    fn checked(&self, p: &Param) -> Result<Option<&str>, ApiError> {
        let v = self
            .0
            .iter()
            .rev()
            .find(|(k, _)| k == p.name)
            .map(|(_, v)| v.as_str());
        if let Some(v) = v {
            p.check(v)?;
        }
        Ok(v)
    }

    /// A `Word`, `Text` or `Cursor` parameter; `None` when absent (or an empty cursor).
    pub fn text(&self, p: &Param) -> Result<Option<&str>, ApiError> {
        Ok(self
            .checked(p)?
            .filter(|v| !(matches!(p.kind, Kind::Cursor) && v.is_empty())))
    }

    /// A `Words` parameter: the listed words, empty when absent.
    pub fn words(&self, p: &Param) -> Result<Vec<&str>, ApiError> {
        Ok(self
            .checked(p)?
            .map(|v| v.split(',').filter(|w| !w.is_empty()).collect())
            .unwrap_or_default())
    }

    /// An `Int` parameter, or its default when absent.
    pub fn int(&self, p: &Param) -> Result<Option<i64>, ApiError> {
        match self.checked(p)? {
            Some(v) => v.parse().map(Some).map_err(|_| p.bad()),
            None => Ok(match p.default {
                Some(DefaultValue::Int(n)) => Some(n),
                _ => None,
            }),
        }
    }

    /// `limit`: always present after its default.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let n = self.int(&LIMIT)?.unwrap_or(50);
        usize::try_from(n).map_err(|_| LIMIT.bad())
    }

    /// Test helper: a query from literal pairs.
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Query {
        Query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskSort, TaskStatus};

    #[test]
    fn word_lists_are_the_models() {
        let statuses: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, TASK_STATUSES);
        assert!(TASK_SORTS.iter().all(|s| TaskSort::parse(s).is_some()));
        for not_a_sort in ["", "id", "title", "Priority"] {
            assert!(TaskSort::parse(not_a_sort).is_none());
        }
    }

    /// The parser takes what the schema allows and refuses what it does not: the
    /// bounds themselves, one past them, and every word.
    #[test]
    fn parsers_take_exactly_what_the_schemas_say() {
        for (name, params) in QUERIES.iter().map(|(_, t, p)| (t, p)) {
            for p in params.iter().chain([&PATH_ID]) {
                let (good, bad): (Vec<String>, Vec<String>) = match p.kind {
                    Kind::Word(w) => (
                        w.iter().map(|s| s.to_string()).collect(),
                        vec!["".into(), format!("{}x", w[0]), w[0].to_uppercase()],
                    ),
                    Kind::Words(w) => (
                        vec!["".into(), w.join(","), w[0].into()],
                        vec!["x".into(), format!("{},x", w[0]), format!(" {}", w[0])],
                    ),
                    Kind::Int { min, max } => (
                        vec![min.to_string(), max.to_string()],
                        vec![
                            (i128::from(min) - 1).to_string(),
                            (i128::from(max) + 1).to_string(),
                            "1.5".into(),
                            "".into(),
                        ],
                    ),
                    Kind::Text { max } => (
                        vec!["x".into(), "é".repeat(max)],
                        vec!["".into(), "x".repeat(max + 1)],
                    ),
                    Kind::Cursor => (
                        vec!["".into(), "7a".repeat(CURSOR_MAX / 2), "AbCd".into()],
                        vec!["7".into(), "zz".into(), "7a".repeat(CURSOR_MAX / 2 + 1)],
                    ),
                };
                for v in good {
                    assert!(p.check(&v).is_ok(), "{name} {}={v:?} refused", p.name);
                }
                for v in bad {
                    let e = p.check(&v).expect_err(&format!("{name} {}={v:?}", p.name));
                    assert!(e.message.starts_with(p.name), "{}", e.message);
                }
            }
        }
    }

    #[test]
    fn out_of_range_ids_name_the_range() {
        let q = Query::from_pairs(&[("after", "1011325773702394558287970304")]);
        let e = q.int(&AFTER).expect_err("too big");
        assert_eq!(
            e.message,
            "after must be an integer from 0 to 9223372036854775807"
        );
        let q = Query::from_pairs(&[("cursor", "-1")]);
        let e = q.int(&EVENT_CURSOR).expect_err("negative");
        assert_eq!(
            e.message,
            "cursor must be an integer from 0 to 9223372036854775807"
        );
        assert_eq!(Query::from_pairs(&[]).limit().expect("default"), 50);
    }
}
