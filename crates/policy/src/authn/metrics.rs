//! Authentication metrics. The gateway registers them in its registry (prefix `apiguard_`).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct AuthnMetrics {
    /// Refused requests by route and reason (`expired`, `bad_signature`, ...).
    pub failures: IntCounterVec,
    /// Continuous verification: context changes by kind (`new_network`, `new_country`,
    /// `risk`) and the action taken (`allow`, `challenge`, `revoke`).
    pub context_changes: IntCounterVec,
    /// JWKS fetches by provider and result (`ok`, `error`).
    pub jwks_refreshes: IntCounterVec,
    /// Keys in each provider's current JWKS key set.
    pub jwks_keys: IntGaugeVec,
}

impl AuthnMetrics {
    pub fn new() -> Self {
        AuthnMetrics {
            failures: IntCounterVec::new(
                Opts::new(
                    "auth_failures_total",
                    "Requests refused by authentication, by route and reason",
                ),
                &["route", "reason"],
            )
            .expect("valid metric"),
            context_changes: IntCounterVec::new(
                Opts::new(
                    "auth_context_changes_total",
                    "Credentials used from a different context (continuous verification), by change and action",
                ),
                &["change", "action"],
            )
            .expect("valid metric"),
            jwks_refreshes: IntCounterVec::new(
                Opts::new(
                    "jwks_refreshes_total",
                    "JWKS fetches by provider and result (ok, error)",
                ),
                &["provider", "result"],
            )
            .expect("valid metric"),
            jwks_keys: IntGaugeVec::new(
                Opts::new("jwks_keys", "Keys in each provider's current JWKS key set"),
                &["provider"],
            )
            .expect("valid metric"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.failures.clone()))?;
        registry.register(Box::new(self.context_changes.clone()))?;
        registry.register(Box::new(self.jwks_refreshes.clone()))?;
        registry.register(Box::new(self.jwks_keys.clone()))?;
        Ok(())
    }
}

impl Default for AuthnMetrics {
    fn default() -> Self {
        Self::new()
    }
}
