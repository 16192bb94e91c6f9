//! What crosses the wire, as the router and the handlers see it: the request value,
//! the response value and the path parameters. Below `router` and `api` so that
//! neither reaches up into `http` (the worker pool and the pipeline) for them; `http`
//! re-exports `request` and `response` under their old paths.

pub mod request;
pub mod response;

pub use request::{Method, Request};
pub use response::Response;

/// Path parameters in template order (`{pid}` then `{id}`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Params {
    vals: [i64; 2],
    n: usize,
}

impl Params {
    /// The last parameter: the resource's own id.
    pub fn id(&self) -> i64 {
        self.vals[self.n.saturating_sub(1)]
    }
    /// The enclosing project id when the path has two parameters.
    pub fn parent(&self) -> Option<i64> {
        (self.n == 2).then_some(self.vals[0])
    }
    /// Forgets every parameter (a new template is being tried).
    pub(crate) fn clear(&mut self) {
        self.n = 0;
    }
    /// Appends one; a template has at most two, further ones are ignored.
    pub(crate) fn push(&mut self, v: i64) {
        if self.n < 2 {
            self.vals[self.n] = v;
            self.n += 1;
        }
    }
}
