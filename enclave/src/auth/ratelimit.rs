//! Per-tenant request-rate limits: a token bucket per tenant (and one for the
//! operator), refilled continuously; an empty bucket is `ThrottlingException`.

use std::collections::HashMap;
use std::sync::Mutex;

/// Bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: the burst allowed after a quiet period.
    pub burst: f64,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, (f64, f64)>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `tenant`'s bucket at time `now` (seconds, any
    /// monotonic origin). `false` when the bucket is empty.
    pub fn allow(&self, tenant: &str, now: f64) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(tenant.to_owned()).or_insert((self.limit.burst, now));
        let elapsed = (now - *last).max(0.0);
        *tokens = (*tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_tenant() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        assert!((0..3).all(|_| limiter.allow("a", 0.0)));
        assert!(!limiter.allow("a", 0.0));
        assert!(limiter.allow("b", 0.0), "tenants have separate buckets");
        assert!(limiter.allow("a", 0.5), "half a second refills one token");
        assert!(!limiter.allow("a", 0.5));
        assert!(
            (0..3).all(|_| limiter.allow("a", 100.0)),
            "refill is capped at the burst"
        );
        assert!(!limiter.allow("a", 100.0));
    }
}
