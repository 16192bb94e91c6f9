//! JSON bodies through the body reader and every validator: anything is either a
//! value each validator accepts or refuses with field-level details, or a 4xx from
//! the body reader (syntax, content type, nesting) — never a panic or a 5xx.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

use dashboard_backend::error::ApiError;
use dashboard_backend::http::request::Method;
use dashboard_backend::validate;

fuzz_target!(|data: &[u8]| {
    let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    let req = common::request(Method::Post, "/projects/1/tasks", "", headers, data);
    let v = match req.json() {
        Ok(v) => v,
        Err(e) => return common::assert_client_error(&ApiError::from(e), "body"),
    };
    macro_rules! check {
        ($name:literal, $e:expr) => {
            if let Err(details) = $e {
                assert!(!details.is_empty(), "{} refused without details", $name);
            }
        };
    }
    check!("new_project", validate::new_project(&v));
    check!("project_patch", validate::project_patch(&v));
    check!("new_task", validate::new_task(&v, ""));
    check!("new_tasks", validate::new_tasks(&v));
    check!("task_patch", validate::task_patch(&v));
    check!("claim", validate::claim(&v));
    check!("heartbeat", validate::heartbeat(&v));
});
