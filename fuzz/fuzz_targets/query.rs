//! Query strings: percent-decoding, and every typed accessor the handlers use on
//! the result (limit, ids, bounded text, cursors). Any refusal must be a 4xx; any
//! accepted value must be within the documented bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

use dashboard_backend::api::params::{self, Kind, Param};
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
    // Every parameter definition the handlers parse with: a refusal is a 4xx, an
    // accepted value passes its own definition's check.
    for (_, _, defs) in params::QUERIES {
        for p in defs.iter() {
            check_param(&q, p);
        }
    }
    if let Ok(Some(c)) = q.text(&params::CURSOR) {
        for tag in ['p', 't', 'c', 'u', 'r'] {
            if let Err(e) = decode_cursor(c, tag) {
                common::assert_client_error(&e, "cursor");
            }
        }
    }
});

fn check_param(q: &Query, p: &Param) {
    // Each definition through the accessor its handlers use for its kind.
    match p.kind {
        Kind::Int { min, max } => match q.int(p) {
            Ok(Some(n)) => assert!((min..=max).contains(&n), "{} = {n}", p.name),
            Ok(None) => {}
            Err(e) => common::assert_client_error(&e, p.name),
        },
        Kind::Words(allowed) => match q.words(p) {
            Ok(words) => assert!(words.iter().all(|w| allowed.contains(w)), "{}", p.name),
            Err(e) => common::assert_client_error(&e, p.name),
        },
        _ => match q.text(p) {
            Ok(Some(v)) => assert!(p.check(v).is_ok(), "{} accepted {v:?} it refuses", p.name),
            Ok(None) => {}
            Err(e) => common::assert_client_error(&e, p.name),
        },
    }
}
