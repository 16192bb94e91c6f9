//! The served OpenAPI document and the route table must agree, both ways.

use serde_json::Value;

use crate::router::ROUTES;

fn doc() -> Value {
    serde_json::from_str(super::ops::OPENAPI).expect("openapi.json is JSON")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[test]
fn document_is_openapi_3_1() {
    let d = doc();
    assert!(d["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    assert!(d["components"]["securitySchemes"]["bearerAuth"].is_object());
}

#[test]
fn every_route_is_documented_and_every_operation_is_a_route() {
    let d = doc();
    let paths = d["paths"].as_object().expect("paths");
    for r in ROUTES {
        let m = r.method.as_str().to_ascii_lowercase();
        assert!(
            paths.get(r.template).and_then(|p| p.get(&m)).is_some(),
            "{m} {} is not documented",
            r.template
        );
    }
    for (path, item) in paths {
        for (m, op) in item.as_object().expect("path item") {
            if !METHODS.contains(&m.as_str()) {
                continue;
            }
            let routed = ROUTES
                .iter()
                .any(|r| r.template == path && r.method.as_str().eq_ignore_ascii_case(m));
            assert!(routed, "{m} {path} is documented but not routed");
            assert!(
                op["operationId"].is_string(),
                "{m} {path} has no operationId"
            );
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{m} {path} has no responses"
            );
        }
    }
}

#[test]
fn public_routes_need_no_key_in_the_document_too() {
    let d = doc();
    for r in ROUTES
        .iter()
        .filter(|r| r.access == crate::router::Access::Public)
    {
        let op = &d["paths"][r.template][r.method.as_str().to_ascii_lowercase()];
        assert_eq!(
            op["security"],
            serde_json::json!([]),
            "{} should be documented without auth",
            r.template
        );
    }
}
