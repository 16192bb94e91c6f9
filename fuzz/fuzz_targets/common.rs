// Shared by the targets: a request as the pipeline sees it, built from fuzz input.
#![allow(dead_code)]
use dashboard_backend::http::request::{Method, Request};

pub fn request(
    method: Method,
    path: &str,
    query: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Request {
    Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: body.to_vec(),
        body_error: None,
        remote: None,
        request_id: String::new(),
    }
}

/// Every refusal of client input is a 4xx, never a 5xx.
pub fn assert_client_error(e: &dashboard_backend::error::ApiError, what: &str) {
    assert!(
        (400..500).contains(&e.status),
        "{what}: client input answered {} {}",
        e.status,
        e.code
    );
}
