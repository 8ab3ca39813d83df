//! The compiled `heal:` settings the engine decides with. The gateway turns its configuration
//! section into this (with durations in milliseconds), so this crate stays free of I/O and of
//! the configuration format.

use serde::{Deserialize, Serialize};

use crate::net::Net;

/// What the loop does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Nothing runs.
    #[default]
    Off,
    /// Incidents are opened, analysed and audited, and the plan is recorded, but no action
    /// is taken.
    Observe,
    /// The full loop: actions are applied, verified and escalated.
    Enforce,
}

/// Every knob of the loop; see docs/heal.md for what each does.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    /// Length of one decision window.
    pub interval_ms: u64,
    /// Requests a route or pool needs in a window before its ratios are judged.
    pub min_requests: u64,
    /// Windows a symptom must persist before analysis starts (1: at once).
    pub confirm_windows: u32,
    /// Share of failed answers (5xx, connection failures) that makes a route or pool
    /// unhealthy; the learned threshold starts here.
    pub error_ratio: f64,
    /// After a configuration change, a route whose error ratio rose by this much over its
    /// baseline has regressed.
    pub regression_delta: f64,
    /// After a configuration change, a route whose mean latency is this many times its
    /// baseline (and at least `latency_floor_ms` more) has regressed.
    pub latency_factor: f64,
    pub latency_floor_ms: f64,
    /// How long after a configuration change a regression is blamed on it.
    pub regression_window_ms: u64,
    /// A configuration version that served this long without an error incident becomes the
    /// known good version.
    pub stable_after_ms: u64,
    /// Requests with findings from one client in one window that make an attack; the learned
    /// threshold starts here.
    pub attack_findings: u32,
    /// Rate-limit refusals of one client in one window that make it abusive.
    pub abuse_refusals: u32,
    /// Distinct offenders blocked in one prefix that make a distributed attack.
    pub prefix_offenders: u32,
    /// The prefix lengths that group offenders.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// First block of an offender; each repeat doubles it, up to `max_block_ttl_ms`.
    pub block_ttl_ms: u64,
    pub max_block_ttl_ms: u64,
    /// How long an offender is remembered for TTL escalation after its last block.
    pub offender_memory_ms: u64,
    /// Throttle of an abusive client (requests per second), halved on each escalation.
    pub throttle_rate: f64,
    pub throttle_min_rate: f64,
    pub throttle_ttl_ms: u64,
    /// A route under attack is throttled to its learned rate times this.
    pub route_throttle_factor: f64,
    /// First time a circuit stays open; doubled on each failed probe round.
    pub circuit_open_ms: u64,
    pub circuit_max_open_ms: u64,
    /// Share of requests let through to the upstream while half-open.
    pub probe_percent: u8,
    /// Probe answers needed to judge a half-open circuit.
    pub min_probes: u64,
    pub canary: CanarySettings,
    pub guardrails: Guardrails,
    pub learning: LearningSettings,
    /// Windows in a row that must show the symptom gone before an action is verified.
    pub verify_windows: u32,
    /// Windows after which an action that did not remove the symptom has failed.
    pub verify_timeout_windows: u32,
    /// Whether a hook is configured as the last remediation step.
    pub remediation_hook: bool,
    /// Closed incidents kept (open ones are always kept).
    pub max_incidents: usize,
    /// Audit entries kept.
    pub max_audit: usize,
}

/// Canarying of new block rules.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySettings {
    pub enabled: bool,
    /// Share of the matching requests a canaried rule refuses.
    pub share_percent: u8,
    /// How long a rule stays canaried before it applies in full.
    pub duration_ms: u64,
    /// Clean answered requests that make a client's history good.
    pub good_history: u64,
}

/// Limits no action may exceed.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    /// Largest share (0..1) of the last window's requests a block or client throttle may
    /// cover, the offenders' own requests not counted.
    pub max_traffic_share: f64,
    /// Block rules applied per minute at most.
    pub max_blocks_per_minute: u32,
    /// Networks never blocked or throttled.
    pub allowlist: Vec<Net>,
}

/// How far the learned thresholds may move.
#[derive(Debug, Clone, PartialEq)]
pub struct LearningSettings {
    pub enabled: bool,
    /// Relative change per lesson (0.25: a quarter of the configured value).
    pub step: f64,
    /// Bounds, relative to the configured value.
    pub min_factor: f64,
    pub max_factor: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Off,
            interval_ms: 1_000,
            min_requests: 10,
            confirm_windows: 1,
            error_ratio: 0.5,
            regression_delta: 0.2,
            latency_factor: 3.0,
            latency_floor_ms: 100.0,
            regression_window_ms: 120_000,
            stable_after_ms: 30_000,
            attack_findings: 5,
            abuse_refusals: 20,
            prefix_offenders: 3,
            prefix_v4: 24,
            prefix_v6: 64,
            block_ttl_ms: 600_000,
            max_block_ttl_ms: 86_400_000,
            offender_memory_ms: 86_400_000,
            throttle_rate: 10.0,
            throttle_min_rate: 1.0,
            throttle_ttl_ms: 600_000,
            route_throttle_factor: 1.5,
            circuit_open_ms: 10_000,
            circuit_max_open_ms: 300_000,
            probe_percent: 10,
            min_probes: 3,
            canary: CanarySettings {
                enabled: true,
                share_percent: 50,
                duration_ms: 60_000,
                good_history: 10,
            },
            guardrails: Guardrails {
                max_traffic_share: 0.2,
                max_blocks_per_minute: 60,
                allowlist: Vec::new(),
            },
            learning: LearningSettings {
                enabled: true,
                step: 0.25,
                min_factor: 0.5,
                max_factor: 4.0,
            },
            verify_windows: 1,
            verify_timeout_windows: 5,
            remediation_hook: false,
            max_incidents: 1_000,
            max_audit: 10_000,
        }
    }
}
