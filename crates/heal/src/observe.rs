//! What the engine sees of one decision window: per-route and per-pool outcomes (from the
//! gateway's metrics and pool counters), per-client findings (from the security event
//! stream), configuration changes, and operator feedback. The gateway builds it; tests
//! build it by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::net::Net;

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
    /// Clients that had findings, refusals or canary hits in the window.
    pub clients: BTreeMap<IpAddr, ClientWindow>,
    /// Block actions whose rule an operator removed before it expired (a false alarm).
    pub removed_by_operator: Vec<u64>,
    /// Addresses or prefixes an operator blocked during the window (heal may have missed them).
    pub operator_blocks: Vec<Net>,
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
}

/// Evidence evidence lists are cut to this many entries.
pub const MAX_EVIDENCE: usize = 5;

impl ClientWindow {
    /// Adds one piece of evidence, keeping the list short and without repeats.
    pub fn note(&mut self, evidence: String) {
        if self.evidence.len() < MAX_EVIDENCE && !self.evidence.contains(&evidence) {
            self.evidence.push(evidence);
        }
    }
}

/// Questions about traffic the window does not carry: answered by the gateway's client
/// ledger.
pub trait Traffic {
    /// Requests clients under `net` made in the last window, leaving out `except`.
    fn requests_from(&self, net: &Net, except: &[IpAddr]) -> u64;
    /// Evidence that `client` had a good history (clean, answered requests) starting before
    /// `before_ms`; `None` when it has none.
    fn good_history(&self, client: IpAddr, before_ms: u64) -> Option<String>;
}

/// A traffic view that knows nothing (no history, no requests).
pub struct NoTraffic;

impl Traffic for NoTraffic {
    fn requests_from(&self, _: &Net, _: &[IpAddr]) -> u64 {
        0
    }

    fn good_history(&self, _: IpAddr, _: u64) -> Option<String> {
        None
    }
}
