//! What the engine sees of one decision window: per-route and per-pool outcomes (from the
//! gateway's metrics and pool counters), per-client findings (from the security event
//! stream), configuration changes, and operator feedback. The gateway builds it; tests
//! build it by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::target::{ClientKey, Target};

/// One decision window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    /// The configuration version in effect at the end of the window.
    pub config_version: u64,
    /// Configurations applied during the window, in order.
    pub config_changes: Vec<ConfigChange>,
    /// Requests answered on every route (refusals included).
    pub total_requests: u64,
    pub routes: BTreeMap<String, RouteWindow>,
    pub pools: BTreeMap<String, PoolWindow>,
    /// Clients (by identity when authenticated, else by address) that had findings,
    /// refusals or canary hits in the window.
    pub clients: BTreeMap<ClientKey, ClientWindow>,
    /// Block actions whose rule an operator removed before it expired (a false alarm).
    pub removed_by_operator: Vec<u64>,
    /// Rules an operator added during the window (heal may have missed them).
    pub operator_blocks: Vec<Target>,
    /// Events the engine could not read because it fell behind (the evidence is partial).
    pub missed_events: u64,
}

/// A configuration that took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    pub version: u64,
    pub at_ms: u64,
}

/// One route's answers in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteWindow {
    /// The pool the route sends to.
    pub pool: String,
    /// Every answer, circuit refusals included.
    pub requests: u64,
    /// 5xx answers, circuit refusals included.
    pub errors: u64,
    /// Answers made by an open circuit (neither the upstream's fault nor evidence about it).
    pub circuit_rejected: u64,
    /// Mean time to answer, when there were answers.
    pub latency_ms: Option<f64>,
    /// Requests with a finding (any score) on this route, and the distinct clients behind them.
    pub flagged: u64,
    pub flagged_clients: u64,
}

impl RouteWindow {
    /// Answers that reflect the upstream (circuit refusals left out).
    pub fn judged(&self) -> u64 {
        self.requests.saturating_sub(self.circuit_rejected)
    }

    pub fn error_ratio(&self) -> f64 {
        let judged = self.judged();
        if judged == 0 {
            0.0
        } else {
            self.errors.saturating_sub(self.circuit_rejected) as f64 / judged as f64
        }
    }
}

/// One pool's upstream attempts in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PoolWindow {
    pub attempts: u64,
    /// 5xx answers, connection failures and timeouts.
    pub failures: u64,
    pub targets: usize,
    /// Targets neither ejected nor failing their health checks.
    pub available: usize,
    /// The pool's `fallback`, when it has one.
    pub fallback: Option<String>,
}

impl PoolWindow {
    pub fn failure_ratio(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.failures as f64 / self.attempts as f64
        }
    }
}

/// What one client did in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientWindow {
    /// Requests with at least one scoring finding from detection, behaviour or limits.
    pub flagged: u32,
    /// Of those, refused by the pipeline.
    pub refused: u32,
    /// Refusals by rate limits.
    pub rate_limited: u32,
    /// Requests refused by a block rule (any source).
    pub blocked: u32,
    /// Requests matched by a canaried rule (refused or let through).
    pub canary_hits: u32,
    /// Requests answered by the upstream below 400 without a finding.
    pub clean: u32,
    /// A few of the rule ids and targets behind the findings, for the audit trail.
    pub evidence: Vec<String>,
    /// The addresses the client came from (an identity's, at most [`MAX_ADDRESSES`]).
    pub addresses: Vec<IpAddr>,
    /// The client fingerprint of its last request, when the gateway computed one.
    pub fingerprint: Option<u64>,
}

/// Addresses kept per client and window.
pub const MAX_ADDRESSES: usize = 4;

/// Evidence evidence lists are cut to this many entries.
pub const MAX_EVIDENCE: usize = 5;

impl ClientWindow {
    /// Adds one piece of evidence, keeping the list short and without repeats.
    pub fn note(&mut self, evidence: String) {
        if self.evidence.len() < MAX_EVIDENCE && !self.evidence.contains(&evidence) {
            self.evidence.push(evidence);
        }
    }

    /// Notes where a request came from.
    pub fn seen_from(&mut self, ip: IpAddr, fingerprint: Option<u64>) {
        let ip = ip.to_canonical();
        if self.addresses.len() < MAX_ADDRESSES && !self.addresses.contains(&ip) {
            self.addresses.push(ip);
        }
        if fingerprint.is_some() {
            self.fingerprint = fingerprint;
        }
    }
}

/// Questions about traffic the window does not carry: answered by the gateway's client
/// ledger.
pub trait Traffic {
    /// Requests the clients `target` covers made in the last window, leaving out `except`.
    fn requests_from(&self, target: &Target, except: &[ClientKey]) -> u64;
    /// Evidence that `client` had a good history (clean, answered requests) starting before
    /// `before_ms`; `None` when it has none.
    fn good_history(&self, client: &ClientKey, before_ms: u64) -> Option<String>;
}

/// A traffic view that knows nothing (no history, no requests).
pub struct NoTraffic;

impl Traffic for NoTraffic {
    fn requests_from(&self, _: &Target, _: &[ClientKey]) -> u64 {
        0
    }

    fn good_history(&self, _: &ClientKey, _: u64) -> Option<String> {
        None
    }
}
