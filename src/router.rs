//! The route table: every method + path template → handler and required role, on
//! one screen. Path parameters are positive integers; a template's literal segments
//! win over parameters by construction (parameters only match digits). The matched
//! template (never the raw path) labels metrics; no match is `route="unmatched"`.

use crate::api::{activity, claim, ops, projects, stream, tasks, ui, Call};
use crate::error::ApiError;
pub use crate::wire::Params;
use crate::wire::{Method, Response};

pub(crate) type Handler = fn(&Call<'_>) -> Result<Response, ApiError>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No key needed (health, metrics, OpenAPI).
    Public,
    /// Any valid key.
    Read,
    /// A `write` key.
    Write,
}

pub(crate) struct Route {
    pub method: Method,
    pub template: &'static str,
    pub handler: Handler,
    pub access: Access,
}

const fn r(method: Method, template: &'static str, handler: Handler, access: Access) -> Route {
    Route {
        method,
        template,
        handler,
        access,
    }
}

use Access::{Public, Read, Write};
use Method::{Delete, Get, Options, Patch, Post};

pub(crate) static ROUTES: &[Route] = &[
    r(Get, "/health", ops::health, Public),
    r(Get, "/healthz", ops::health, Public),
    r(Get, "/health/db", ops::health_db, Public),
    r(Get, "/health/ready", ops::ready, Public),
    r(Get, "/health/readiness", ops::ready, Public),
    r(Get, "/health/live", ops::live, Public),
    r(Get, "/health/liveness", ops::live, Public),
    r(Get, "/metrics", ops::metrics, Public),
    r(Get, "/metrics/json", ops::metrics_json, Public),
    r(Get, "/openapi.json", ops::openapi, Public),
    // A browser's `GET /` goes to the dashboard page; see `ui::root`.
    r(Get, "/", ui::root, Public),
    r(Options, "/", ops::options_root, Public),
    r(Get, "/projects", projects::list, Read),
    r(Post, "/projects", projects::create, Write),
    r(Get, "/projects/{id}", projects::get, Read),
    r(Patch, "/projects/{id}", projects::update, Write),
    r(Delete, "/projects/{id}", projects::delete, Write),
    r(Get, "/projects/{id}/tasks", tasks::list, Read),
    r(Post, "/projects/{id}/tasks", tasks::create, Write),
    r(Post, "/projects/{id}/tasks/claim", claim::claim, Write),
    r(Get, "/projects/{id}/stats", activity::stats, Read),
    r(Get, "/stats", activity::stats_all, Read),
    r(Get, "/projects/{id}/events", activity::events, Read),
    r(Get, "/projects/{id}/events/stream", stream::open, Read),
    r(Get, "/projects/{pid}/tasks/{id}", tasks::get, Read),
    r(Patch, "/projects/{pid}/tasks/{id}", tasks::update, Write),
    r(Delete, "/projects/{pid}/tasks/{id}", tasks::delete, Write),
    r(
        Post,
        "/projects/{pid}/tasks/{id}/heartbeat",
        claim::heartbeat,
        Write,
    ),
    r(Get, "/tasks/{id}", tasks::get, Read),
    r(Patch, "/tasks/{id}", tasks::update, Write),
    r(Delete, "/tasks/{id}", tasks::delete, Write),
    r(Post, "/tasks/{id}/heartbeat", claim::heartbeat, Write),
    r(Post, "/tasks/{id}/complete", claim::complete, Write),
    r(Post, "/tasks/{id}/fail", claim::fail, Write),
    r(
        Post,
        "/projects/{pid}/tasks/{id}/complete",
        claim::complete,
        Write,
    ),
    r(Post, "/projects/{pid}/tasks/{id}/fail", claim::fail, Write),
    // The dashboard page (SPEC §9): static files, one route each (`ui::ASSETS`).
    r(Get, "/ui", ui::slash, Public),
    r(Get, "/ui/", ui::asset, Public),
    r(Get, "/ui/app.css", ui::asset, Public),
    r(Get, "/ui/app.js", ui::asset, Public),
    r(Get, "/ui/api.js", ui::asset, Public),
    r(Get, "/ui/dom.js", ui::asset, Public),
    r(Get, "/ui/views.js", ui::asset, Public),
    r(Get, "/ui/favicon.svg", ui::asset, Public),
];

/// A page route (the dashboard, `GET /`'s redirect to it), not an API operation:
/// the OpenAPI document leaves these out.
#[cfg(test)]
pub(crate) fn is_page(r: &Route) -> bool {
    r.method == Method::Get && (r.template == "/" || r.template.starts_with("/ui"))
}

/// The outcome of routing a request.
pub enum Resolved {
    Found(usize, Params),
    /// A parameter was digits but not a valid id (too large or zero-padded overflow).
    BadId,
    NotFound,
    MethodNotAllowed(String),
}

/// Does `path` fit `template`? Fills `params`; `Err` for an out-of-range id.
fn fits(template: &str, path: &str, params: &mut Params) -> Result<bool, ()> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    params.clear();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Ok(true),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() || ps.len() > 20 || !ps.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(false);
                }
                let v: i64 = ps.parse().map_err(|_| ())?;
                params.push(v);
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return Ok(false),
        }
    }
}

/// Finds the route for `method` on `path`. HEAD is served by the GET route.
pub fn resolve(method: Method, path: &str) -> Resolved {
    let want = if method == Method::Head {
        Method::Get
    } else {
        method
    };
    let mut allowed: Vec<&'static str> = Vec::new();
    let mut params = Params::default();
    for (i, route) in ROUTES.iter().enumerate() {
        match fits(route.template, path, &mut params) {
            Err(()) => return Resolved::BadId,
            Ok(false) => continue,
            Ok(true) if route.method == want => return Resolved::Found(i, params),
            Ok(true) => {
                allowed.push(route.method.as_str());
                if route.method == Method::Get {
                    allowed.push("HEAD");
                }
            }
        }
    }
    if allowed.is_empty() {
        Resolved::NotFound
    } else {
        allowed.push("OPTIONS");
        allowed.dedup();
        Resolved::MethodNotAllowed(allowed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(m: Method, p: &str) -> Option<(&'static str, Params)> {
        match resolve(m, p) {
            Resolved::Found(i, params) => Some((ROUTES[i].template, params)),
            _ => None,
        }
    }

    #[test]
    fn literal_segments_win() {
        let (t, _) = found(Post, "/projects/3/tasks/claim").expect("claim");
        assert_eq!(t, "/projects/{id}/tasks/claim");
        let (t, p) = found(Get, "/projects/3/tasks/9").expect("task");
        assert_eq!(t, "/projects/{pid}/tasks/{id}");
        assert_eq!((p.parent(), p.id()), (Some(3), 9));
        assert!(found(Get, "/tasks/abc").is_none());
        assert!(matches!(
            resolve(Get, "/tasks/99999999999999999999"),
            Resolved::BadId
        ));
    }

    #[test]
    fn wrong_method_lists_allowed() {
        match resolve(Method::Put, "/tasks/1") {
            Resolved::MethodNotAllowed(a) => assert_eq!(a, "GET, HEAD, PATCH, DELETE, OPTIONS"),
            _ => panic!("expected 405"),
        }
        assert!(matches!(resolve(Get, "/nope"), Resolved::NotFound));
        assert!(found(Method::Head, "/health").is_some());
    }
}
