//! CORS (`CORS_ORIGINS`): a comma list of allowed origins, or `*`. When unset nothing
//! is sent. Allowed origins get `Access-Control-Allow-Origin` on every response and
//! an answer to preflights (`OPTIONS` with `Access-Control-Request-Method`); every
//! response that depends on the Origin says `Vary: Origin` so caches keep them apart.

use crate::http::request::Request;
use crate::http::response::Response;

pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match, X-Request-ID, X-Correlation-ID";
const EXPOSE_HEADERS: &str = "ETag, Location, Retry-After, X-Request-ID, X-Correlation-ID";

impl Cors {
    /// `None` when no origin is configured.
    pub fn new(origins: &[String]) -> Option<Cors> {
        (!origins.is_empty()).then(|| Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        })
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Is this a CORS preflight?
    pub fn is_preflight(req: &Request) -> bool {
        req.method == crate::http::request::Method::Options
            && req.header("access-control-request-method").is_some()
            && req.header("origin").is_some()
    }

    /// Adds the CORS headers `req` calls for to `resp`.
    pub fn decorate(&self, req: &Request, resp: &mut Response) {
        if !self.any {
            resp.headers.push(("Vary", "Origin".into()));
        }
        let Some(origin) = req.header("origin").filter(|o| self.allows(o)) else {
            return;
        };
        let value = if self.any {
            "*".to_string()
        } else {
            origin.to_string()
        };
        resp.headers.push(("Access-Control-Allow-Origin", value));
        if Cors::is_preflight(req) {
            let methods = resp
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("allow"))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "GET, HEAD, OPTIONS".into());
            resp.headers.push(("Access-Control-Allow-Methods", methods));
            resp.headers
                .push(("Access-Control-Allow-Headers", ALLOW_HEADERS.into()));
            resp.headers.push(("Access-Control-Max-Age", "600".into()));
        } else {
            resp.headers
                .push(("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()));
        }
    }
}
