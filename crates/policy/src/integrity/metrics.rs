//! Integrity and response inspection metrics. The gateway registers them in its registry
//! (prefix `apiguard_`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct IntegrityMetrics {
    /// Requests refused by the integrity stage, by route and reason (`bad_signature`,
    /// `replayed`, `digest_mismatch`, ...).
    pub failures: IntCounterVec,
    /// Signatures verified, by route and algorithm (`ed25519`, `hmac-sha256`).
    pub verified: IntCounterVec,
    /// Replay cache entries forgotten before their time because the cache was full.
    pub replay_evictions: IntCounter,
    /// Signatures and nonces the replay cache remembers.
    pub replay_entries: IntGauge,
    /// Sensitive data found in responses, by route, detector and action (`detected`,
    /// `masked`).
    pub response_findings: IntCounterVec,
    /// Responses of an inspected route that passed unchecked, by route and reason
    /// (`too_large`, `encoded`, `timeout`).
    pub response_skipped: IntCounterVec,
}

impl IntegrityMetrics {
    pub fn new() -> Self {
        IntegrityMetrics {
            failures: IntCounterVec::new(
                Opts::new(
                    "integrity_failures_total",
                    "Requests refused by signature or Content-Digest checks, by route and reason",
                ),
                &["route", "reason"],
            )
            .expect("valid metric"),
            verified: IntCounterVec::new(
                Opts::new(
                    "signatures_verified_total",
                    "HTTP message signatures verified, by route and algorithm",
                ),
                &["route", "algorithm"],
            )
            .expect("valid metric"),
            replay_evictions: IntCounter::new(
                "signature_replay_evictions_total",
                "Replay cache entries forgotten early because the cache was full (raise signatures.replay_cache_size)",
            )
            .expect("valid metric"),
            replay_entries: IntGauge::new(
                "signature_replay_entries",
                "Signatures and nonces the replay cache remembers",
            )
            .expect("valid metric"),
            response_findings: IntCounterVec::new(
                Opts::new(
                    "response_findings_total",
                    "Sensitive data found in responses, by route, detector and action (detected, masked)",
                ),
                &["route", "detector", "action"],
            )
            .expect("valid metric"),
            response_skipped: IntCounterVec::new(
                Opts::new(
                    "response_inspection_skipped_total",
                    "Responses of inspected routes that passed unchecked, by route and reason (too_large, encoded, timeout)",
                ),
                &["route", "reason"],
            )
            .expect("valid metric"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.failures.clone()))?;
        registry.register(Box::new(self.verified.clone()))?;
        registry.register(Box::new(self.replay_evictions.clone()))?;
        registry.register(Box::new(self.replay_entries.clone()))?;
        registry.register(Box::new(self.response_findings.clone()))?;
        registry.register(Box::new(self.response_skipped.clone()))?;
        Ok(())
    }
}

impl Default for IntegrityMetrics {
    fn default() -> Self {
        Self::new()
    }
}
