//! Pagination cursors: an arbitrary string decodes to a (key, id) pair or a 400;
//! a decoded pair re-encodes to a cursor that decodes to the same pair; any pair
//! the server encodes decodes back to itself under its own tag only.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

use dashboard_backend::api::{decode_cursor, encode_cursor};

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let tag = ['p', 't', 'c', 'u'][data[0] as usize % 4];
    let key = i64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    let id = i64::from_le_bytes(data[9..17].try_into().expect("8 bytes"));
    // Round trip of what the server makes.
    let c = encode_cursor(tag, key, id);
    assert_eq!(decode_cursor(&c, tag).expect("own cursor"), (key, id));
    let other = if tag == 'p' { 't' } else { 'p' };
    assert!(
        decode_cursor(&c, other).is_err(),
        "a cursor crossed listings"
    );
    // Whatever a client sends.
    let Ok(s) = std::str::from_utf8(&data[17..]) else {
        return;
    };
    match decode_cursor(s, tag) {
        Ok((k, i)) => {
            let again = encode_cursor(tag, k, i);
            assert_eq!(decode_cursor(&again, tag).expect("re-encoded"), (k, i));
        }
        Err(e) => common::assert_client_error(&e, "cursor"),
    }
});
