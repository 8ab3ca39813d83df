//! Circuits over failing upstream pools and routes, opened and moved through their phases
//! by self-healing (open → half-open → closed). The request path reads them without a lock
//! (an empty table costs one atomic load); while open a request is rerouted to the circuit's
//! fallback pool, or answered 503 at once, so a failing upstream stops taking load.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use apiguard_heal::{CircuitKey, CircuitPhase};
use arc_swap::ArcSwap;
use serde::Serialize;

/// One circuit.
#[derive(Debug, Serialize)]
pub struct Circuit {
    #[serde(serialize_with = "key_label")]
    pub key: CircuitKey,
    pub phase: CircuitPhase,
    /// The pool requests go to instead, when the circuit reroutes.
    pub fallback: Option<String>,
    /// The heal action that set it.
    pub action: u64,
    /// Requests answered 503 by the circuit.
    #[serde(serialize_with = "atomic")]
    pub rejected: AtomicU64,
    /// Requests sent to the fallback.
    #[serde(serialize_with = "atomic")]
    pub rerouted: AtomicU64,
    /// Requests let through to the upstream while half-open.
    #[serde(serialize_with = "atomic")]
    pub probes: AtomicU64,
}

fn key_label<S: serde::Serializer>(key: &CircuitKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&key.label())
}

fn atomic<S: serde::Serializer>(value: &AtomicU64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(value.load(Ordering::Relaxed))
}

/// What the request path does about a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    /// Send it to the route's pool (a half-open probe).
    Probe,
    /// Do not send it to the route's pool: reroute to the fallback, or refuse.
    Held,
}

#[derive(Default)]
struct Table {
    pools: HashMap<String, Arc<Circuit>>,
    routes: HashMap<String, Arc<Circuit>>,
}

impl Table {
    fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.routes.is_empty()
    }
}

/// Every circuit; they outlive configuration reloads.
#[derive(Default)]
pub struct Circuits {
    table: ArcSwap<Table>,
    write: Mutex<()>,
    /// Requests refused by a circuit, by route (the failure path only takes this lock).
    rejected_by_route: Mutex<HashMap<String, u64>>,
}

impl Circuits {
    pub fn new() -> Self {
        Self::default()
    }

    /// The circuit on `route` or on its `pool` (the route's own first), and what to do with
    /// this request. `None`: no circuit, send as usual.
    pub fn check(&self, route: &str, pool: &str) -> Option<(Arc<Circuit>, Passage)> {
        let table = self.table.load();
        if table.is_empty() {
            return None;
        }
        let circuit = table.routes.get(route).or_else(|| table.pools.get(pool))?;
        let passage = match circuit.phase {
            CircuitPhase::Open { .. } => Passage::Held,
            CircuitPhase::HalfOpen { probe_percent } => {
                if fastrand::u8(0..100) < probe_percent {
                    circuit.probes.fetch_add(1, Ordering::Relaxed);
                    Passage::Probe
                } else {
                    Passage::Held
                }
            }
        };
        Some((circuit.clone(), passage))
    }

    /// Counts a refusal on `route` (circuit refusals are left out of the route's error ratio).
    pub fn count_rejected(&self, circuit: &Circuit, route: &str) {
        circuit.rejected.fetch_add(1, Ordering::Relaxed);
        let mut by_route = self
            .rejected_by_route
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_route.get_mut(route) {
            *n += 1;
        } else if by_route.len() < 10_000 {
            by_route.insert(route.to_owned(), 1);
        }
    }

    /// Refusals by route so far (monotonic counters).
    pub fn rejected_by_route(&self) -> HashMap<String, u64> {
        self.rejected_by_route
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Opens, re-opens or half-opens the circuit on `key`.
    pub fn set(&self, key: CircuitKey, phase: CircuitPhase, fallback: Option<String>, action: u64) {
        let _serial = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.table.load();
        let mut pools = current.pools.clone();
        let mut routes = current.routes.clone();
        let map = match &key {
            CircuitKey::Pool(name) => (&mut pools, name.clone()),
            CircuitKey::Route(id) => (&mut routes, id.clone()),
        };
        // Counters carry over from the previous phase of the same circuit.
        let previous = map.0.get(&map.1).cloned();
        let carry = |f: fn(&Circuit) -> &AtomicU64| {
            AtomicU64::new(
                previous
                    .as_deref()
                    .map_or(0, |p| f(p).load(Ordering::Relaxed)),
            )
        };
        let circuit = Circuit {
            key: key.clone(),
            phase,
            fallback,
            action,
            rejected: carry(|c| &c.rejected),
            rerouted: carry(|c| &c.rerouted),
            probes: carry(|c| &c.probes),
        };
        map.0.insert(map.1, Arc::new(circuit));
        self.table.store(Arc::new(Table { pools, routes }));
    }

    /// Closes the circuit on `key`; whether there was one.
    pub fn close(&self, key: &CircuitKey) -> bool {
        let _serial = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.table.load();
        let mut pools = current.pools.clone();
        let mut routes = current.routes.clone();
        let removed = match key {
            CircuitKey::Pool(name) => pools.remove(name).is_some(),
            CircuitKey::Route(id) => routes.remove(id).is_some(),
        };
        if removed {
            self.table.store(Arc::new(Table { pools, routes }));
        }
        removed
    }

    /// Every circuit.
    pub fn list(&self) -> Vec<Arc<Circuit>> {
        let table = self.table.load();
        let mut all: Vec<_> = table
            .pools
            .values()
            .chain(table.routes.values())
            .cloned()
            .collect();
        all.sort_by_key(|c| c.key.label());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_holds_half_open_probes_a_share_and_close_clears() {
        let circuits = Circuits::new();
        assert!(circuits.check("api", "primary").is_none());
        let key = CircuitKey::Pool("primary".into());
        circuits.set(
            key.clone(),
            CircuitPhase::Open { until_ms: u64::MAX },
            Some("backup".into()),
            7,
        );
        let (circuit, passage) = circuits.check("api", "primary").unwrap();
        assert_eq!(passage, Passage::Held);
        assert_eq!(circuit.fallback.as_deref(), Some("backup"));
        assert!(circuits.check("api", "other").is_none());
        circuits.count_rejected(&circuit, "api");
        circuits.set(
            key.clone(),
            CircuitPhase::HalfOpen { probe_percent: 50 },
            None,
            7,
        );
        let probes = (0..1000)
            .filter(|_| circuits.check("api", "primary").unwrap().1 == Passage::Probe)
            .count();
        assert!(
            (350..650).contains(&probes),
            "{probes} of 1000 probed at 50%"
        );
        let (circuit, _) = circuits.check("api", "primary").unwrap();
        assert_eq!(
            circuit.rejected.load(Ordering::Relaxed),
            1,
            "counters carry over"
        );
        assert_eq!(circuits.rejected_by_route()["api"], 1);
        assert!(circuits.close(&key));
        assert!(circuits.check("api", "primary").is_none());
        assert!(!circuits.close(&key));
    }
}
