//! A GraphQL cost budget per identity (or per client address for anonymous requests): a token
//! bucket of `capacity` cost units refilled evenly over `window`. A request spends its static
//! cost; one that costs more than what is left is refused until enough has refilled.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::ratelimit::LimitKey;

/// One budget's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Cost units a key may spend in `window` (and at once, on a full bucket).
    pub capacity: u64,
    pub window: Duration,
    /// Keys tracked at most; past it, new keys share one bucket until idle ones refill.
    pub max_keys: usize,
}

/// The budgets of one route, kept across configuration reloads while the settings stay.
#[derive(Debug)]
pub struct CostBudget {
    pub settings: BudgetSettings,
    buckets: DashMap<LimitKey, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    available: f64,
    at: Instant,
}

/// The answer to one spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spend {
    /// Spent; this much is left.
    Allowed { remaining: u64 },
    /// Not enough left: retry after this long (when the bucket holds the cost again).
    Refused { retry_after: Duration },
}

impl CostBudget {
    pub fn new(settings: BudgetSettings) -> Self {
        CostBudget {
            settings,
            buckets: DashMap::new(),
        }
    }

    /// Cost units refilled per second.
    fn rate(&self) -> f64 {
        self.settings.capacity as f64 / self.settings.window.as_secs_f64().max(1e-9)
    }

    pub fn spend(&self, key: &LimitKey, cost: u64) -> Spend {
        self.spend_at(key, cost, Instant::now())
    }

    /// [`CostBudget::spend`] at a given instant (for tests).
    pub fn spend_at(&self, key: &LimitKey, cost: u64, now: Instant) -> Spend {
        let capacity = self.settings.capacity as f64;
        let rate = self.rate();
        if cost > self.settings.capacity {
            return Spend::Refused {
                retry_after: self.settings.window,
            };
        }
        let key = if self.buckets.contains_key(key) || self.make_room(now) {
            key.clone()
        } else {
            LimitKey::Overflow
        };
        let mut bucket = self.buckets.entry(key).or_insert(Bucket {
            available: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        let available = (bucket.available + elapsed * rate).min(capacity);
        bucket.at = now.max(bucket.at);
        let cost = cost as f64;
        if available + 1e-9 >= cost {
            bucket.available = (available - cost).max(0.0);
            Spend::Allowed {
                remaining: bucket.available.floor() as u64,
            }
        } else {
            bucket.available = available;
            Spend::Refused {
                retry_after: Duration::from_secs_f64(((cost - available) / rate).max(0.001)),
            }
        }
    }

    /// Whether a new key may be tracked; when at `max_keys`, forgets the keys whose bucket
    /// has refilled (they are as good as new).
    fn make_room(&self, now: Instant) -> bool {
        if self.buckets.len() < self.settings.max_keys {
            return true;
        }
        let capacity = self.settings.capacity as f64;
        let rate = self.rate();
        self.buckets.retain(|_, b| {
            b.available + now.saturating_duration_since(b.at).as_secs_f64() * rate < capacity
        });
        self.buckets.len() < self.settings.max_keys
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use apiguard_model::AuthMethod;

    use super::*;

    fn key(name: &str) -> LimitKey {
        LimitKey::Subject(AuthMethod::ApiKey, name.into())
    }

    #[test]
    fn spends_refuses_and_refills_per_key() {
        let budget = CostBudget::new(BudgetSettings {
            capacity: 100,
            window: Duration::from_secs(100),
            max_keys: 10,
        });
        let t0 = Instant::now();
        assert_eq!(
            budget.spend_at(&key("a"), 60, t0),
            Spend::Allowed { remaining: 40 }
        );
        let Spend::Refused { retry_after } = budget.spend_at(&key("a"), 60, t0) else {
            panic!("the second spend must be refused");
        };
        assert_eq!(retry_after.as_secs(), 20);
        // Another key has its own budget.
        assert!(matches!(
            budget.spend_at(&key("b"), 100, t0),
            Spend::Allowed { remaining: 0 }
        ));
        // 20 s refill 20 units: 40 + 20 = 60.
        assert!(matches!(
            budget.spend_at(&key("a"), 60, t0 + Duration::from_secs(20)),
            Spend::Allowed { remaining: 0 }
        ));
        assert!(matches!(
            budget.spend_at(&key("c"), 101, t0),
            Spend::Refused { .. }
        ));
    }

    #[test]
    fn new_keys_share_a_bucket_when_full_until_old_ones_refill() {
        let budget = CostBudget::new(BudgetSettings {
            capacity: 10,
            window: Duration::from_secs(10),
            max_keys: 2,
        });
        let t0 = Instant::now();
        budget.spend_at(&key("a"), 10, t0);
        budget.spend_at(&key("b"), 10, t0);
        // "c" lands in the overflow bucket, which "d" then shares.
        assert!(matches!(
            budget.spend_at(&key("c"), 10, t0),
            Spend::Allowed { .. }
        ));
        assert!(matches!(
            budget.spend_at(&key("d"), 1, t0),
            Spend::Refused { .. }
        ));
        // After a full refill the old keys are forgotten and new ones tracked again.
        let later = t0 + Duration::from_secs(11);
        assert!(matches!(
            budget.spend_at(&key("e"), 10, later),
            Spend::Allowed { .. }
        ));
        assert!(budget.tracked_keys() <= 2);
    }
}
