//! Symptoms: what a window shows that is wrong, each with the subject it is about (an
//! incident is opened per subject) and the evidence to audit. Detection compares the window
//! with the learned thresholds and with per-route baselines learned from healthy windows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::learning::Thresholds;
use crate::net::Net;
use crate::observe::{ClientWindow, ConfigChange, Window};
use crate::settings::Settings;
use crate::target::{ClientKey, fingerprint_text};

/// Something wrong, with its measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Symptom {
    /// A pool's upstream attempts fail.
    UpstreamFailing {
        pool: String,
        failure_ratio: f64,
        attempts: u64,
        routes: Vec<String>,
    },
    /// A route's answers fail while its pool's attempts do not (or it has no attempts).
    RouteFailing {
        route: String,
        pool: String,
        error_ratio: f64,
        requests: u64,
    },
    /// Routes regressed (errors or latency) soon after a configuration change.
    ConfigRegression {
        version: u64,
        changed_ms: u64,
        routes: Vec<String>,
        evidence: Vec<String>,
    },
    /// A route got slow with no configuration change to blame.
    LatencyRegression {
        route: String,
        pool: String,
        latency_ms: f64,
        baseline_ms: f64,
    },
    /// One client (an identity when authenticated, else an address) sends attacks.
    Attack {
        client: ClientKey,
        flagged: u32,
        evidence: Vec<String>,
    },
    /// One client keeps running into rate limits.
    Abuse { client: ClientKey, refusals: u32 },
    /// Several offenders blocked in one prefix.
    DistributedAttack { prefix: Net, offenders: Vec<IpAddr> },
    /// Several offenders (blocked, or attacking in the window) share one client fingerprint:
    /// one tool behind rotating addresses or identities.
    SharedFingerprint {
        fingerprint: u64,
        offenders: Vec<ClientKey>,
    },
    /// Many clients attack one route.
    RouteUnderAttack {
        route: String,
        flagged: u64,
        clients: u64,
        requests: u64,
        baseline_rate: f64,
    },
}

impl Symptom {
    /// What the symptom is about: one open incident per subject.
    pub fn subject(&self) -> String {
        match self {
            Symptom::UpstreamFailing { pool, .. } => format!("pool:{pool}"),
            Symptom::RouteFailing { route, .. } => format!("route:{route}"),
            Symptom::ConfigRegression { .. } => "config".to_owned(),
            Symptom::LatencyRegression { route, .. } => format!("latency:{route}"),
            Symptom::Attack { client, .. } => format!("client:{client}"),
            Symptom::Abuse { client, .. } => format!("abuse:{client}"),
            Symptom::DistributedAttack { prefix, .. } => format!("prefix:{prefix}"),
            Symptom::SharedFingerprint { fingerprint, .. } => {
                format!("fingerprint:{}", fingerprint_text(*fingerprint))
            }
            Symptom::RouteUnderAttack { route, .. } => format!("route-attack:{route}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Symptom::UpstreamFailing { .. } => "upstream_failing",
            Symptom::RouteFailing { .. } => "route_failing",
            Symptom::ConfigRegression { .. } => "config_regression",
            Symptom::LatencyRegression { .. } => "latency_regression",
            Symptom::Attack { .. } => "attack",
            Symptom::Abuse { .. } => "abuse",
            Symptom::DistributedAttack { .. } => "distributed_attack",
            Symptom::SharedFingerprint { .. } => "shared_fingerprint",
            Symptom::RouteUnderAttack { .. } => "route_under_attack",
        }
    }

    /// The measurements, observed against expected, as audit evidence.
    pub fn evidence(&self) -> Vec<String> {
        match self {
            Symptom::UpstreamFailing {
                pool,
                failure_ratio,
                attempts,
                routes,
            } => vec![format!(
                "pool `{pool}`: {:.0}% of {attempts} upstream attempts failed (routes: {})",
                failure_ratio * 100.0,
                routes.join(", ")
            )],
            Symptom::RouteFailing {
                route,
                pool,
                error_ratio,
                requests,
            } => vec![format!(
                "route `{route}` (pool `{pool}`): {:.0}% of {requests} answers were 5xx",
                error_ratio * 100.0
            )],
            Symptom::ConfigRegression {
                version,
                changed_ms,
                evidence,
                ..
            } => {
                let mut lines = vec![format!(
                    "configuration version {version} applied at {changed_ms} ms"
                )];
                lines.extend(evidence.iter().cloned());
                lines
            }
            Symptom::LatencyRegression {
                route,
                latency_ms,
                baseline_ms,
                ..
            } => vec![format!(
                "route `{route}`: mean latency {latency_ms:.1} ms, expected about {baseline_ms:.1} ms"
            )],
            Symptom::Attack {
                client,
                flagged,
                evidence,
            } => {
                let mut lines = vec![format!(
                    "client {client}: {flagged} requests with findings in one window"
                )];
                lines.extend(evidence.iter().cloned());
                lines
            }
            Symptom::Abuse { client, refusals } => vec![format!(
                "client {client}: {refusals} rate-limit refusals in one window"
            )],
            Symptom::DistributedAttack { prefix, offenders } => vec![format!(
                "{} offenders blocked in {prefix}: {}",
                offenders.len(),
                offenders
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            Symptom::SharedFingerprint {
                fingerprint,
                offenders,
            } => vec![format!(
                "{} offenders share the client fingerprint {}: {}",
                offenders.len(),
                fingerprint_text(*fingerprint),
                offenders
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            Symptom::RouteUnderAttack {
                route,
                flagged,
                clients,
                requests,
                baseline_rate,
            } => vec![format!(
                "route `{route}`: {flagged} of {requests} requests flagged from {clients} clients (usual rate {baseline_rate:.1}/s)"
            )],
        }
    }
}

/// A route's normal behaviour, learned from windows without an incident about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteBaseline {
    pub error_ratio: f64,
    pub latency_ms: f64,
    /// Requests per second.
    pub rate: f64,
    pub windows: u64,
}

/// Per-route baselines (exponentially weighted, one fifth per window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    pub routes: BTreeMap<String, RouteBaseline>,
}

const BASELINE_WEIGHT: f64 = 0.2;
/// Windows a route needs before its latency baseline is trusted.
const BASELINE_MIN_WINDOWS: u64 = 3;
/// Most routes with a baseline (routes come from the configuration, so this is a backstop).
const MAX_BASELINES: usize = 10_000;

impl Baselines {
    /// Learns from the window, leaving out `frozen` routes (those with an open incident).
    pub fn learn(&mut self, window: &Window, min_requests: u64, frozen: &BTreeSet<String>) {
        let seconds = (window.end_ms.saturating_sub(window.start_ms) as f64 / 1000.0).max(0.001);
        for (route, w) in &window.routes {
            if frozen.contains(route) || w.judged() < min_requests {
                continue;
            }
            if !self.routes.contains_key(route) && self.routes.len() >= MAX_BASELINES {
                continue;
            }
            let b = self.routes.entry(route.clone()).or_default();
            let rate = w.requests as f64 / seconds;
            if b.windows == 0 {
                b.error_ratio = w.error_ratio();
                b.latency_ms = w.latency_ms.unwrap_or(0.0);
                b.rate = rate;
            } else {
                b.error_ratio += BASELINE_WEIGHT * (w.error_ratio() - b.error_ratio);
                if let Some(latency) = w.latency_ms {
                    b.latency_ms += BASELINE_WEIGHT * (latency - b.latency_ms);
                }
                b.rate += BASELINE_WEIGHT * (rate - b.rate);
            }
            b.windows += 1;
        }
    }
}

/// What detection needs besides the window.
pub struct DetectContext<'a> {
    pub settings: &'a Settings,
    pub thresholds: &'a Thresholds,
    pub baselines: &'a Baselines,
    /// The last configuration change not made by heal itself.
    pub last_change: Option<&'a ConfigChange>,
    /// Clients under an active heal block: their refusals are the remedy, not a symptom.
    pub blocked: &'a dyn Fn(&ClientKey, &ClientWindow) -> bool,
    /// `pool:<name>` and `route:<id>` whose circuit heal holds open.
    pub circuits: &'a BTreeSet<String>,
}

/// Every symptom the window shows (distributed attacks are found from the offender memory,
/// not here).
pub fn detect(window: &Window, ctx: &DetectContext<'_>) -> Vec<Symptom> {
    let settings = ctx.settings;
    let mut symptoms = Vec::new();
    let mut explained_routes = BTreeSet::new();
    let mut explained_pools = BTreeSet::new();

    // A regression right after a configuration change is blamed on it first: rolling back
    // undoes the cause, where a circuit would only hide it.
    if let Some(change) = ctx.last_change
        && window.end_ms.saturating_sub(change.at_ms) <= settings.regression_window_ms
    {
        let mut routes = Vec::new();
        let mut evidence = Vec::new();
        for (route, w) in &window.routes {
            if w.judged() < settings.min_requests {
                continue;
            }
            let base = ctx.baselines.routes.get(route);
            let base_errors = base.map_or(0.0, |b| b.error_ratio);
            let ratio = w.error_ratio();
            if ratio >= base_errors + settings.regression_delta {
                routes.push(route.clone());
                evidence.push(format!(
                    "route `{route}`: {:.0}% errors over {} answers, {:.0}% before the change",
                    ratio * 100.0,
                    w.judged(),
                    base_errors * 100.0
                ));
                continue;
            }
            if let (Some(latency), Some(b)) = (w.latency_ms, base)
                && b.windows >= BASELINE_MIN_WINDOWS
                && latency >= b.latency_ms * settings.latency_factor
                && latency >= b.latency_ms + settings.latency_floor_ms
            {
                routes.push(route.clone());
                evidence.push(format!(
                    "route `{route}`: mean latency {latency:.1} ms, {:.1} ms before the change",
                    b.latency_ms
                ));
            }
        }
        if !routes.is_empty() {
            for route in &routes {
                explained_routes.insert(route.clone());
                if let Some(w) = window.routes.get(route) {
                    explained_pools.insert(w.pool.clone());
                }
            }
            symptoms.push(Symptom::ConfigRegression {
                version: change.version,
                changed_ms: change.at_ms,
                routes,
                evidence,
            });
        }
    }

    let error_threshold = ctx.thresholds.error_ratio;
    for (pool, w) in &window.pools {
        if explained_pools.contains(pool) || ctx.circuits.contains(&format!("pool:{pool}")) {
            continue;
        }
        if w.attempts >= settings.min_requests && w.failure_ratio() >= error_threshold {
            let routes: Vec<String> = window
                .routes
                .iter()
                .filter(|(_, r)| &r.pool == pool)
                .map(|(id, _)| id.clone())
                .collect();
            explained_routes.extend(routes.iter().cloned());
            symptoms.push(Symptom::UpstreamFailing {
                pool: pool.clone(),
                failure_ratio: w.failure_ratio(),
                attempts: w.attempts,
                routes,
            });
        }
    }
    for (route, w) in &window.routes {
        if explained_routes.contains(route)
            || ctx.circuits.contains(&format!("route:{route}"))
            || ctx.circuits.contains(&format!("pool:{}", w.pool))
        {
            continue;
        }
        if w.judged() >= settings.min_requests && w.error_ratio() >= error_threshold {
            symptoms.push(Symptom::RouteFailing {
                route: route.clone(),
                pool: w.pool.clone(),
                error_ratio: w.error_ratio(),
                requests: w.judged(),
            });
            continue;
        }
        if let (Some(latency), Some(b)) = (w.latency_ms, ctx.baselines.routes.get(route))
            && w.judged() >= settings.min_requests
            && b.windows >= BASELINE_MIN_WINDOWS
            && latency >= b.latency_ms * settings.latency_factor
            && latency >= b.latency_ms + settings.latency_floor_ms
        {
            symptoms.push(Symptom::LatencyRegression {
                route: route.clone(),
                pool: w.pool.clone(),
                latency_ms: latency,
                baseline_ms: b.latency_ms,
            });
        }
    }

    let attack_threshold = ctx.thresholds.attack_findings.round().max(1.0) as u32;
    for (client, w) in &window.clients {
        if (ctx.blocked)(client, w) {
            continue;
        }
        if w.flagged >= attack_threshold {
            symptoms.push(Symptom::Attack {
                client: client.clone(),
                flagged: w.flagged,
                evidence: w.evidence.clone(),
            });
        } else if settings.abuse_refusals > 0 && w.rate_limited >= settings.abuse_refusals {
            symptoms.push(Symptom::Abuse {
                client: client.clone(),
                refusals: w.rate_limited,
            });
        }
    }

    let distinct = ctx.thresholds.prefix_offenders.round().max(2.0) as u64;
    for (route, w) in &window.routes {
        if w.requests >= settings.min_requests
            && w.flagged_clients >= distinct
            && w.flagged * 2 >= w.requests
        {
            symptoms.push(Symptom::RouteUnderAttack {
                route: route.clone(),
                flagged: w.flagged,
                clients: w.flagged_clients,
                requests: w.requests,
                baseline_rate: ctx.baselines.routes.get(route).map_or(0.0, |b| b.rate),
            });
        }
    }
    symptoms
}
