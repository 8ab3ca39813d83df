//! Continuous verification: a credential (one token, one API key, one certificate subject)
//! keeps the context it was first seen in — its network and, with an IP database, its
//! country — and a risk level fed by the anomaly scores of its requests. A request that
//! changes the network or country, or comes while the risk is high, is allowed (and counted),
//! challenged (401 now; the credential stays usable from its first context), or revokes the
//! credential for a while, as configured.
//!
//! State is per gateway process (not shared between replicas) and bounded.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiguard_model::event::now_ms;
use apiguard_model::{AuthMethod, Identity};
use arc_swap::ArcSwapOption;

use super::Failure;
use super::ipdb::IpDatabase;
use super::metrics::AuthnMetrics;

/// What a context change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextAction {
    /// Let it through, count it, and make the new context the credential's context.
    Allow,
    /// Answer 401 with a step-up challenge; the credential keeps working from its context.
    Challenge,
    /// Answer 401 and refuse the credential everywhere for `revoke_for`.
    Revoke,
}

impl ContextAction {
    fn as_str(self) -> &'static str {
        match self {
            ContextAction::Allow => "allow",
            ContextAction::Challenge => "challenge",
            ContextAction::Revoke => "revoke",
        }
    }
}

/// Continuous verification settings (`auth.continuous`).
#[derive(Clone)]
pub struct ContinuousSettings {
    pub ip_database: Option<Arc<IpDatabase>>,
    /// IPv4 addresses in the same prefix of this length are the same network.
    pub prefix_v4: u8,
    /// IPv6 addresses in the same prefix of this length are the same network.
    pub prefix_v6: u8,
    pub on_new_network: ContextAction,
    pub on_new_country: ContextAction,
    /// The credential's risk (decaying sum of its requests' scores) at which `on_risk` applies;
    /// 0 turns the risk check off.
    pub risk_threshold: u32,
    pub risk_half_life: Duration,
    pub on_risk: ContextAction,
    pub revoke_for: Duration,
    /// A credential unused for this long is forgotten (its next use starts a new context).
    pub idle_timeout: Duration,
    /// Credentials tracked at most (across all shards).
    pub max_credentials: usize,
}

impl Default for ContinuousSettings {
    fn default() -> Self {
        ContinuousSettings {
            ip_database: None,
            prefix_v4: 24,
            prefix_v6: 48,
            on_new_network: ContextAction::Allow,
            on_new_country: ContextAction::Challenge,
            risk_threshold: 20,
            risk_half_life: Duration::from_secs(600),
            on_risk: ContextAction::Challenge,
            revoke_for: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(24 * 3600),
            max_credentials: 100_000,
        }
    }
}

struct Seen {
    network: u128,
    country: Option<[u8; 2]>,
    risk: f64,
    risk_at_ms: u64,
    last_ms: u64,
    revoked_until_ms: u64,
}

const SHARDS: usize = 16;

/// Per-credential context, shared by every route that turns continuous verification on.
pub struct Continuous {
    settings: ArcSwapOption<ContinuousSettings>,
    shards: Vec<Mutex<HashMap<u64, Seen>>>,
    metrics: AuthnMetrics,
}

/// A stable key for the credential behind an identity: the token (subject plus `jti`, or
/// `iat` when there is no `jti`), the API key's name, the certificate's subject.
pub fn credential_key(identity: &Identity) -> u64 {
    let mut hasher = DefaultHasher::new();
    identity.method.hash(&mut hasher);
    identity.subject.hash(&mut hasher);
    if identity.method == AuthMethod::Jwt {
        let id = identity
            .claims
            .get("jti")
            .or_else(|| identity.claims.get("iat"));
        if let Some(id) = id {
            id.to_string().hash(&mut hasher);
        }
    }
    hasher.finish()
}

fn network(ip: IpAddr, settings: &ContinuousSettings) -> u128 {
    let (bits, len) = match ip.to_canonical() {
        IpAddr::V4(v4) => (
            u128::from(v4.to_ipv6_mapped()),
            96 + u32::from(settings.prefix_v4.min(32)),
        ),
        IpAddr::V6(v6) => (u128::from(v6), u32::from(settings.prefix_v6.min(128))),
    };
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - len))
    }
}

fn decayed(risk: f64, since_ms: u64, now_ms: u64, half_life: Duration) -> f64 {
    let half_life_ms = half_life.as_millis().max(1) as f64;
    let elapsed = now_ms.saturating_sub(since_ms) as f64;
    risk * 0.5f64.powf(elapsed / half_life_ms)
}

impl Continuous {
    pub fn new(metrics: AuthnMetrics) -> Self {
        Continuous {
            settings: ArcSwapOption::empty(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            metrics,
        }
    }

    /// Applies new settings (at start and on reload); tracked credentials are kept.
    pub fn configure(&self, settings: Option<ContinuousSettings>) {
        self.settings.store(settings.map(Arc::new));
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Seen>> {
        self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a freshly verified identity used from `ip`, with `score` the request's anomaly
    /// score so far.
    pub fn check(&self, identity: &Identity, ip: IpAddr, score: u32) -> Result<(), Failure> {
        self.check_at(identity, ip, score, now_ms())
    }

    pub fn check_at(
        &self,
        identity: &Identity,
        ip: IpAddr,
        score: u32,
        now: u64,
    ) -> Result<(), Failure> {
        let Some(settings) = self.settings.load_full() else {
            return Ok(());
        };
        let key = credential_key(identity);
        let network = network(ip, &settings);
        let country = settings.ip_database.as_ref().and_then(|db| db.country(ip));
        let idle_ms = settings.idle_timeout.as_millis() as u64;
        let mut shard = self.shard(key);
        let fresh = |seen: &mut Seen| {
            *seen = Seen {
                network,
                country,
                risk: 0.0,
                risk_at_ms: now,
                last_ms: now,
                revoked_until_ms: 0,
            }
        };
        let Some(seen) = shard.get_mut(&key) else {
            let per_shard = (settings.max_credentials / SHARDS).max(1);
            if shard.len() >= per_shard {
                shard.retain(|_, s| {
                    now.saturating_sub(s.last_ms) < idle_ms || s.revoked_until_ms > now
                });
            }
            if shard.len() < per_shard {
                shard.insert(
                    key,
                    Seen {
                        network,
                        country,
                        risk: 0.0,
                        risk_at_ms: now,
                        last_ms: now,
                        revoked_until_ms: 0,
                    },
                );
            }
            return Ok(());
        };
        if seen.revoked_until_ms > now {
            return Err(Failure::Revoked);
        }
        if now.saturating_sub(seen.last_ms) >= idle_ms {
            fresh(seen);
            return Ok(());
        }
        seen.last_ms = now;
        let risk =
            decayed(seen.risk, seen.risk_at_ms, now, settings.risk_half_life) + f64::from(score);
        // Rounded: a score of 5 a moment ago is still a risk of 5, not 4.9999.
        let change =
            if settings.risk_threshold > 0 && risk.round() >= f64::from(settings.risk_threshold) {
                Some((Failure::Risk, settings.on_risk))
            } else if country.is_some() && seen.country.is_some() && country != seen.country {
                Some((Failure::NewCountry, settings.on_new_country))
            } else if network != seen.network {
                Some((Failure::NewNetwork, settings.on_new_network))
            } else {
                None
            };
        let Some((failure, action)) = change else {
            return Ok(());
        };
        self.metrics
            .context_changes
            .with_label_values(&[failure.as_str(), action.as_str()])
            .inc();
        tracing::info!(target: "apiguard::security", subject = %identity.subject, method = ?identity.method, change = failure.as_str(), action = action.as_str(), client = %ip, "credential used from a different context");
        match action {
            ContextAction::Allow => {
                seen.network = network;
                if country.is_some() {
                    seen.country = country;
                }
                Ok(())
            }
            ContextAction::Challenge => Err(failure),
            ContextAction::Revoke => {
                seen.revoked_until_ms = now.saturating_add(settings.revoke_for.as_millis() as u64);
                Err(failure)
            }
        }
    }

    /// Feeds a request's final anomaly score into its credential's risk.
    pub fn observe(&self, identity: &Identity, score: u32) {
        self.observe_at(identity, score, now_ms());
    }

    pub fn observe_at(&self, identity: &Identity, score: u32, now: u64) {
        if score == 0 {
            return;
        }
        let Some(settings) = self.settings.load_full() else {
            return;
        };
        let key = credential_key(identity);
        if let Some(seen) = self.shard(key).get_mut(&key) {
            seen.risk = decayed(seen.risk, seen.risk_at_ms, now, settings.risk_half_life)
                + f64::from(score);
            seen.risk_at_ms = now;
        }
    }

    /// Credentials tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
