//! Our request value: method, path, query, headers and a bounded body, copied out of
//! tiny_http once so that the pipeline, handlers and tests never touch the socket.
//! Body parsing has its own small error type (`BodyError`) mapped to `bad_request`,
//! `unsupported_media_type` and `payload_too_large`.

use std::io::Read;
use std::net::SocketAddr;

use serde_json::Value;

use crate::error::ApiError;

/// HTTP methods we route; anything else is `Other` (answered 405).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }

    fn from_tiny(m: &tiny_http::Method) -> Method {
        match m {
            tiny_http::Method::Get => Method::Get,
            tiny_http::Method::Head => Method::Head,
            tiny_http::Method::Post => Method::Post,
            tiny_http::Method::Put => Method::Put,
            tiny_http::Method::Patch => Method::Patch,
            tiny_http::Method::Delete => Method::Delete,
            tiny_http::Method::Options => Method::Options,
            _ => Method::Other,
        }
    }
}

/// Why a body could not be read or parsed.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    WrongContentType,
    Read(std::io::Error),
    Parse(serde_json::Error),
    Empty,
    /// A string (or key) holds U+0000, at this path: PostgreSQL cannot store it, so
    /// neither engine takes it (SPEC §10: the same answers on both).
    Nul(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(n) => write!(f, "body larger than {n} bytes"),
            BodyError::WrongContentType => write!(f, "body must be application/json"),
            BodyError::Read(e) => write!(f, "could not read the body: {e}"),
            BodyError::Parse(e) => write!(f, "malformed JSON: {e}"),
            BodyError::Empty => write!(f, "a JSON body is required"),
            BodyError::Nul(at) => write!(f, "{at} holds the NUL character (U+0000)"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Read(e) => Some(e),
            BodyError::Parse(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge(n) => ApiError::payload_too_large(n),
            BodyError::WrongContentType => ApiError::unsupported_media_type(),
            // The connection layer's read deadline ran out mid-body (SPEC §5b).
            BodyError::Read(e) if e.kind() == std::io::ErrorKind::TimedOut => ApiError::new(
                408,
                "request_timeout",
                "the request body did not arrive within READ_TIMEOUT_SECONDS",
            ),
            BodyError::Nul(at) => ApiError::validation(vec![crate::error::Detail::new(
                at,
                "must not contain the NUL character (U+0000)",
            )]),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// Free-form JSON members (`metadata`, a task's `result`, a failure's `error`): kept
/// as JSON text, where U+0000 is the escape `\u0000` and fits any engine.
const FREE_FORM: [&str; 3] = ["metadata", "result", "error"];

/// The path of the first string or key in `v` that holds U+0000 (`title`,
/// `[2].labels[0]`), if any, outside the free-form members of `v` when `top` (the
/// body) or of its items when it is a batch.
fn nul_at(v: &Value, path: &mut String, top: bool) -> bool {
    let at = |path: &mut String, step: &str, item: &Value, item_top: bool| {
        let len = path.len();
        path.push_str(step);
        let found = nul_at(item, path, item_top);
        if !found {
            path.truncate(len);
        }
        found
    };
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .any(|(i, item)| at(path, &format!("[{i}]"), item, top)),
        Value::Object(map) => map.iter().any(|(k, item)| {
            if top && FREE_FORM.contains(&k.as_str()) {
                return false;
            }
            let dot = if path.is_empty() { "" } else { "." };
            let step = format!("{dot}{}", k.replace('\0', "\\u0000"));
            if k.contains('\0') {
                path.push_str(&step);
                return true;
            }
            at(path, &step, item, false)
        }),
        _ => false,
    }
}

/// A request, fully read.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Set when the body could not be read within the limit.
    pub body_error: Option<BodyError>,
    pub remote: Option<SocketAddr>,
    pub request_id: String,
}

impl Request {
    /// Copies a tiny_http request out, reading at most `max_body` body bytes.
    pub fn read(rq: &mut tiny_http::Request, max_body: usize) -> Request {
        let (path, query) = match rq.url().split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (rq.url().to_string(), String::new()),
        };
        let headers: Vec<(String, String)> = rq
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_string(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let mut req = Request {
            method: Method::from_tiny(rq.method()),
            path,
            query,
            headers,
            body: Vec::new(),
            body_error: None,
            remote: rq.remote_addr().copied(),
            request_id: String::new(),
        };
        match rq.body_length() {
            Some(n) if n > max_body => req.body_error = Some(BodyError::TooLarge(max_body)),
            _ => {
                let mut body = Vec::with_capacity(rq.body_length().unwrap_or(0).min(max_body));
                match rq
                    .as_reader()
                    .take(max_body as u64 + 1)
                    .read_to_end(&mut body)
                {
                    Ok(n) if n > max_body => req.body_error = Some(BodyError::TooLarge(max_body)),
                    // The client closed early: a cut-off body is not the body it meant.
                    Ok(n) if rq.body_length().is_some_and(|want| n < want) => {
                        req.body_error = Some(BodyError::Read(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "body ended after {n} of {} bytes",
                                rq.body_length().unwrap_or(0)
                            ),
                        )))
                    }
                    Ok(_) => req.body = body,
                    Err(e) => req.body_error = Some(BodyError::Read(e)),
                }
            }
        }
        req
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, after checking size and content type.
    pub fn json(&self) -> Result<Value, BodyError> {
        if let Some(e) = &self.body_error {
            return Err(match e {
                BodyError::TooLarge(n) => BodyError::TooLarge(*n),
                BodyError::Read(e) => BodyError::Read(std::io::Error::new(e.kind(), e.to_string())),
                other => BodyError::Read(std::io::Error::other(other.to_string())),
            });
        }
        let ct = self.header("content-type").unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime.eq_ignore_ascii_case("application/json")
            || mime.to_ascii_lowercase().ends_with("+json"))
        {
            return Err(if self.body.is_empty() && ct.is_empty() {
                BodyError::Empty
            } else {
                BodyError::WrongContentType
            });
        }
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(BodyError::Empty);
        }
        let v: Value = serde_json::from_slice(&self.body).map_err(BodyError::Parse)?;
        let mut at = String::new();
        if nul_at(&v, &mut at, true) {
            return Err(BodyError::Nul(if at.is_empty() {
                "body".into()
            } else {
                at
            }));
        }
        Ok(v)
    }

    /// Decoded query parameters, in order.
    pub fn query_pairs(&self) -> Result<Vec<(String, String)>, ApiError> {
        let mut out = Vec::new();
        for part in self.query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            out.push((percent_decode(k)?, percent_decode(v)?));
        }
        Ok(out)
    }
}

/// Decodes `%XX` escapes and `+`; refuses bad escapes and invalid UTF-8.
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = byte else {
                    return Err(ApiError::bad_request(
                        "malformed percent-escape in the query string",
                    ));
                };
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    if out.contains(&0) {
        return Err(ApiError::bad_request(
            "the query string holds the NUL character (%00), which no value may contain",
        ));
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query string is not valid UTF-8"))
}
