//! Builds the engine's [`Window`] for one decision interval: client findings and
//! configuration changes from the security event stream, route answers and latency from the
//! Prometheus counters (as deltas since the last window), pool attempts from the pools'
//! counters, circuit refusals from the circuits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use apiguard_heal::{ClientKey, ClientWindow, ConfigChange, PoolWindow, RouteWindow, Window};
use apiguard_model::{Action, EventKind, SecurityEvent};
use prometheus::core::Collector;

use crate::circuit::Circuits;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Most distinct clients one window describes; past it, further clients' events are counted
/// only as missed (an attack from a million addresses must not grow memory without bound).
const MAX_CLIENTS_PER_WINDOW: usize = 50_000;

/// Counters as they were at the end of the last window.
#[derive(Default)]
struct Previous {
    /// (route, status class) → requests.
    requests: HashMap<(String, String), f64>,
    /// route → (latency sum in seconds, count).
    latency: HashMap<String, (f64, u64)>,
    /// pool name → (pool identity, attempts, failures).
    pools: HashMap<String, (usize, u64, u64)>,
    rejected: HashMap<String, u64>,
}

/// Accumulates one window.
#[derive(Default)]
pub struct WindowBuilder {
    start_ms: u64,
    clients: BTreeMap<ClientKey, ClientWindow>,
    /// route → (flagged requests, flagged clients).
    flagged: HashMap<String, (u64, BTreeSet<ClientKey>)>,
    config_changes: Vec<ConfigChange>,
    missed: u64,
    previous: Previous,
}

impl WindowBuilder {
    pub fn new(start_ms: u64) -> Self {
        WindowBuilder {
            start_ms,
            ..WindowBuilder::default()
        }
    }

    /// Events the task could not read (it lagged behind the stream).
    pub fn missed(&mut self, n: u64) {
        self.missed += n;
    }

    /// Takes one security event into the window.
    pub fn event(&mut self, event: &SecurityEvent) {
        match &event.kind {
            EventKind::ConfigApplied { version, .. } => self.config_changes.push(ConfigChange {
                version: *version,
                at_ms: event.at_ms,
            }),
            EventKind::RequestInspected {
                action, findings, ..
            } => {
                let Some(ip) = event.client_ip.map(|ip| ip.to_canonical()) else {
                    return;
                };
                // An authenticated client is its identity: the address may be shared.
                let client = match &event.identity {
                    Some(subject) if subject.len() <= apiguard_heal::target::MAX_IDENTITY_BYTES => {
                        ClientKey::Identity(subject.clone())
                    }
                    _ => ClientKey::from(ip),
                };
                if !self.clients.contains_key(&client)
                    && self.clients.len() >= MAX_CLIENTS_PER_WINDOW
                {
                    self.missed += 1;
                    return;
                }
                let fingerprint = event
                    .fingerprint
                    .as_deref()
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                let c = self.clients.entry(client.clone()).or_default();
                c.seen_from(ip, fingerprint);
                let refused = matches!(action, Action::Block | Action::Challenge);
                let mut scored = false;
                for f in findings {
                    match f.rule_id.as_ref() {
                        "enforcement.canary" => {
                            c.canary_hits += 1;
                            if refused {
                                c.blocked += 1;
                            }
                        }
                        "enforcement.block" | "enforcement.throttle" => c.blocked += 1,
                        rule if rule.starts_with("ratelimit.") => c.rate_limited += 1,
                        rule if f.score > 0 => {
                            scored = true;
                            c.note(format!("{rule} at {}", f.target));
                        }
                        _ => {}
                    }
                }
                if scored {
                    c.flagged += 1;
                    if refused {
                        c.refused += 1;
                    }
                    if let Some(route) = &event.route {
                        let entry = self.flagged.entry(route.clone()).or_default();
                        entry.0 += 1;
                        if entry.1.len() < 1024 {
                            entry.1.insert(client);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Ends the window at `end_ms` and starts the next one.
    pub fn finish(
        &mut self,
        end_ms: u64,
        snapshot: &Snapshot,
        metrics: &Metrics,
        circuits: &Circuits,
    ) -> Window {
        let mut routes: BTreeMap<String, RouteWindow> = snapshot
            .routes
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    RouteWindow {
                        pool: r.pool.name.clone(),
                        ..RouteWindow::default()
                    },
                )
            })
            .collect();

        let mut requests_now: HashMap<(String, String), f64> = HashMap::new();
        for family in metrics.requests.collect() {
            for m in family.get_metric() {
                let mut route = "";
                let mut class = "";
                for label in m.get_label() {
                    match label.name() {
                        "route" => route = label.value(),
                        "status_class" => class = label.value(),
                        _ => {}
                    }
                }
                *requests_now
                    .entry((route.to_owned(), class.to_owned()))
                    .or_default() += m.get_counter().get_value();
            }
        }
        for ((route, class), now) in &requests_now {
            let before = self
                .previous
                .requests
                .get(&(route.clone(), class.clone()))
                .copied()
                .unwrap_or(0.0);
            let delta = if *now >= before { now - before } else { *now } as u64;
            if let Some(w) = routes.get_mut(route) {
                w.requests += delta;
                if class == "5xx" {
                    w.errors += delta;
                }
            }
        }
        self.previous.requests = requests_now;

        let mut latency_now = HashMap::new();
        for family in metrics.request_duration.collect() {
            for m in family.get_metric() {
                let route = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "route")
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default();
                let h = m.get_histogram();
                latency_now.insert(route, (h.get_sample_sum(), h.get_sample_count()));
            }
        }
        for (route, (sum, count)) in &latency_now {
            let (sum_before, count_before) = self
                .previous
                .latency
                .get(route)
                .copied()
                .unwrap_or((0.0, 0));
            if let Some(w) = routes.get_mut(route)
                && *count > count_before
            {
                w.latency_ms =
                    Some((sum - sum_before).max(0.0) / (count - count_before) as f64 * 1000.0);
            }
        }
        self.previous.latency = latency_now;

        let rejected_now = circuits.rejected_by_route();
        for (route, now) in &rejected_now {
            let before = self.previous.rejected.get(route).copied().unwrap_or(0);
            if let Some(w) = routes.get_mut(route) {
                w.circuit_rejected = now.saturating_sub(before).min(w.requests);
            }
        }
        self.previous.rejected = rejected_now;

        for (route, (flagged, clients)) in self.flagged.drain() {
            if let Some(w) = routes.get_mut(&route) {
                w.flagged = flagged;
                w.flagged_clients = clients.len() as u64;
            }
        }

        let mut pools = BTreeMap::new();
        let mut pools_now = HashMap::new();
        for (name, pool) in &snapshot.pools {
            let identity = Arc::as_ptr(pool) as usize;
            let (attempts, failures) = pool.outcomes();
            let (a0, f0) = match self.previous.pools.get(name) {
                Some((id, a, f)) if *id == identity => (*a, *f),
                _ => (0, 0),
            };
            pools_now.insert(name.clone(), (identity, attempts, failures));
            pools.insert(
                name.clone(),
                PoolWindow {
                    attempts: attempts.saturating_sub(a0),
                    failures: failures.saturating_sub(f0),
                    targets: pool.targets.len(),
                    available: pool.available_targets(),
                    fallback: pool.settings.fallback.clone(),
                },
            );
        }
        self.previous.pools = pools_now;

        let total_requests = routes.values().map(|r| r.requests).sum();
        let window = Window {
            start_ms: self.start_ms,
            end_ms,
            config_version: snapshot.version,
            config_changes: std::mem::take(&mut self.config_changes),
            total_requests,
            routes,
            pools,
            clients: std::mem::take(&mut self.clients),
            removed_by_operator: Vec::new(),
            operator_blocks: Vec::new(),
            missed_events: std::mem::take(&mut self.missed),
        };
        self.start_ms = end_ms;
        window
    }
}
