//! The served OpenAPI document and the route table must agree, both ways.

use serde_json::Value;

use crate::router::{is_page, Route};

/// The API's routes: the dashboard's pages are not operations of the document.
fn api_routes() -> impl Iterator<Item = &'static Route> {
    crate::router::ROUTES.iter().filter(|r| !is_page(r))
}

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
    for r in api_routes() {
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
            let routed = api_routes()
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
    for r in api_routes().filter(|r| r.access == crate::router::Access::Public) {
        let op = &d["paths"][r.template][r.method.as_str().to_ascii_lowercase()];
        assert_eq!(
            op["security"],
            serde_json::json!([]),
            "{} should be documented without auth",
            r.template
        );
    }
}

/// The operation object for a route, by lower-case method and template.
fn operation<'a>(d: &'a Value, method: &str, template: &str) -> &'a Value {
    &d["paths"][template][method.to_ascii_lowercase()]
}

/// Every parameter of every operation is stated exactly as the server's parser
/// defines it (`api::params`), and every parameter the parser reads is documented:
/// names, enums, bounds, patterns, defaults and the array style (issue #18 item 3).
#[test]
fn parameter_schemas_are_the_parsers_definitions() {
    use super::params::{Kind, Param, PATH_ID, QUERIES};
    let d = doc();
    let mut problems = Vec::new();
    for r in api_routes() {
        let m = r.method.as_str();
        let op = operation(&d, m, r.template);
        let documented: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
        let query: &[Param] = QUERIES
            .iter()
            .find(|(qm, t, _)| *qm == m && *t == r.template)
            .map_or(&[], |(_, _, p)| p);
        let path_names = r
            .template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
        let mut want: Vec<(&str, &str, Param)> = path_names
            .map(|n| {
                (
                    "path",
                    n,
                    Param {
                        name: "id",
                        ..PATH_ID
                    },
                )
            })
            .collect();
        want.extend(query.iter().map(|p| ("query", p.name, *p)));
        for (inn, name, p) in &want {
            let Some(doc_p) = documented
                .iter()
                .find(|x| x["in"] == *inn && x["name"] == *name)
            else {
                problems.push(format!(
                    "{m} {}: {inn} parameter {name} is not documented",
                    r.template
                ));
                continue;
            };
            if doc_p["schema"] != p.schema() {
                problems.push(format!(
                    "{m} {} {name}: schema should be {}",
                    r.template,
                    p.schema()
                ));
            }
            let list = matches!(p.kind, Kind::Words(_));
            let style_ok = if list {
                doc_p["style"] == "form" && doc_p["explode"] == false
            } else {
                doc_p.get("style").is_none() && doc_p.get("explode").is_none()
            };
            if !style_ok {
                problems.push(format!(
                    "{m} {} {name}: a comma list is style form, explode false; nothing else sets them",
                    r.template
                ));
            }
            if doc_p["required"] != (*inn == "path") {
                problems.push(format!(
                    "{m} {} {name}: required must be {}",
                    r.template,
                    *inn == "path"
                ));
            }
        }
        for x in &documented {
            let known = x["in"] == "header"
                || want
                    .iter()
                    .any(|(inn, name, _)| x["in"] == *inn && x["name"] == *name);
            if !known {
                problems.push(format!(
                    "{m} {}: documents {} parameter {} that the server does not read",
                    r.template, x["in"], x["name"]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What a 201 creates, and where the new resource lives (its `Location`).
const CREATES: &[(&str, &str)] = &[
    ("createProject", "/projects/{id}"),
    ("createTasks", "/tasks/{id}"),
];

/// Every POST that creates a resource links to every operation on it, with every
/// path parameter filled from the response body, so stateful testers and generated
/// clients can follow create → get → claim → complete (issue #18 item 4).
#[test]
fn creates_link_to_every_operation_on_what_they_create() {
    let d = doc();
    let ops: Vec<(&str, &str, &Value)> = api_routes()
        .map(|r| {
            let op = operation(&d, r.method.as_str(), r.template);
            (r.template, op["operationId"].as_str().unwrap_or(""), op)
        })
        .collect();
    let mut problems = Vec::new();
    for (_, id, op) in &ops {
        if op["responses"].get("201").is_some() && !CREATES.iter().any(|(c, _)| c == id) {
            problems.push(format!("{id} answers 201 but is not in CREATES"));
        }
    }
    for (create, home) in CREATES {
        let Some((_, _, op)) = ops.iter().find(|(_, id, _)| id == create) else {
            problems.push(format!("{create} is not documented"));
            continue;
        };
        let links = &op["responses"]["201"]["links"];
        let on_it = ops.iter().filter(|(t, _, _)| {
            *t == *home
                || t.strip_prefix(home)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        for (template, target, _) in on_it {
            let found = links
                .as_object()
                .into_iter()
                .flatten()
                .any(|(_, l)| l["operationId"] == *target);
            if !found {
                problems.push(format!("{create} has no link to {target} ({template})"));
            }
        }
        for (name, link) in links.as_object().into_iter().flatten() {
            let target = link["operationId"].as_str().unwrap_or("");
            let Some((template, _, _)) = ops.iter().find(|(_, id, _)| *id == target) else {
                problems.push(format!(
                    "{create} link {name} names unknown operation {target:?}"
                ));
                continue;
            };
            let path_params = template
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
            for p in path_params {
                let expr = link["parameters"][p].as_str().unwrap_or("");
                let field = expr.strip_prefix("$response.body#/").unwrap_or("");
                if op["responses"]["201"].get("content").is_none() || field.is_empty() {
                    problems.push(format!(
                        "{create} link {name}: {p} must come from $response.body#/…, not {expr:?}"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The request headers of SPEC §5a, stated where the server reads them: every POST
/// that needs a key takes `Idempotency-Key` (1 to 255 printable ASCII, what
/// `Call::idempotency` takes after the connection layer trims spaces), answers its
/// replays with `Idempotent-Replayed: true`, and can answer 409 (the same key still
/// running) and 422 (`idempotency_mismatch`); every PATCH and DELETE of a task takes
/// `Lease-Token` and can answer 409 (`lease_held`); no other operation documents them.
#[test]
fn idempotency_and_lease_headers_are_documented_where_they_are_read() {
    use crate::router::Access;
    use crate::wire::Method;
    let d = doc();
    let idem_schema = serde_json::json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[ -~]*[!-~][ -~]*$"
    });
    let task_templates = ["/tasks/{id}", "/projects/{pid}/tasks/{id}"];
    let mut problems = Vec::new();
    for r in api_routes() {
        let m = r.method.as_str();
        let op = operation(&d, m, r.template);
        let header = |name: &str| {
            op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["in"] == "header" && p["name"] == name)
        };
        let idempotent = r.method == Method::Post && r.access != Access::Public;
        let leased = matches!(r.method, Method::Patch | Method::Delete)
            && task_templates.contains(&r.template);
        match (idempotent, header("Idempotency-Key")) {
            (true, None) => problems.push(format!("{m} {}: no Idempotency-Key", r.template)),
            (true, Some(p)) if p["schema"] != idem_schema || p["required"] != false => problems
                .push(format!(
                    "{m} {}: Idempotency-Key must be optional with schema {idem_schema}",
                    r.template
                )),
            (false, Some(_)) => problems.push(format!(
                "{m} {}: documents Idempotency-Key that the server does not read",
                r.template
            )),
            _ => {}
        }
        match (leased, header("Lease-Token")) {
            (true, None) => problems.push(format!("{m} {}: no Lease-Token", r.template)),
            (false, Some(_)) => problems.push(format!(
                "{m} {}: documents Lease-Token that the server does not read",
                r.template
            )),
            _ => {}
        }
        let responses = op["responses"].as_object().into_iter().flatten();
        for (code, resp) in responses {
            let replayed = resp["headers"].get("Idempotent-Replayed").is_some();
            // A 204 changed nothing, so it is never stored and never replayed.
            if idempotent && code.starts_with('2') && code != "204" && !replayed {
                problems.push(format!(
                    "{m} {} {code}: no Idempotent-Replayed header",
                    r.template
                ));
            }
            if (!idempotent || code == "204") && replayed {
                problems.push(format!(
                    "{m} {} {code}: Idempotent-Replayed on a non-idempotent operation",
                    r.template
                ));
            }
        }
        let mut need: Vec<&str> = Vec::new();
        if idempotent {
            need.extend(["400", "409", "422"]);
        }
        if leased {
            need.push("409");
        }
        for code in need {
            if op["responses"].get(code).is_none() {
                problems.push(format!("{m} {}: no {code} answer", r.template));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every error code `ApiError` makes (src/error.rs) is in the error schema's enum.
#[test]
fn error_codes_are_documented() {
    let d = doc();
    let codes =
        &d["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    let src = include_str!("../error.rs");
    let (mut seen, mut missing) = (0, Vec::new());
    // Every `"code"` literal after a status in `ApiError::new(status, "code", …)`.
    for (i, _) in src.match_indices("ApiError::new(") {
        let rest = &src[i..];
        let Some(q) = rest.find('"') else { continue };
        let code: String = rest[q + 1..].chars().take_while(|c| *c != '"').collect();
        seen += 1;
        if !codes
            .as_array()
            .is_some_and(|a| a.iter().any(|c| *c == *code))
        {
            missing.push(code);
        }
    }
    assert!(seen >= 15, "found only {seen} codes in error.rs");
    assert!(missing.is_empty(), "undocumented codes: {missing:?}");
}

/// The documented words of `Event.type` and `Project.status` are the enums' words:
/// a kind added to `EventKind` (or a status to `ProjectStatus`) without the document
/// fails here.
#[test]
fn event_types_and_project_statuses_are_the_enums_words() {
    use crate::model::{EventKind, ProjectStatus};
    let d = doc();
    let words = |v: &Value| -> Vec<String> {
        let mut w: Vec<String> = v["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|x| x.as_str().expect("a word").to_string())
            .collect();
        w.sort();
        w
    };
    let schemas = &d["components"]["schemas"];
    let mut kinds: Vec<String> = EventKind::ALL.iter().map(|k| k.to_string()).collect();
    kinds.sort();
    assert_eq!(words(&schemas["Event"]["properties"]["type"]), kinds);
    let mut statuses: Vec<String> = ProjectStatus::NAMES.map(String::from).to_vec();
    statuses.sort();
    assert_eq!(words(&schemas["Project"]["properties"]["status"]), statuses);
}
