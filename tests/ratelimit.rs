//! Who a rate limit counts against (SPEC §5b, issue #13): the authenticated key, else
//! the client address — never the spelling of a header. Behind `TRUSTED_PROXIES`,
//! `X-Forwarded-For` names the client.

use crate::harness::{cli_env, TestServer};

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
fn trusted_proxy_forwarded_for_names_the_client() {
    let s = TestServer::start_with(&[
        ("AUTH_DISABLED", "true"),
        ("RATE_LIMIT_PER_MINUTE", "3"),
        ("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8,::1"),
    ]);
    for _ in 0..3 {
        assert_eq!(get_as(&s, "203.0.113.7"), 200);
    }
    assert_eq!(get_as(&s, "203.0.113.7"), 429);
    // Other clients behind the same proxy have their own buckets.
    assert_eq!(get_as(&s, "203.0.113.8"), 200);
    assert_eq!(get_as(&s, "2001:db8::7"), 200);
    // The right-most address that is not a trusted proxy is the client: what the
    // client wrote to the left of it is ignored, trusted hops to its right skipped.
    for chain in [
        "198.51.100.1, 203.0.113.7",
        "198.51.100.2,203.0.113.7, 10.1.2.3",
        "garbage, 203.0.113.7,10.9.9.9 , 10.0.0.1",
        "203.0.113.9, 203.0.113.7",
        "::ffff:203.0.113.7",
    ] {
        assert_eq!(
            get_as(&s, chain),
            429,
            "{chain:?} escaped 203.0.113.7's bucket"
        );
    }
    // A proxy that adds its own header line instead of extending the first one.
    let split = [
        ("X-Forwarded-For", "198.51.100.3"),
        ("X-Forwarded-For", "203.0.113.7"),
    ];
    assert_eq!(get(&s, &split), 429);
    // The proxy itself, without the header, is a client like any other.
    assert_eq!(get(&s, &[]), 200);
}

#[test]
fn trusted_proxy_clients_with_keys_count_by_key() {
    let s = TestServer::start_with(&[
        ("RATE_LIMIT_PER_MINUTE", "3"),
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
    ]);
    let auth = format!("Bearer {}", s.key.clone().expect("key"));
    for i in 0..3 {
        let xff = format!("203.0.113.{i}");
        let headers = [("Authorization", auth.as_str()), ("X-Forwarded-For", &xff)];
        assert_eq!(get(&s, &headers), 200);
    }
    let headers = [
        ("Authorization", auth.as_str()),
        ("X-Forwarded-For", "203.0.113.50"),
    ];
    assert_eq!(get(&s, &headers), 429, "a key does not escape through XFF");
    // Bad keys are counted by the forwarded client: one flooding client does not
    // lock out another behind the same proxy.
    for _ in 0..3 {
        let headers = [
            ("Authorization", "Bearer junk"),
            ("X-Forwarded-For", "198.51.100.1"),
        ];
        assert_eq!(get(&s, &headers), 401);
    }
    let headers = [
        ("Authorization", "Bearer junk"),
        ("X-Forwarded-For", "198.51.100.1"),
    ];
    assert_eq!(get(&s, &headers), 429);
    let headers = [
        ("Authorization", "Bearer junk"),
        ("X-Forwarded-For", "198.51.100.2"),
    ];
    assert_eq!(get(&s, &headers), 401);
}

#[test]
fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
    for trusted in [None, Some("10.0.0.0/8, 2001:db8::/32")] {
        let mut env = vec![("AUTH_DISABLED", "true"), ("RATE_LIMIT_PER_MINUTE", "3")];
        env.extend(trusted.map(|t| ("TRUSTED_PROXIES", t)));
        let s = TestServer::start_with(&env);
        for i in 0..3 {
            assert_eq!(get_as(&s, &format!("203.0.113.{i}")), 200);
        }
        assert_eq!(
            get_as(&s, "203.0.113.99"),
            429,
            "X-Forwarded-For from an untrusted peer ({trusted:?}) named the client"
        );
    }
}

#[test]
fn trusted_proxies_is_validated_and_shown_by_config() {
    let out = cli_env(&["config"], &[("TRUSTED_PROXIES", "10.0.0.0/8, fc00::/7")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("TRUSTED_PROXIES"))
        .unwrap_or_else(|| panic!("config does not show TRUSTED_PROXIES: {text}"));
    assert!(line.contains("10.0.0.0/8, fc00::/7") && line.contains("environment"));
    let out = cli_env(&["config", "--trusted-proxies", "::1"], &[]);
    assert!(out.status.success());
    for bad in [
        "10.0.0.0/33",
        "10.0.0/8",
        "10.0.0.1/8",
        "fe80::/129",
        "proxy.local",
        "10.0.0.0/8 10.1.0.0/16",
    ] {
        let out = cli_env(&["config"], &[("TRUSTED_PROXIES", bad)]);
        assert_eq!(out.status.code(), Some(78), "{bad:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("dashboard-backend: invalid TRUSTED_PROXIES value")
                && err.contains(&format!("{bad:?}")),
            "{err}"
        );
    }
}
