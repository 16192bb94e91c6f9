//! Handlers, one file per resource, and what they share: the call context, paging
//! with opaque cursors, `ETag` / `If-Match`. A handler is parse → validate → one
//! store call → respond; it never sees SQL.

pub mod activity;
pub mod claim;
pub mod ops;
pub mod params;
pub mod projects;
pub mod stream;
pub mod tasks;

use serde::Serialize;
use serde_json::Value;

use crate::app::App;
use crate::error::ApiError;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::model::ApiKey;
use crate::router::Params;
pub use params::Query;

/// Everything a handler gets.
pub struct Call<'a> {
    pub app: &'a App,
    pub req: &'a Request,
    pub params: Params,
    /// The authenticated key; `None` with `AUTH_DISABLED` (and on public routes).
    pub key: Option<&'a ApiKey>,
}

impl Call<'_> {
    /// Who is acting, for the activity feed: the key's name.
    pub fn actor(&self) -> Option<String> {
        self.key.map(|k| k.name.clone())
    }

    /// The body as JSON (size, content type and syntax checked).
    pub fn json(&self) -> Result<Value, ApiError> {
        Ok(self.req.json()?)
    }

    /// The version named by `If-Match`: `None` when absent or `*`. A value that is not
    /// one of our ETags can never match, so it becomes a version no row has.
    pub fn if_match(&self) -> Option<i64> {
        let v = self.req.header("if-match")?.trim();
        if v == "*" || v.is_empty() {
            return None;
        }
        let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
        Some(v.parse().unwrap_or(-1))
    }

    /// Decoded query parameters.
    pub fn query(&self) -> Result<Query, ApiError> {
        Query::of(self.req)
    }
}

/// `"3"`: a resource's version as an entity tag.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Opaque cursor: hex of `tag:key:id`. Only this server makes or reads it.
pub fn encode_cursor(tag: char, key: i64, id: i64) -> String {
    format!("{tag}:{key}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a cursor made by `encode_cursor` with the same `tag`; anything else is 400.
pub fn decode_cursor(s: &str, tag: char) -> Result<(i64, i64), ApiError> {
    let bad = || ApiError::bad_request("cursor is not valid for this listing");
    if s.len() > 200 || s.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.split(':');
    let (t, k, i) = (parts.next(), parts.next(), parts.next());
    if parts.next().is_some() || t != Some(tag.encode_utf8(&mut [0; 4])) {
        return Err(bad());
    }
    let key = k.and_then(|k| k.parse().ok()).ok_or_else(bad)?;
    let id = i.and_then(|i| i.parse().ok()).ok_or_else(bad)?;
    Ok((key, id))
}

/// A list page: `{"items":[…],"next_cursor":null|"…"}`.
pub fn list_response<T: Serialize>(items: &[T], next_cursor: Option<String>) -> Response {
    #[derive(Serialize)]
    struct List<'a, T> {
        items: &'a [T],
        next_cursor: Option<String>,
    }
    Response::json(200, &List { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_foreign_input() {
        let c = encode_cursor('p', -5, 42);
        assert_eq!(decode_cursor(&c, 'p').expect("ok"), (-5, 42));
        assert!(decode_cursor(&c, 'c').is_err());
        for bad in ["", "zz", "7", "ffff", &"a".repeat(400), "70"] {
            assert!(decode_cursor(bad, 'p').is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod openapi_tests;
