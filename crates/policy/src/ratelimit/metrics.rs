//! Rate-limit metrics. The gateway registers them in its registry (prefix `apiguard_`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct RateLimitMetrics {
    /// 429 answers by route and limit name.
    pub refusals: IntCounterVec,
    /// 1 while the Redis cluster sync works; 0 when Redis is unreachable (limits are then
    /// local to each replica) or not configured.
    pub redis_up: IntGauge,
    /// Failed Redis syncs (connection refused, timeout, error reply).
    pub redis_errors: IntCounter,
    /// Successful Redis syncs.
    pub redis_syncs: IntCounter,
}

impl RateLimitMetrics {
    pub fn new() -> Self {
        RateLimitMetrics {
            refusals: IntCounterVec::new(
                Opts::new(
                    "ratelimit_refusals_total",
                    "Requests refused with 429 by route and limit",
                ),
                &["route", "limit"],
            )
            .expect("valid metric"),
            redis_up: IntGauge::new(
                "ratelimit_redis_up",
                "1 while rate-limit counters are shared through Redis; 0 when Redis is unreachable (local limits only) or not configured",
            )
            .expect("valid metric"),
            redis_errors: IntCounter::new(
                "ratelimit_redis_errors_total",
                "Failed rate-limit syncs with Redis",
            )
            .expect("valid metric"),
            redis_syncs: IntCounter::new(
                "ratelimit_redis_syncs_total",
                "Successful rate-limit syncs with Redis",
            )
            .expect("valid metric"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.refusals.clone()))?;
        registry.register(Box::new(self.redis_up.clone()))?;
        registry.register(Box::new(self.redis_errors.clone()))?;
        registry.register(Box::new(self.redis_syncs.clone()))?;
        Ok(())
    }
}

impl Default for RateLimitMetrics {
    fn default() -> Self {
        Self::new()
    }
}
