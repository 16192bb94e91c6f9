//! Query strings: percent-decoding, and every typed accessor the handlers use on
//! the result (limit, ids, bounded text, cursors). Any refusal must be a 4xx; any
//! accepted value must be within the documented bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

use dashboard_backend::api::{decode_cursor, Query};
use dashboard_backend::http::request::Method;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let req = common::request(Method::Get, "/projects/1/tasks", query, Vec::new(), b"");
    let pairs = match req.query_pairs() {
        Ok(p) => p,
        Err(e) => return common::assert_client_error(&e, "query_pairs"),
    };
    // `+` means a space: a decoded `+` can only come from `%2B`.
    for (k, v) in &pairs {
        for s in [k, v] {
            assert!(!s.contains('+') || query.to_ascii_lowercase().contains("%2b"));
        }
    }
    let q = Query::of(&req).expect("decoded once, decodes again");
    match q.limit() {
        Ok(n) => assert!((1..=500).contains(&n), "limit {n} out of bounds"),
        Err(e) => common::assert_client_error(&e, "limit"),
    }
    for name in ["after", "cursor", "project_id"] {
        match q.id(name) {
            Ok(Some(n)) => assert!(n >= 0),
            Ok(None) => {}
            Err(e) => common::assert_client_error(&e, "id"),
        }
    }
    match q.text("assignee", 100) {
        Ok(Some(t)) => assert!(!t.is_empty() && t.chars().count() <= 100),
        Ok(None) => {}
        Err(e) => common::assert_client_error(&e, "text"),
    }
    if let Some(c) = q.cursor() {
        for tag in ['p', 't', 'c', 'u', 'r'] {
            if let Err(e) = decode_cursor(c, tag) {
                common::assert_client_error(&e, "cursor");
            }
        }
    }
});
