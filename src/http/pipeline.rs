//! The fixed order every request goes through: request id → route → key lookup →
//! rate limit (by that key, else by address) → role check → handler → CORS headers,
//! then metrics and the access log. Nothing here knows SQL or JSON shapes of
//! resources; it only decides who may call what.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::api::Call;
use crate::error::ApiError;
use crate::http::ratelimit::Client;
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::http::App;
use crate::model::{ApiKey, Role};
use crate::router::{self, Access, Resolved, Route, ROUTES};

/// Is a client-sent id safe to echo and log? 1–128 of `[A-Za-z0-9._:-]`.
pub fn sane_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The client's request id if sane, else a new one (process-unique, not guessable
/// across restarts: a random prefix and a counter).
pub fn request_id(sent: Option<&str>) -> String {
    if let Some(id) = sent.filter(|s| sane_id(s)) {
        return id.to_string();
    }
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        nanos ^ std::process::id().rotate_left(16)
    });
    format!("{prefix:08x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Body of the answers the connection layer writes before a request reaches a
/// worker (400 malformed head, 408 too slow, 431 head too large, 417, 503 over the
/// connection cap): the same envelope as every other error, with a fresh request id.
pub fn connection_error_body(status: u16, message: &str) -> (&'static str, Vec<u8>) {
    let code = match status {
        503 => "unavailable",
        408 => "request_timeout",
        _ => "bad_request",
    };
    let id = request_id(None);
    (
        crate::wire::response::JSON,
        ApiError::new(status, code, message).body(&id),
    )
}

/// Routes, authorizes and runs the handler. Returns the response and the route index.
pub fn handle(app: &App, req: &Request) -> (Response, Option<usize>) {
    let (mut resp, route) = route_and_run(app, req);
    if let Some(cors) = &app.cors {
        cors.decorate(req, &mut resp);
    }
    (resp, route)
}

/// The address a request comes from, for the rate limit of clients without a valid
/// key: the peer, or whom `X-Forwarded-For` names when the peer is a trusted proxy.
fn client_addr(app: &App, req: &Request) -> IpAddr {
    let peer = req
        .remote
        .map(|r| r.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let hops = req
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|(_, value)| value.split(','));
    crate::net::client(peer, hops, &app.config.trusted_proxies)
}

fn route_and_run(app: &App, req: &Request) -> (Response, Option<usize>) {
    let rid = req.request_id.as_str();
    #[cfg(feature = "test-hooks")]
    if let Some(resp) = test_hook(app, req) {
        return (resp, None);
    }
    let (index, params) = match router::resolve(req.method, &req.path) {
        Resolved::Found(i, p) => (i, p),
        Resolved::NotFound => {
            let e = ApiError::not_found(format!(
                "no route for {} {}",
                req.method.as_str(),
                truncate(&req.path)
            ));
            return (Response::error(&e, rid), None);
        }
        Resolved::BadId => {
            return (
                Response::error(&ApiError::bad_request("path id is out of range"), rid),
                None,
            );
        }
        Resolved::MethodNotAllowed(allow) if req.method == Method::Options => {
            return (Response::empty(204).with_header("Allow", allow), None);
        }
        Resolved::MethodNotAllowed(allow) => {
            return (
                Response::error(&ApiError::method_not_allowed(allow), rid),
                None,
            );
        }
    };
    let route = &ROUTES[index];
    let result = admit(app, req, route).and_then(|key| {
        let call = Call {
            app: app.handler_ctx(),
            req,
            params,
            key: key.as_ref(),
        };
        (route.handler)(&call)
    });
    let resp = result.unwrap_or_else(|e| {
        if let Some(cause) = &e.cause {
            log::error!(target: "http", request_id = rid, route = route.template, status = e.status, cause = cause.as_str(); "request failed");
        }
        Response::error(&e, rid)
    });
    (resp, Some(index))
}

/// Test hooks, compiled only with the `test-hooks` feature (which `cargo test` turns on
/// and a release build never has) and answered only with `DASHBOARD_BACKEND_TEST_HOOKS=1`
/// at start: `/_test/sleep`, `/_test/panic`, `/_test/busy-writer` and
/// `/_test/stuck-writer` (hold the writer, with or without progress) and
/// `/_test/slow-health-probe`.
#[cfg(feature = "test-hooks")]
fn test_hook(app: &App, req: &Request) -> Option<Response> {
    match req.path.as_str() {
        _ if !app.test_hooks => None,
        "/_test/sleep" => Some(test_sleep(req)),
        "/_test/panic" => panic!("test hook: a handler panics"),
        p @ ("/_test/busy-writer" | "/_test/stuck-writer") => {
            let progressing = p == "/_test/busy-writer";
            let held = app
                .store
                .hold_writer(Duration::from_millis(hook_ms(req)), progressing);
            Some(Response::empty(if held.is_ok() { 204 } else { 503 }))
        }
        "/_test/slow-health-probe" => {
            app.health
                .slow_next_probe(Duration::from_millis(hook_ms(req)));
            Some(Response::empty(204))
        }
        _ => None,
    }
}

/// Holds a worker for `?ms=` milliseconds, so tests can wedge the pool or keep a
/// request in flight.
#[cfg(feature = "test-hooks")]
fn test_sleep(req: &Request) -> Response {
    let ms = hook_ms(req);
    std::thread::sleep(Duration::from_millis(ms));
    Response::json(200, &json!({ "slept_ms": ms }))
}

/// The `?ms=` of a test hook (default 1000, at most a minute).
#[cfg(feature = "test-hooks")]
fn hook_ms(req: &Request) -> u64 {
    req.query
        .strip_prefix("ms=")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1000)
        .min(60_000)
}

/// Who is calling, and may they: the key is looked up first so that the rate limit
/// counts against it (SPEC §5b), then its role is checked (§5). A missing or refused
/// key counts against the client's address, so a 401 flood is limited like any other
/// and made-up credentials cannot buy fresh buckets.
fn admit(app: &App, req: &Request, route: &Route) -> Result<Option<ApiKey>, ApiError> {
    if route.access == Access::Public {
        return Ok(None);
    }
    let key = authenticate(app, req);
    if let Some(limiter) = &app.limiter {
        let client = match &key {
            Ok(Some(k)) => Client::Key(k.id),
            _ => Client::Addr(client_addr(app, req)),
        };
        limiter.check(client).map_err(ApiError::rate_limited)?;
    }
    key.and_then(|key| permit(key, route.access))
        .inspect_err(|e| {
            crate::metrics::auth_failure();
            // Never the key itself: only who asked and why it was refused.
            log::warn!(target: "auth", request_id = req.request_id.as_str(), route = route.template, status = e.status,
                remote = req.remote.map(|r| r.ip().to_string()).unwrap_or_default().as_str(); "{}", e.message);
        })
}

/// The key the bearer credential names (SPEC §5); `None` when auth is off.
fn authenticate(app: &App, req: &Request) -> Result<Option<ApiKey>, ApiError> {
    if app.config.auth_disabled {
        return Ok(None);
    }
    let header = req.header("authorization").unwrap_or("").trim();
    let token = match header.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => "",
    };
    if token.is_empty() {
        return Err(ApiError::unauthorized(
            "an API key is required: Authorization: Bearer <key>",
        ));
    }
    let key = app
        .store
        .find_key(crate::auth::hash(token))?
        .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))?;
    Ok(Some(key))
}

/// May this key call a route of this access level? Read keys may only read.
fn permit(key: Option<ApiKey>, access: Access) -> Result<Option<ApiKey>, ApiError> {
    match &key {
        Some(k) if access == Access::Write && k.role != Role::Write => {
            Err(ApiError::forbidden("this API key may only read"))
        }
        _ => Ok(key),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Metrics, the request log line and the access log. Health and metrics requests
/// are logged only at debug (SPEC §4).
pub fn record(app: &App, req: &Request, route: Option<usize>, status: u16, elapsed: Duration) {
    if super::probe::is_probe(req) {
        return;
    }
    crate::metrics::observe(route, req.method.as_str(), status, elapsed);
    let template = route.map(|i| ROUTES[i].template).unwrap_or("unmatched");
    let quiet = route.is_some_and(|i| ROUTES[i].access == Access::Public);
    let level = if status >= 500 {
        log::Level::Error
    } else if quiet {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    let ms = elapsed.as_secs_f64() * 1000.0;
    log::log!(target: "http", level, request_id = req.request_id.as_str(), method = req.method.as_str(),
        route = template, status = status, duration_ms = ms; "request");
    if app.access_log.enabled() && (!quiet || log::max_level() >= log::LevelFilter::Debug) {
        app.access_log.write(&json!({
            "ts": crate::clock::now_rfc3339(),
            "request_id": req.request_id,
            "remote": req.remote.map(|a| a.ip().to_string()),
            "method": req.method.as_str(),
            "route": template,
            "status": status,
            "duration_ms": ms,
        }));
    }
}
