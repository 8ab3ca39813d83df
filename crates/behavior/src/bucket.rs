//! Leaky buckets, as CrowdSec's scenarios use them: each event pours one unit, the bucket
//! leaks one unit every `leak`, and it overflows when its level passes its capacity. A distinct
//! bucket pours only values it has not seen recently (many distinct 404s, many distinct ids).

use serde::{Deserialize, Serialize};

/// A bucket's parameters (kept in the route's settings, so a reload changes them at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketParams {
    /// Overflow when the level passes this.
    pub capacity: u32,
    /// Milliseconds for one unit to leak out.
    pub leak_ms: u64,
}

/// A plain leaky bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    level: f64,
    last_ms: u64,
}

impl Bucket {
    fn drain(&mut self, now_ms: u64, params: BucketParams) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let leaked = elapsed as f64 / params.leak_ms.max(1) as f64;
        self.level = (self.level - leaked).max(0.0);
        self.last_ms = now_ms.max(self.last_ms);
    }

    /// Pours one unit; returns the level after it.
    pub fn pour(&mut self, now_ms: u64, params: BucketParams) -> f64 {
        self.drain(now_ms, params);
        // Never more than twice the capacity: an attacker's bucket drains in bounded time.
        self.level = (self.level + 1.0).min(2.0 * params.capacity as f64 + 1.0);
        self.level
    }

    /// The level now, without pouring.
    pub fn level(&self, now_ms: u64, params: BucketParams) -> f64 {
        let mut copy = self.clone();
        copy.drain(now_ms, params);
        copy.level
    }

    pub fn overflowing(&self, now_ms: u64, params: BucketParams) -> bool {
        self.level(now_ms, params) > params.capacity as f64
    }
}

/// A leaky bucket that only counts values it has not seen among its recent ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DistinctBucket {
    bucket: Bucket,
    /// Hashes of recent values, oldest first; at most `2 × capacity` (and 1024).
    recent: std::collections::VecDeque<u64>,
}

impl DistinctBucket {
    /// Pours `value_hash` if it is new; returns whether it was new.
    pub fn pour(&mut self, value_hash: u64, now_ms: u64, params: BucketParams) -> bool {
        if self.recent.contains(&value_hash) {
            self.bucket.drain(now_ms, params);
            return false;
        }
        let keep = (2 * params.capacity as usize).clamp(1, 1024);
        while self.recent.len() >= keep {
            self.recent.pop_front();
        }
        self.recent.push_back(value_hash);
        self.bucket.pour(now_ms, params);
        true
    }

    pub fn level(&self, now_ms: u64, params: BucketParams) -> f64 {
        self.bucket.level(now_ms, params)
    }

    pub fn overflowing(&self, now_ms: u64, params: BucketParams) -> bool {
        self.bucket.overflowing(now_ms, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BucketParams = BucketParams {
        capacity: 5,
        leak_ms: 1000,
    };

    #[test]
    fn a_burst_overflows_and_leaks_away() {
        let mut b = Bucket::default();
        for _ in 0..5 {
            b.pour(0, P);
        }
        assert!(!b.overflowing(0, P));
        b.pour(0, P);
        assert!(b.overflowing(0, P));
        assert!(!b.overflowing(2000, P), "two units leaked in two seconds");
        // A slow steady stream never overflows.
        let mut slow = Bucket::default();
        assert!((0..100).all(|i| slow.pour(i * 1000, P) <= 5.0));
    }

    #[test]
    fn only_new_values_fill_a_distinct_bucket() {
        let mut b = DistinctBucket::default();
        for _ in 0..50 {
            b.pour(7, 0, P);
        }
        assert!(!b.overflowing(0, P), "one value repeated is not a walk");
        for v in 0..6 {
            b.pour(100 + v, 0, P);
        }
        assert!(b.overflowing(0, P));
        assert!(b.level(0, P) <= 11.0);
    }
}
