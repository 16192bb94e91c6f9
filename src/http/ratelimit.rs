//! Per-client rate limiting (`RATE_LIMIT_PER_MINUTE`): a token bucket per API key, or
//! per client address when no valid key is sent. Memory is bounded whatever arrives: the
//! buckets live in a fixed table of `SLOTS` entries addressed by a hash of the client;
//! a slot whose owner has gone quiet (bucket full again) is taken over by a newcomer,
//! and two busy clients that collide share a bucket — strict for them, never unbounded.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 64;
const SLOTS_PER_SHARD: usize = 64;
/// Total buckets: 4096 × 32 bytes.
#[cfg(test)]
const SLOTS: usize = SHARDS * SLOTS_PER_SHARD;

/// Whom a request counts against (SPEC §5b): the key auth resolved, else the client's
/// address. Never header bytes: every spelling of one key is one client, and a made-up
/// credential is only ever its sender's address, so it cannot buy a fresh bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// An authenticated API key, by id.
    Key(i64),
    /// Everyone else: no key, a refused key, or `AUTH_DISABLED`.
    Addr(IpAddr),
}

#[derive(Clone, Copy)]
struct Bucket {
    owner: u64,
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    per_minute: f64,
    shards: Vec<Mutex<Vec<Option<Bucket>>>>,
    /// Hashing seed, so clients cannot aim collisions at each other across restarts.
    seed: u64,
}

impl RateLimiter {
    /// `None` when the limit is 0 (off).
    pub fn new(per_minute: u32) -> Option<RateLimiter> {
        (per_minute > 0).then(|| RateLimiter {
            per_minute: per_minute as f64,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![None; SLOTS_PER_SHARD]))
                .collect(),
            seed: crate::clock::now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(32),
        })
    }

    /// Takes one token for `client`; `Err(seconds)` to wait when the bucket is empty.
    pub fn check(&self, client: Client) -> Result<(), u64> {
        let mut h = DefaultHasher::new();
        self.seed.hash(&mut h);
        client.hash(&mut h);
        let owner = h.finish();
        let shard = &self.shards[(owner as usize) % SHARDS];
        let slot = (owner as usize / SHARDS) % SLOTS_PER_SHARD;
        let now = Instant::now();
        let mut slots = shard.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.per_minute / 60.0;
        let b = slots[slot].get_or_insert(Bucket {
            owner,
            tokens: self.per_minute,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(self.per_minute);
        b.at = now;
        if b.owner != owner && b.tokens >= self.per_minute {
            // The previous owner is idle: the slot changes hands with a full bucket.
            b.owner = owner;
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_client_and_stays_bounded() {
        let rl = RateLimiter::new(3).expect("on");
        let a = Client::Addr(IpAddr::from([192, 0, 2, 1]));
        for _ in 0..3 {
            assert!(rl.check(a).is_ok());
        }
        let wait = rl.check(a).expect_err("limited");
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(rl.check(Client::Key(1)).is_ok(), "a key has its own bucket");
        // A flood of distinct clients cannot grow memory: the table is fixed.
        for i in 0..100_000u32 {
            let _ = rl.check(Client::Addr(IpAddr::from(i.to_be_bytes())));
        }
        assert_eq!(
            rl.shards
                .iter()
                .map(|s| s.lock().expect("l").len())
                .sum::<usize>(),
            SLOTS
        );
        assert!(RateLimiter::new(0).is_none());
    }
}
