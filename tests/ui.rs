//! The dashboard page's serving side (SPEC §9): every file of `ui/` is embedded and
//! served under `/ui/` without a key, with its content type and the security
//! headers; `GET /` sends browsers there; the page fits its budget and runs no
//! inline script. (What the page does in a browser: scripts/ui-check.py.)

use std::path::PathBuf;

use crate::harness::TestServer;

const CSP_BASE: &str = "default-src 'self'";
const BUDGET: usize = 150 * 1024;

fn ui_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui")
}

/// Every file of ui/ with the path it must be served at.
fn files() -> Vec<(String, String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(ui_dir())
        .expect("ui/")
        .map(|e| {
            let name = e.expect("entry").file_name().into_string().expect("name");
            let path = if name == "index.html" {
                "/ui/".to_string()
            } else {
                format!("/ui/{name}")
            };
            let bytes = std::fs::read(ui_dir().join(&name)).expect("read");
            (name, path, bytes)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 3, "ui/ has its files");
    v
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        other => panic!("ui/{name}: no content type for {other:?}"),
    }
}

#[test]
fn every_file_is_served_without_a_key_with_its_type_and_the_security_headers() {
    let s = TestServer::start();
    let mut total = 0;
    for (name, path, bytes) in files() {
        let r = s.send("GET", &path, &[], None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, bytes, "{path} serves ui/{name} as embedded");
        total += r.body.len();
        assert_eq!(
            r.header("content-type"),
            Some(content_type(&name)),
            "{path}"
        );
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(csp.starts_with(CSP_BASE), "{path}: CSP {csp:?}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        let etag = r.header("etag").expect("ETag").to_string();
        // Revalidation: the same version is a 304 without a body.
        let again = s.send("GET", &path, &[("If-None-Match", &etag)], None);
        assert_eq!(again.status, 304, "{path} with its ETag");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let other = s.send("GET", &path, &[("If-None-Match", "\"0\"")], None);
        assert_eq!(other.status, 200, "{path} with another ETag");
        let head = s.send("HEAD", &path, &[], None);
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "HEAD has no body");
    }
    assert!(total <= BUDGET, "the page is {total} bytes, over {BUDGET}");
    // Files that are not there, and methods a page does not take.
    assert_eq!(s.send("GET", "/ui/nope.js", &[], None).status, 404);
    let up = s.send("GET", "/ui/../Cargo.toml", &[], None).status;
    assert!(matches!(up, 400 | 404), "{up}");
    let post = s.send("POST", "/ui/", &[("Content-Length", "0")], None);
    assert_eq!(post.status, 405);
    let slash = s.send("GET", "/ui", &[], None);
    assert_eq!(
        (slash.status, slash.header("location")),
        (308, Some("/ui/"))
    );
}

#[test]
fn get_root_sends_browsers_to_the_page_and_keeps_its_answer_for_others() {
    let s = TestServer::start();
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = s.send("GET", "/", &[("Accept", browser)], None);
    assert!(matches!(r.status, 302 | 303), "{}", r.status);
    assert_eq!(r.header("location"), Some("/ui/"));
    for accept in [None, Some("application/json"), Some("*/*")] {
        let h: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let r = s.send("GET", "/", &h, None);
        assert_eq!(r.status, 405, "GET / with Accept {accept:?}");
        assert_eq!(r.code(), "method_not_allowed");
        assert_eq!(r.header("allow"), Some("OPTIONS"));
    }
    // HAProxy's probe is untouched; other methods list what `/` serves.
    assert_eq!(s.send("OPTIONS", "/", &[], None).status, 200);
    let put = s.send("PUT", "/", &[("Content-Length", "0")], None);
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn the_page_has_no_inline_script_or_style_and_never_parses_data_as_html() {
    let html = String::from_utf8(std::fs::read(ui_dir().join("index.html")).expect("index"))
        .expect("utf-8");
    let lower = html.to_ascii_lowercase();
    let mut scripts = 0;
    for (i, _) in lower.match_indices("<script") {
        scripts += 1;
        let tag_end = i + lower[i..].find('>').expect("tag end");
        let tag = &lower[i..=tag_end];
        assert!(tag.contains(" src="), "inline script: {tag}");
        assert!(
            lower[tag_end + 1..].starts_with("</script>"),
            "a script with a src has no body: {tag}"
        );
    }
    assert!(scripts >= 1, "index.html loads its module");
    // The key's input has no name: even a form submitted without the script (which
    // the CSP's form-action also stops) could not put the key in a URL.
    for (i, _) in lower.match_indices("<input") {
        let tag = &lower[i..i + lower[i..].find('>').expect("tag end")];
        assert!(!tag.contains(" name="), "a named input: {tag}");
    }
    assert!(!lower.contains("<style"), "inline <style>");
    assert!(!lower.contains(" style="), "inline style attribute");
    assert!(!lower.contains("javascript:"), "javascript: URL");
    for attr in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " oninput=",
    ] {
        assert!(!lower.contains(attr), "inline handler {attr}");
    }
    for (name, _, bytes) in files() {
        if !name.ends_with(".js") {
            continue;
        }
        let js = String::from_utf8(bytes).expect("utf-8");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!js.contains(sink), "ui/{name} uses {sink}");
        }
        for external in ["http://", "https://", "//cdn"] {
            assert!(!js.contains(external), "ui/{name} names {external}");
        }
    }
}

#[test]
fn metrics_json_carries_the_buckets_the_page_reads_p99_from() {
    let s = TestServer::start();
    s.send("GET", "/health", &[], None);
    let m = s.send("GET", "/metrics/json", &[], None).json();
    let le = m["metrics"]["http_request_duration_buckets_le"]
        .as_array()
        .expect("bucket bounds");
    let routes = m["metrics"]["http_requests_by_route"]
        .as_array()
        .expect("routes");
    let health = routes
        .iter()
        .find(|r| r["route"] == "/health")
        .expect("/health counted");
    let buckets = health["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), le.len());
    let inside: u64 = buckets.iter().map(|b| b.as_u64().expect("count")).sum();
    assert!(inside <= health["count"].as_u64().expect("count"));
    assert!(inside >= 1, "a fast /health lands in a bucket: {health}");
}
