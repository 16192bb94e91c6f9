//! Who a rate limit counts against (SPEC §5b, issue #13): the authenticated key, else
//! the client address — never the spelling of a header.

use crate::harness::TestServer;

/// GET /projects with the given headers; the status.
fn get(s: &TestServer, headers: &[(&str, &str)]) -> u16 {
    s.send("GET", "/projects", headers, None).status
}

/// GET /projects as the client `xff` names.
fn get_as(s: &TestServer, xff: &str) -> u16 {
    get(s, &[("X-Forwarded-For", xff)])
}

#[test]
fn spellings_of_one_key_share_one_bucket() {
    let s = TestServer::start_with(&[("RATE_LIMIT_PER_MINUTE", "5")]);
    let key = s.key.clone().expect("key");
    for _ in 0..5 {
        assert_eq!(get(&s, &[("Authorization", &format!("Bearer {key}"))]), 200);
    }
    for spelling in [
        format!("Bearer {key}"),
        format!("Bearer  {key}"),
        format!("bearer {key}"),
        format!("BEARER {key}"),
        format!("Bearer \t{key}"),
    ] {
        assert_eq!(
            get(&s, &[("Authorization", &spelling)]),
            429,
            "{:?} escaped the key's bucket",
            spelling.replace(&key, "K")
        );
    }
}

#[test]
fn garbage_authorization_is_limited_by_address() {
    let s = TestServer::start_with(&[("RATE_LIMIT_PER_MINUTE", "5")]);
    for i in 0..5 {
        let junk = format!("Bearer not-a-key-{i}");
        assert_eq!(get(&s, &[("Authorization", &junk)]), 401);
    }
    // The address has spent its budget: fresh junk, another scheme or no header at all
    // cannot buy a new one (a 401 flood is still a flood).
    for junk in ["Bearer not-a-key-99", "Basic dXNlcjpwdw==", "x", ""] {
        let headers: &[(&str, &str)] = if junk.is_empty() {
            &[]
        } else {
            &[("Authorization", junk)]
        };
        assert_eq!(get(&s, headers), 429, "{junk:?} escaped the address limit");
    }
    // A real key is its own client, whatever its address did.
    assert_eq!(s.get("/projects").status, 200);
}

#[test]
fn without_auth_the_address_is_the_client_whatever_the_headers() {
    let s = TestServer::start_with(&[("AUTH_DISABLED", "true"), ("RATE_LIMIT_PER_MINUTE", "3")]);
    for i in 0..3 {
        let junk = format!("Bearer {i}");
        assert_eq!(get(&s, &[("Authorization", &junk)]), 200);
    }
    assert_eq!(get(&s, &[("Authorization", "Bearer 99")]), 429);
    assert_eq!(get(&s, &[]), 429);
}

#[test]
fn forwarded_for_does_not_name_the_client() {
    let s = TestServer::start_with(&[("AUTH_DISABLED", "true"), ("RATE_LIMIT_PER_MINUTE", "3")]);
    for i in 0..3 {
        assert_eq!(get_as(&s, &format!("203.0.113.{i}")), 200);
    }
    assert_eq!(
        get_as(&s, "203.0.113.99"),
        429,
        "X-Forwarded-For named the client"
    );
}
