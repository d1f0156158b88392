//! Per-client token buckets with bounded memory (sans-IO: time is passed in).
//!
//! Buckets live in shards so concurrent requests rarely contend on one lock.
//! A shard never holds more than its share of `max_clients`: when it is full,
//! buckets that have refilled completely (indistinguishable from a new client)
//! are dropped first, then the one with the most tokens. A flood of distinct
//! addresses therefore costs bounded memory and cannot reset the bucket of a
//! client that is being limited.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::types::RateLimit;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A rate limiter for one frontend or route.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per second.
    per_second: f64,
    burst: f64,
    shard_cap: usize,
    shards: Vec<Mutex<HashMap<Vec<u8>, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
    /// The settings it was built from (reused across reloads when unchanged).
    pub config: RateLimit,
}

impl RateLimiter {
    /// A limiter for `cfg`.
    pub fn new(cfg: &RateLimit) -> Self {
        let per_second = cfg.rate / cfg.per.as_secs_f64().max(1e-6);
        RateLimiter {
            per_second,
            burst: f64::from(cfg.burst.max(1)),
            shard_cap: (cfg.max_clients / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            config: cfg.clone(),
        }
    }

    /// Take one token for `key` at `now`: Ok, or how long until a token is available.
    pub fn check(&self, key: &[u8], now: Instant) -> Result<(), Duration> {
        let idx = (self.hasher.hash_one(key) as usize) % SHARDS;
        let Some(shard) = self.shards.get(idx) else {
            return Ok(());
        };
        let Ok(mut map) = shard.lock() else {
            return Ok(());
        };
        if !map.contains_key(key) && map.len() >= self.shard_cap {
            self.evict(&mut map, now);
        }
        let b = map.entry(key.to_vec()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }

    fn evict(&self, map: &mut HashMap<Vec<u8>, Bucket>, now: Instant) {
        let full_after = self.burst / self.per_second;
        map.retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < full_after);
        if map.len() >= self.shard_cap {
            // Evict the client closest to a full bucket: forgetting it changes
            // least, while clients being limited right now keep their debt.
            let refilled = |b: &Bucket| {
                (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * self.per_second)
                    .min(self.burst)
            };
            let victim = map
                .iter()
                .max_by(|(_, a), (_, b)| {
                    refilled(a)
                        .total_cmp(&refilled(b))
                        .then(b.last.cmp(&a.last))
                })
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
    }

    /// Clients tracked now (all shards).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::RateKey;

    fn limiter(rate: f64, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(&RateLimit {
            rate,
            per: Duration::from_secs(1),
            burst,
            key: RateKey::ClientIp,
            max_clients,
        })
    }

    #[test]
    fn burst_then_refill() {
        let l = limiter(2.0, 3, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(b"a", t0).is_ok());
        }
        let wait = l.check(b"a", t0).expect_err("limited");
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        // Another client is not affected.
        assert!(l.check(b"b", t0).is_ok());
        // After 0.5 s one token is back, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check(b"a", t1).is_ok());
        assert!(l.check(b"a", t1).is_err());
        // After a long pause the bucket is full again, but no fuller than burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.check(b"a", t2).is_ok());
        }
        assert!(l.check(b"a", t2).is_err());
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_clients() {
        let l = limiter(1.0, 1, 256);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let _ = l.check(&i.to_be_bytes(), t0);
        }
        assert!(l.tracked() <= 256, "{} tracked", l.tracked());
    }

    #[test]
    fn an_active_client_stays_limited_during_a_flood() {
        // Each flooding address spends one token of a fresh bucket and keeps
        // burst-1 >= 1; the limited client has less than one, so it is never the
        // bucket evicted.
        let l = limiter(1.0, 2, 64);
        let t0 = Instant::now();
        assert!(l.check(b"hot", t0).is_ok());
        assert!(l.check(b"hot", t0).is_ok());
        for i in 0..1000u32 {
            let _ = l.check(&i.to_be_bytes(), t0);
            // The hot client keeps asking; it must stay limited while the flood evicts others.
            if i % 10 == 0 {
                assert!(
                    l.check(b"hot", t0).is_err(),
                    "hot client escaped its limit at {i}"
                );
            }
        }
    }
}
