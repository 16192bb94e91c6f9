//! Handlers, one file per resource, and what they share: the call context, paging
//! with opaque cursors, `ETag` / `If-Match`. A handler is parse → validate → one
//! store call → respond; it never sees SQL.

pub(crate) mod activity;
pub(crate) mod claim;
pub(crate) mod ops;
pub mod params;
pub(crate) mod projects;
pub(crate) mod stream;
pub(crate) mod tasks;
pub(crate) mod ui;

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::health::Health;
use crate::lifecycle::Lifecycle;
use crate::model::{ApiKey, Reply};
use crate::store::{Idem, Outcome, Store};
use crate::wire::{Params, Request, Response};
pub use params::Query;

/// What a handler can reach besides its request: the store and, for the operational
/// endpoints, the health cache, the server's phase and where the backup record lies.
/// Never the whole server state (configuration, access log, limiter, CORS).
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub store: &'a std::sync::Arc<dyn Store>,
    pub health: &'a Health,
    pub life: &'a Lifecycle,
    /// `Config::backup_record_base()`, for the backup gauges of `/metrics`.
    pub backup_record: &'a std::path::Path,
}

/// Everything a handler gets.
pub(crate) struct Call<'a> {
    /// The handler's context (named `app` so the handlers keep `c.app.store`).
    pub app: Ctx<'a>,
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

    /// The `Lease-Token` header: proof of holding a task's lease on `PATCH`/`DELETE`.
    pub fn lease_token(&self) -> Option<String> {
        self.req
            .header("lease-token")
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= crate::validate::TOKEN_MAX)
            .map(String::from)
    }

    /// The POST's `Idempotency-Key` (SPEC §5a), if it sent one: scoped to the API key,
    /// with the request's fingerprint and how its answer is rendered for replays.
    pub fn idempotency<T>(
        &self,
        render: impl Fn(&T) -> Response + Send + 'static,
    ) -> Result<Option<Idem<T>>, ApiError> {
        Ok(self.idempotency_key()?.map(|k| k.with(render)))
    }

    /// The POST's `Idempotency-Key`, checked (1–255 printable ASCII), with its scope
    /// and the request's fingerprint: kept by a long-poll claim for each attempt.
    pub fn idempotency_key(&self) -> Result<Option<IdemKey>, ApiError> {
        let Some(key) = self.req.header("idempotency-key") else {
            return Ok(None);
        };
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ApiError::bad_request(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ));
        }
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.req.method.as_str().as_bytes());
        h.update(b" ");
        h.update(self.req.path.as_bytes());
        h.update(b"?");
        h.update(self.req.query.as_bytes());
        h.update(b"\n");
        h.update(&self.req.body);
        Ok(Some(IdemKey {
            scope: self.key.map_or(0, |k| k.id),
            key: key.to_string(),
            fingerprint: h.finalize().into(),
        }))
    }
}

/// An `Idempotency-Key` as the store needs it, without the answer's renderer.
#[derive(Debug, Clone)]
pub(crate) struct IdemKey {
    scope: i64,
    key: String,
    fingerprint: [u8; 32],
}

impl IdemKey {
    /// The store's `Idem` for a write whose answer `render` makes.
    pub fn with<T>(&self, render: impl Fn(&T) -> Response + Send + 'static) -> Idem<T> {
        Idem {
            scope: self.scope,
            key: self.key.clone(),
            fingerprint: self.fingerprint,
            render: Box::new(move |v: &T| reply_of(&render(v))),
        }
    }
}

/// What a replay needs of a response.
fn reply_of(r: &Response) -> Reply {
    Reply {
        status: r.status,
        headers: r
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
        body: r.body.clone(),
    }
}

/// The answer of an idempotent write: rendered now, or the stored one replayed.
pub fn answer<T>(
    outcome: Outcome<T>,
    render: impl Fn(&T) -> Response,
) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Done(v) => Ok(render(&v)),
        Outcome::Replay(r) => Ok(replayed(r)),
    }
}

/// A stored answer, replayed with `Idempotent-Replayed: true`.
pub fn replayed(r: Reply) -> Response {
    let mut resp = if r.body.is_empty() {
        Response::empty(r.status)
    } else {
        Response::raw(r.status, crate::wire::response::JSON, r.body)
    };
    for (n, v) in r.headers {
        // Only the headers our writes answer with are stored.
        let name = match n.as_str() {
            "ETag" => "ETag",
            "Location" => "Location",
            _ => continue,
        };
        resp.headers.push((name, v));
    }
    resp.with_header("Idempotent-Replayed", "true")
}

/// `"3"`: a resource's version as an entity tag.
pub(crate) fn etag(version: i64) -> String {
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
pub(crate) fn list_response<T: Serialize>(items: &[T], next_cursor: Option<String>) -> Response {
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
