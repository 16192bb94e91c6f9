//! Our response value and the one function that writes it to the socket.

use serde::Serialize;

use crate::error::ApiError;

/// Status, headers and body. Built by handlers, sent by `send`.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

pub const JSON: &str = "application/json";

impl Response {
    /// A JSON body serialized straight into the response buffer.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        let mut body = Vec::with_capacity(512);
        // Serializing our own types cannot fail; an empty body would show if it did.
        let _ = serde_json::to_writer(&mut body, value);
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body,
        }
    }

    /// No body (204).
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "",
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A plain body with its content type.
    pub fn raw(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The error envelope with its extra headers.
    pub fn error(e: &ApiError, request_id: &str) -> Response {
        let mut r = Response::raw(e.status, JSON, e.body(request_id));
        if let Some(allow) = &e.allow {
            r.headers.push(("Allow", allow.clone()));
        }
        if let Some(s) = e.retry_after {
            r.headers.push(("Retry-After", s.to_string()));
        }
        r
    }
}

/// Hands `resp` to the connection layer, which writes it (the worker never blocks on
/// a client that does not read). `close` ends the connection after it (draining).
/// Returns false if the reply could not be handed over.
pub fn send(rq: tiny_http::Request, resp: Response, close: bool) -> bool {
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(resp.headers.len() + 2);
    if !resp.content_type.is_empty() {
        headers.push(("Content-Type", resp.content_type));
    }
    headers.push(("Server", "dashboard-backend"));
    for (k, v) in &resp.headers {
        headers.push((k, v.as_str()));
    }
    let body = tiny_http::conn::Body::Owned(resp.body);
    rq.respond_parts(resp.status, &headers, body, close).is_ok()
}
