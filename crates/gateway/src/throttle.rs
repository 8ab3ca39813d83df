//! Throttles set by self-healing: a request rate limit on a client (address or prefix), on an
//! authenticated identity or on a whole route, each with an expiry. Address and route
//! throttles are checked by the first enforcement stage, identity throttles by the identity
//! enforcement stage (the first that knows the identity); an empty table costs one atomic
//! load, an identity one hash probe. Each throttle is a GCRA cell updated with compare-and-swap, so admitting
//! a request takes no lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use apiguard_heal::Net;
use arc_swap::ArcSwap;
use serde::Serialize;

/// What a throttle covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "scope", content = "key", rename_all = "snake_case")]
pub enum ThrottleScope {
    Client(Net),
    /// An authenticated subject, from any address.
    Identity(String),
    Route(String),
}

impl std::fmt::Display for ThrottleScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThrottleScope::Client(net) => write!(f, "client {net}"),
            ThrottleScope::Identity(subject) => write!(f, "identity `{subject}`"),
            ThrottleScope::Route(id) => write!(f, "route `{id}`"),
        }
    }
}

/// One throttle.
#[derive(Debug, Serialize)]
pub struct Throttle {
    pub scope: ThrottleScope,
    pub rate_per_s: f64,
    /// Milliseconds since the Unix epoch after which it no longer applies.
    pub until_ms: u64,
    pub reason: String,
    /// Emission interval and burst tolerance, in nanoseconds.
    #[serde(skip)]
    interval_ns: u64,
    #[serde(skip)]
    tolerance_ns: u64,
    /// Theoretical arrival time of the next request (nanoseconds since the process epoch).
    #[serde(skip)]
    tat: AtomicU64,
}

fn clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Throttle {
    /// A throttle of `rate_per_s` with a burst of one second's worth (at least one request).
    pub fn new(scope: ThrottleScope, rate_per_s: f64, until_ms: u64, reason: String) -> Throttle {
        let rate = if rate_per_s.is_finite() && rate_per_s > 0.0 {
            rate_per_s
        } else {
            1.0
        };
        let interval_ns = (1e9 / rate) as u64;
        let burst = rate.max(1.0);
        Throttle {
            scope,
            rate_per_s: rate,
            until_ms,
            reason,
            interval_ns: interval_ns.max(1),
            tolerance_ns: (interval_ns as f64 * (burst - 1.0)) as u64,
            tat: AtomicU64::new(0),
        }
    }

    /// `Ok` when the request fits, else the milliseconds until one would.
    pub fn admit(&self) -> Result<(), u64> {
        let now = clock_ns();
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance_ns {
                return Err((start - now - self.tolerance_ns).div_ceil(1_000_000));
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

#[derive(Default)]
struct Table {
    clients: Vec<Arc<Throttle>>,
    identities: HashMap<String, Arc<Throttle>>,
    routes: HashMap<String, Arc<Throttle>>,
}

/// Every throttle; they outlive configuration reloads.
#[derive(Default)]
pub struct Throttles {
    table: ArcSwap<Table>,
    all: Mutex<HashMap<ThrottleScope, Arc<Throttle>>>,
}

impl Throttles {
    /// The throttle that refuses this request now, with the milliseconds to wait.
    pub fn check(
        &self,
        client: IpAddr,
        route: &str,
        now_ms: impl Fn() -> u64,
    ) -> Option<(Arc<Throttle>, u64)> {
        let table = self.table.load();
        if table.clients.is_empty() && table.routes.is_empty() {
            return None;
        }
        let now = now_ms();
        let applies = |t: &&Arc<Throttle>| t.until_ms > now;
        let candidates = table
            .clients
            .iter()
            .filter(|t| matches!(&t.scope, ThrottleScope::Client(net) if net.contains(client)))
            .chain(table.routes.get(route))
            .filter(applies);
        for throttle in candidates {
            if let Err(wait) = throttle.admit() {
                return Some((throttle.clone(), wait));
            }
        }
        None
    }

    /// The identity throttle that refuses a request of `subject` now, with the milliseconds
    /// to wait.
    pub fn check_identity(
        &self,
        subject: &str,
        now_ms: impl Fn() -> u64,
    ) -> Option<(Arc<Throttle>, u64)> {
        let table = self.table.load();
        let throttle = table.identities.get(subject)?;
        if throttle.until_ms <= now_ms() {
            return None;
        }
        let wait = throttle.admit().err()?;
        Some((throttle.clone(), wait))
    }

    /// Adds or replaces the throttle on its scope.
    pub fn insert(&self, throttle: Throttle) {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(throttle.scope.clone(), Arc::new(throttle));
        self.publish(&all);
    }

    /// Removes the throttle on `scope`; whether there was one.
    pub fn remove(&self, scope: &ThrottleScope) -> bool {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let removed = all.remove(scope).is_some();
        if removed {
            self.publish(&all);
        }
        removed
    }

    /// Drops expired throttles; how many.
    pub fn purge_expired(&self, now_ms: u64) -> usize {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let before = all.len();
        all.retain(|_, t| t.until_ms > now_ms);
        let purged = before - all.len();
        if purged > 0 {
            self.publish(&all);
        }
        purged
    }

    /// Every throttle in effect.
    pub fn list(&self) -> Vec<Arc<Throttle>> {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.values().cloned().collect()
    }

    fn publish(&self, all: &HashMap<ThrottleScope, Arc<Throttle>>) {
        let mut table = Table::default();
        for throttle in all.values() {
            match &throttle.scope {
                ThrottleScope::Client(_) => table.clients.push(throttle.clone()),
                ThrottleScope::Identity(subject) => {
                    table.identities.insert(subject.clone(), throttle.clone());
                }
                ThrottleScope::Route(id) => {
                    table.routes.insert(id.clone(), throttle.clone());
                }
            }
        }
        self.table.store(Arc::new(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_admits_its_burst_then_refuses_with_a_wait() {
        let throttles = Throttles::default();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(throttles.check(client, "api", || 0).is_none());
        throttles.insert(Throttle::new(
            ThrottleScope::Client("192.0.2.0/24".parse().unwrap()),
            5.0,
            u64::MAX,
            "test".into(),
        ));
        let admitted = (0..20)
            .filter(|_| throttles.check(client, "api", || 0).is_none())
            .count();
        assert!((5..=6).contains(&admitted), "{admitted} admitted at 5/s");
        let (_, wait) = throttles.check(client, "api", || 0).unwrap();
        assert!(wait > 0 && wait <= 200, "{wait} ms");
        assert!(
            throttles
                .check("192.0.3.1".parse().unwrap(), "api", || 0)
                .is_none(),
            "other clients are not throttled"
        );
        assert_eq!(throttles.purge_expired(u64::MAX), 1);
        assert!(throttles.check(client, "api", || 0).is_none());
    }

    #[test]
    fn a_route_throttle_covers_every_client_of_the_route() {
        let throttles = Throttles::default();
        throttles.insert(Throttle::new(
            ThrottleScope::Route("api".into()),
            2.0,
            u64::MAX,
            "test".into(),
        ));
        let refused = (1..=10u8)
            .filter(|i| {
                throttles
                    .check(IpAddr::from([10, 0, 0, *i]), "api", || 0)
                    .is_some()
            })
            .count();
        assert!(refused >= 7, "{refused}");
        assert!(
            throttles
                .check("10.0.0.1".parse().unwrap(), "other", || 0)
                .is_none()
        );
        assert!(throttles.remove(&ThrottleScope::Route("api".into())));
    }

    #[test]
    fn an_identity_throttle_refuses_only_that_identity_and_not_its_address() {
        let throttles = Throttles::default();
        let shared: IpAddr = "198.51.100.7".parse().unwrap();
        throttles.insert(Throttle::new(
            ThrottleScope::Identity("mallory".into()),
            2.0,
            u64::MAX,
            "test".into(),
        ));
        let refused = (0..10)
            .filter(|_| throttles.check_identity("mallory", || 0).is_some())
            .count();
        assert!(refused >= 7, "{refused} of 10 refused at 2/s");
        assert!(throttles.check_identity("bob", || 0).is_none());
        assert!(
            throttles.check(shared, "api", || 0).is_none(),
            "the address mallory uses is not throttled"
        );
        assert!(
            throttles.check_identity("mallory", || u64::MAX).is_none(),
            "an expired throttle no longer refuses"
        );
        assert!(throttles.remove(&ThrottleScope::Identity("mallory".into())));
        assert!(throttles.check_identity("mallory", || 0).is_none());
    }
}
