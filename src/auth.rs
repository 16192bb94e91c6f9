//! API keys: generation from the OS random source, hashing, constant-time comparison.
//!
//! A key is `dbk_` + 64 hex digits (256 random bits). Keys that random need no slow
//! password hash: SHA-256 is enough to make the stored hashes useless to a thief, and
//! it keeps authentication to a microsecond. `sha2` (RustCrypto) is the one crate here
//! that is not the brief's stack: a hand-written SHA-256 is the kind of code that
//! should come from a well-reviewed source.

use std::io::Read;

use sha2::{Digest, Sha256};

/// The printable prefix of every key; also how a key is recognised in logs to redact.
pub const KEY_PREFIX: &str = "dbk_";

/// A freshly generated key: the secret (shown once), its display prefix and its hash.
pub struct GeneratedKey {
    pub secret: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

/// Generates a new key from `/dev/urandom`.
pub fn generate() -> std::io::Result<GeneratedKey> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut secret = String::with_capacity(KEY_PREFIX.len() + 64);
    secret.push_str(KEY_PREFIX);
    for b in bytes {
        secret.push_str(&format!("{b:02x}"));
    }
    let prefix = secret[..KEY_PREFIX.len() + 8].to_string();
    let hash = hash(&secret);
    Ok(GeneratedKey {
        secret,
        prefix,
        hash,
    })
}

/// SHA-256 of a presented key.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_stably() {
        let a = generate().expect("urandom");
        let b = generate().expect("urandom");
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 68);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(hash(&a.secret), a.hash);
        assert!(constant_time_eq(&a.hash, &hash(&a.secret)));
        assert!(!constant_time_eq(&a.hash, &b.hash));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
