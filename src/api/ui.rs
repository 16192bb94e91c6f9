//! The dashboard page (SPEC §9): plain HTML, CSS and JavaScript modules from `ui/`,
//! compiled into the binary and served under `/ui/` without a key (they hold no data;
//! the page asks the API for it with the operator's key). Every answer carries a strict
//! Content-Security-Policy, so nothing inline runs even if data slipped into the DOM.
//!
//! These routes are pages, not API operations: the OpenAPI document leaves them out
//! (`router::is_page`).

use std::sync::OnceLock;

use super::Call;
use crate::error::ApiError;
use crate::wire::Response;

/// One embedded file and the path it is served at.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $ct:literal) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../../ui/", $file)),
        }
    };
}

/// Every file of `ui/`; each path has its own route in `router::ROUTES`.
pub static ASSETS: &[Asset] = &[
    asset!("/ui/", "index.html", "text/html; charset=utf-8"),
    asset!("/ui/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/ui/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/ui/api.js", "api.js", "text/javascript; charset=utf-8"),
    asset!("/ui/dom.js", "dom.js", "text/javascript; charset=utf-8"),
    asset!("/ui/views.js", "views.js", "text/javascript; charset=utf-8"),
    asset!("/ui/favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// The page's budget (SPEC §9: no build step, ≤ 150 KiB in all).
#[cfg(test)]
pub const BUDGET_BYTES: usize = 150 * 1024;

/// `default-src 'self'` is the contract; the rest only narrows it further.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The security headers every page answer carries.
fn secure(r: Response) -> Response {
    r.with_header("Content-Security-Policy", CSP)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer")
}

/// A strong validator per file: FNV-1a of its bytes, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let h = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
                format!("\"{h:016x}\"")
            })
            .collect()
    })
}

/// `GET /ui/…`: the file, or 304 when the client's copy is current. Files are not
/// fingerprinted, so browsers revalidate each time (`no-cache`) and get a 304.
pub fn asset(c: &Call<'_>) -> Result<Response, ApiError> {
    let i = ASSETS
        .iter()
        .position(|a| a.path == c.req.path)
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    let (a, tag) = (&ASSETS[i], &etags()[i]);
    let fresh = c.req.header("if-none-match").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().trim_start_matches("W/") == tag)
    });
    let r = if fresh {
        Response::empty(304)
    } else {
        Response::raw(200, a.content_type, a.body.to_vec())
    };
    Ok(secure(r)
        .with_header("ETag", tag.as_str())
        .with_header("Cache-Control", "no-cache"))
}

/// `GET /ui`: the page lives at `/ui/` (its relative paths need the slash).
pub fn slash(_: &Call<'_>) -> Result<Response, ApiError> {
    Ok(secure(Response::empty(308)).with_header("Location", "/ui/"))
}

/// Does the client ask for a web page? (A browser's `Accept` names `text/html`.)
fn wants_html(c: &Call<'_>) -> bool {
    c.req
        .header("accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// `GET /`: a browser is sent to the page (303); anything else gets the answer `/`
/// always gave (405, only `OPTIONS` is served there for HAProxy's probe).
pub fn root(c: &Call<'_>) -> Result<Response, ApiError> {
    if wants_html(c) {
        return Ok(Response::empty(303)
            .with_header("Location", "/ui/")
            .with_header("Vary", "Accept"));
    }
    Ok(Response::error(
        &ApiError::method_not_allowed("OPTIONS".into()),
        &c.req.request_id,
    )
    .with_header("Vary", "Accept"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{is_page, ROUTES};
    use crate::wire::Method;

    #[test]
    fn every_asset_has_a_route_and_every_page_route_a_handler() {
        for a in ASSETS {
            assert!(
                ROUTES
                    .iter()
                    .any(|r| r.method == Method::Get && r.template == a.path),
                "{} has no route",
                a.path
            );
        }
        for r in ROUTES.iter().filter(|r| is_page(r)) {
            let known =
                ASSETS.iter().any(|a| a.path == r.template) || matches!(r.template, "/" | "/ui");
            assert!(known, "page route {} serves nothing", r.template);
        }
    }

    #[test]
    fn the_page_fits_its_budget() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total <= BUDGET_BYTES, "ui/ is {total} bytes");
    }

    #[test]
    fn etags_differ_per_file() {
        let t = etags();
        for (i, a) in t.iter().enumerate() {
            assert!(!t[i + 1..].contains(a));
        }
    }
}
