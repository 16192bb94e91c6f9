//! Request paths through the static router: every path resolves to a route with
//! positive ids, a bad id, not found or method not allowed — never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dashboard_backend::http::request::Method;
use dashboard_backend::router::{resolve, Resolved};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for m in [
        Method::Get,
        Method::Post,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Other,
    ] {
        match resolve(m, path) {
            Resolved::Found(_, params) => {
                // Ids come from digits only: never negative, and present in the path.
                assert!(params.id() >= 0, "id {} from {path:?}", params.id());
                if let Some(p) = params.parent() {
                    assert!(p >= 0, "parent id {p} from {path:?}");
                    assert!(path.contains(&p.to_string()) || path.contains("/0"));
                }
            }
            Resolved::MethodNotAllowed(allow) => assert!(!allow.is_empty()),
            Resolved::BadId | Resolved::NotFound => {}
        }
    }
});
