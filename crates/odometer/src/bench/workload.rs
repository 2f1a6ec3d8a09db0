//! The standard workload of `spec/performance.md`, generated deterministically from a seed:
//! Zipf-skewed customers, three event codes, about two months of mostly ordered timestamps
//! with 1% late arrivals, and 0.5% re-sent duplicates. Any batch can be generated on its own,
//! so concurrent senders never hold the whole workload in memory.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

pub const CODES: [&str; 3] = ["api_calls", "storage_gb", "seats"];
pub const REGIONS: [&str; 4] = ["eu-west", "us-east", "us-west", "ap-south"];
const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
const USERS: u64 = 100_000;
/// The Zipf exponent that gives the largest of 10,000 customers about 3% of the events.
const ZIPF_EXPONENT: f64 = 0.77;
const SPAN_DAYS: i64 = 60;

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    pub events: u64,
    pub customers: usize,
    pub seed: u64,
    /// Cumulative customer weights, for sampling by binary search.
    cumulative: Vec<f64>,
}

impl Workload {
    pub fn new(events: u64, customers: usize, seed: u64) -> Self {
        let mut cumulative = Vec::with_capacity(customers);
        let mut total = 0.0;
        for rank in 0..customers {
            total += 1.0 / ((rank + 1) as f64).powf(ZIPF_EXPONENT);
            cumulative.push(total);
        }
        for weight in &mut cumulative {
            *weight /= total;
        }
        Self { events, customers, seed, cumulative }
    }

    /// The external id of the customer of a rank (0 is the largest).
    pub fn customer(rank: usize) -> String {
        format!("cust-{rank:05}")
    }

    pub fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default()
    }

    fn pick_customer(&self, rng: &mut StdRng) -> usize {
        let x: f64 = rng.random();
        self.cumulative.partition_point(|w| *w < x).min(self.customers - 1)
    }

    /// Event number `n` (0-based): the same for every run with the same seed.
    pub fn event(&self, n: u64) -> Value {
        let mut rng = StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let customer = self.pick_customer(&mut rng);
        let code = CODES[rng.random_range(0..CODES.len())];
        let span_micros = SPAN_DAYS * 86_400_000_000;
        let mut offset = (n as i128 * span_micros as i128 / self.events.max(1) as i128) as i64;
        if rng.random_bool(0.01) {
            // Late: hours to days behind the stream.
            offset -= rng.random_range(3_600_000_000..3 * 86_400_000_000);
        }
        let timestamp = Self::start() + TimeDelta::microseconds(offset.max(0));
        let cents: u32 = rng.random_range(0..100_000);
        json!({
            "transaction_id": format!("tx-{n}"),
            "code": code,
            "customer": Self::customer(customer),
            "timestamp": timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "properties": {
                "region": REGIONS[rng.random_range(0..REGIONS.len())],
                "tier": TIERS[rng.random_range(0..TIERS.len())],
                "value": format!("{}.{:02}", cents / 100, cents % 100),
                "user_id": format!("user-{}", rng.random_range(0..USERS)),
            }
        })
    }

    /// Batch `b` of `size` events: new events, with 0.5% of them followed by a re-sent copy
    /// of an earlier event (a duplicate the server must answer as such).
    pub fn batch(&self, b: u64, size: u64) -> Vec<Value> {
        let first = b * size;
        let last = (first + size).min(self.events);
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(b));
        let mut out = Vec::with_capacity((last - first) as usize + 8);
        for n in first..last {
            out.push(self.event(n));
            if n > 0 && rng.random_bool(0.005) {
                out.push(self.event(rng.random_range(0..n.min(first.max(1)))));
            }
        }
        out
    }

    pub fn batches(&self, size: u64) -> u64 {
        self.events.div_ceil(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_deterministic_and_skewed() {
        let w = Workload::new(100_000, 10_000, 7);
        assert_eq!(w.event(42), Workload::new(100_000, 10_000, 7).event(42));
        assert_ne!(w.event(42), w.event(43));
        let mut counts = vec![0u32; 10_000];
        for n in 0..100_000 {
            let c = w.event(n)["customer"]
                .as_str()
                .map(|s| s[5..].parse::<usize>().unwrap_or(0))
                .unwrap_or(0);
            counts[c] += 1;
        }
        let largest = f64::from(counts[0]) / 100_000.0;
        assert!((0.02..0.045).contains(&largest), "largest customer share {largest}");
        assert!(counts[0] > counts[100] && counts[100] > counts[5_000]);
    }

    #[test]
    fn batches_cover_every_event_once_plus_some_duplicates() {
        let w = Workload::new(10_000, 100, 1);
        let mut ids = std::collections::HashSet::new();
        let mut sent = 0;
        for b in 0..w.batches(1000) {
            for e in w.batch(b, 1000) {
                sent += 1;
                ids.insert(e["transaction_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert_eq!(ids.len(), 10_000);
        assert!(sent > 10_000 && sent < 10_200, "{sent}");
    }
}
