//! Raw bytes from one client through the real connection layer (the vendored
//! tiny_http's `conn.rs`): head parsing, framing, chunked bodies, keep-alive and
//! pipelining on a loopback socket. Whatever arrives: no panic, no hang, and every
//! reply the server writes is a well-formed HTTP/1.x response.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let out = tiny_http::conn::fuzz_one(data);
    let mut rest = &out[..];
    while !rest.is_empty() {
        assert!(
            rest.starts_with(b"HTTP/1.1 ") || rest.starts_with(b"HTTP/1.0 "),
            "not a response: {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(64)])
        );
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head");
        let head = std::str::from_utf8(&rest[..end]).expect("an ASCII head");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.parse().expect("a number"));
        rest = &rest[(end + 4 + len).min(rest.len())..];
    }
});
