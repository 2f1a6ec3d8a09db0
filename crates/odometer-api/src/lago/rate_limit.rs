//! Lago's rate-limit contract: every answer carries `x-ratelimit-limit`,
//! `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds until the bucket is full again),
//! and a request over the limit is a 429 with Lago's JSON envelope (the client then waits
//! `x-ratelimit-reset` seconds and retries). One token bucket per API key (per `Authorization`
//! header), in memory: generous by default, it protects the server from a runaway loop, not
//! a quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::LagoError;

/// Buckets kept before the idle ones are forgotten (a full bucket is the same as none).
const MAX_BUCKETS: usize = 10_000;

/// Token buckets per key: `capacity` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What one request was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Whole seconds until the bucket is full again.
    pub reset: u64,
}

impl Default for RateLimiter {
    /// 1,000 requests at once, 200 more per second.
    fn default() -> Self {
        Self::new(1000, 200.0)
    }
}

impl RateLimiter {
    pub fn new(capacity: u64, per_second: f64) -> Self {
        Self { capacity: capacity as f64, per_second, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key`'s bucket at `now`, if there is one.
    pub fn check(&self, key: &str, now: Instant) -> Decision {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (capacity, rate) = (self.capacity, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < capacity
            });
        }
        let bucket =
            buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.capacity, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.at = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing = self.capacity - bucket.tokens;
        Decision {
            allowed,
            limit: self.capacity as u64,
            remaining: bucket.tokens.floor() as u64,
            reset: (missing / self.per_second).ceil() as u64,
        }
    }
}

/// The middleware: decide, answer 429 or run the request, then write the headers.
pub async fn limit(limiter: Arc<RateLimiter>, request: Request, next: Next) -> Response {
    limit_with(limiter, request, next, || LagoError::too_many_requests().into_response()).await
}

/// [`limit`] with the 429 of another surface (the native API uses it with its envelope).
/// Refused requests also carry `retry-after`.
pub async fn limit_with(
    limiter: Arc<RateLimiter>,
    request: Request,
    next: Next,
    too_many: impl FnOnce() -> Response,
) -> Response {
    let key =
        request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let decision = limiter.check(&key, Instant::now());
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        let mut refused = too_many();
        refused.headers_mut().insert("retry-after", HeaderValue::from(decision.reset.max(1)));
        refused
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", decision.limit),
        ("x-ratelimit-remaining", decision.remaining),
        ("x-ratelimit-reset", decision.reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_is_per_key() {
        let limiter = RateLimiter::new(2, 1.0);
        let t0 = Instant::now();
        let first = limiter.check("a", t0);
        assert_eq!(first, Decision { allowed: true, limit: 2, remaining: 1, reset: 1 });
        assert_eq!(limiter.check("a", t0).remaining, 0);
        let refused = limiter.check("a", t0);
        assert_eq!(refused, Decision { allowed: false, limit: 2, remaining: 0, reset: 2 });
        assert!(limiter.check("b", t0).allowed, "another key has its own bucket");
        let later = limiter.check("a", t0 + Duration::from_millis(1500));
        assert_eq!(later, Decision { allowed: true, limit: 2, remaining: 0, reset: 2 });
        let full = limiter.check("a", t0 + Duration::from_secs(60));
        assert_eq!(full.remaining, 1, "a bucket never holds more than its capacity");
    }
}
