//! The `heal:` section as written, and its compilation into the engine's settings and the
//! hooks (every problem reported, as for the rest of the file).

use std::path::PathBuf;
use std::time::Duration;

use apiguard_heal::{Mode, Net, Settings};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::DurationSpec;
use crate::load::Problem;

/// What the self-healing loop does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealMode {
    /// Nothing runs.
    Off,
    /// Incidents are opened, analysed and audited, and the action that would be taken is
    /// recorded; nothing is changed.
    #[default]
    Observe,
    /// The full loop: actions are applied, verified, escalated and learned from.
    Enforce,
}

/// Self-healing (see docs/heal.md). Off when absent.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealConfig {
    /// `off`, `observe` or `enforce`.
    #[serde(default)]
    pub mode: HealMode,
    /// Length of one decision window: symptoms are judged, actions verified and taken once
    /// per interval (at least 100ms).
    #[serde(default = "defaults::interval")]
    #[schemars(with = "String")]
    pub interval: DurationSpec,
    /// A JSON file keeping incidents (with every transition and its evidence), actions, the
    /// offender memory, learned thresholds and the audit trail across restarts. Block rules
    /// and throttles still in effect are put back at start. Off when absent. Read at start
    /// only.
    #[serde(default)]
    pub persist_path: Option<String>,
    /// Requests a route or pool needs in a window before its error ratio is judged.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u64,
    /// Windows a symptom must last before analysis starts (1: act in the window it shows).
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1))]
    pub confirm_windows: u32,
    /// Windows in a row that must show the symptom gone before an action counts as verified.
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1))]
    pub verify_windows: u32,
    /// Windows after which an action that did not remove the symptom has failed (the next
    /// remediation is tried, or the incident escalates).
    #[serde(default = "defaults::verify_timeout_windows")]
    #[schemars(range(min = 1))]
    pub verify_timeout_windows: u32,
    /// When symptoms count.
    #[serde(default)]
    pub thresholds: HealThresholdsConfig,
    /// Automatic rollback of the configuration.
    #[serde(default)]
    pub rollback: HealRollbackConfig,
    /// Block rules on attacking clients.
    #[serde(default)]
    pub block: HealBlockConfig,
    /// Throttling of abusive clients and of routes under attack.
    #[serde(default)]
    pub throttle: HealThrottleConfig,
    /// Circuit breaking (and rerouting to a pool's `fallback`).
    #[serde(default)]
    pub circuit: HealCircuitConfig,
    /// Canarying of new block rules.
    #[serde(default)]
    pub canary: HealCanaryConfig,
    /// Limits no action may exceed.
    #[serde(default)]
    pub guardrails: HealGuardrailsConfig,
    /// How the thresholds learn from false alarms and missed episodes.
    #[serde(default)]
    pub learning: HealLearningConfig,
    /// External hooks told about incidents, and called as the last remediation step.
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    /// Closed incidents kept (open ones are always kept).
    #[serde(default = "defaults::max_incidents")]
    #[schemars(range(min = 1))]
    pub max_incidents: usize,
    /// Audit trail entries kept.
    #[serde(default = "defaults::max_audit")]
    #[schemars(range(min = 1))]
    pub max_audit: usize,
    /// Client addresses whose recent outcomes are tracked (for canary verdicts and the
    /// traffic-share guardrail). Read at start only.
    #[serde(default = "defaults::max_clients")]
    #[schemars(range(min = 1))]
    pub max_clients: usize,
}

/// Symptom thresholds. The error ratio, attack and prefix thresholds are where learning
/// starts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealThresholdsConfig {
    /// Share (0 to 1) of failed answers (5xx, connection failures, timeouts) that makes a
    /// route or pool unhealthy.
    #[serde(default = "defaults::error_ratio")]
    pub error_ratio: f64,
    /// Requests with findings from one client in one window that make an attack.
    #[serde(default = "defaults::attack_findings")]
    #[schemars(range(min = 1))]
    pub attack_findings: u32,
    /// Rate-limit refusals of one client in one window that make it abusive (0: off).
    #[serde(default = "defaults::abuse_refusals")]
    pub abuse_refusals: u32,
    /// Distinct offenders blocked in one prefix that make a distributed attack (a prefix
    /// rule, always canaried).
    #[serde(default = "defaults::prefix_offenders")]
    #[schemars(range(min = 2))]
    pub prefix_offenders: u32,
    /// The IPv4 prefix length that groups offenders.
    #[serde(default = "defaults::prefix_v4")]
    #[schemars(range(max = 32))]
    pub prefix_v4: u8,
    /// The IPv6 prefix length that groups offenders.
    #[serde(default = "defaults::prefix_v6")]
    #[schemars(range(max = 128))]
    pub prefix_v6: u8,
    /// A mean latency this many times a route's baseline (and `latency_floor` more) is a
    /// regression.
    #[serde(default = "defaults::latency_factor")]
    pub latency_factor: f64,
    /// See `latency_factor`.
    #[serde(default = "defaults::latency_floor")]
    #[schemars(with = "String")]
    pub latency_floor: DurationSpec,
}

/// Automatic configuration rollback.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealRollbackConfig {
    /// A regression within this time after a configuration change is blamed on it.
    #[serde(default = "defaults::regression_window")]
    #[schemars(with = "String")]
    pub regression_window: DurationSpec,
    /// Error ratio rise (0 to 1) over a route's baseline that makes a regression.
    #[serde(default = "defaults::regression_delta")]
    pub regression_delta: f64,
    /// A version that served this long (with `min_requests` requests) without an error
    /// incident becomes the last known good version: the rollback target.
    #[serde(default = "defaults::stable_after")]
    #[schemars(with = "String")]
    pub stable_after: DurationSpec,
}

/// Block rules.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealBlockConfig {
    /// A first offender's block; each repeat within `offender_memory` doubles it.
    #[serde(default = "defaults::block_ttl")]
    #[schemars(with = "String")]
    pub ttl: DurationSpec,
    /// The longest block.
    #[serde(default = "defaults::block_max_ttl")]
    #[schemars(with = "String")]
    pub max_ttl: DurationSpec,
    /// How long an offender's blocks are remembered for escalation.
    #[serde(default = "defaults::offender_memory")]
    #[schemars(with = "String")]
    pub offender_memory: DurationSpec,
}

/// Throttles.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealThrottleConfig {
    /// Requests per second an abusive client keeps; the next step is a quarter of it.
    #[serde(default = "defaults::throttle_rate")]
    pub rate: f64,
    /// No throttle goes below this (requests per second).
    #[serde(default = "defaults::throttle_min_rate")]
    pub min_rate: f64,
    /// How long a throttle lasts.
    #[serde(default = "defaults::throttle_ttl")]
    #[schemars(with = "String")]
    pub ttl: DurationSpec,
    /// A route under attack is throttled to its learned rate times this.
    #[serde(default = "defaults::route_factor")]
    pub route_factor: f64,
}

/// Circuits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealCircuitConfig {
    /// How long a circuit first stays open; each failed probe round doubles it.
    #[serde(default = "defaults::circuit_open")]
    #[schemars(with = "String")]
    pub open: DurationSpec,
    /// The longest open period.
    #[serde(default = "defaults::circuit_max_open")]
    #[schemars(with = "String")]
    pub max_open: DurationSpec,
    /// Percentage of requests let through to the upstream while half-open.
    #[serde(default = "defaults::probe_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub probe_percent: u8,
    /// Probe answers needed in one window to close (or reopen) a half-open circuit.
    #[serde(default = "defaults::min_probes")]
    #[schemars(range(min = 1))]
    pub min_probes: u64,
}

/// Canaries.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealCanaryConfig {
    /// Canary new rules whose reach exceeds their evidence: prefix rules, and rules on an
    /// address with a good history.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Percentage of the matching requests a canaried rule refuses (0: monitor only).
    #[serde(default = "defaults::canary_share")]
    #[schemars(range(max = 100))]
    pub share_percent: u8,
    /// How long a rule stays canaried before it applies to every matching request.
    #[serde(default = "defaults::canary_duration")]
    #[schemars(with = "String")]
    pub duration: DurationSpec,
    /// Clean answered requests (a fifth as many authenticated ones) that give a client a
    /// good history: a canaried rule that meets such a client is reverted.
    #[serde(default = "defaults::good_history")]
    #[schemars(range(min = 1))]
    pub good_history: u64,
}

/// Guardrails.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealGuardrailsConfig {
    /// Largest percentage of the last window's requests a block or client throttle may
    /// cover, the offenders' own requests not counted.
    #[serde(default = "defaults::max_traffic_share")]
    #[schemars(range(max = 100))]
    pub max_traffic_share: u8,
    /// Block rules applied per minute at most.
    #[serde(default = "defaults::max_blocks_per_minute")]
    pub max_blocks_per_minute: u32,
    /// Addresses and prefixes never blocked or throttled (a rule overlapping one is refused).
    #[serde(default)]
    pub allowlist: Vec<String>,
}

/// Learning.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealLearningConfig {
    /// Move thresholds after false alarms (reverted canaries, rules an operator removed)
    /// and missed episodes (repeated findings below the threshold, clients an operator
    /// blocked).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// One move, as a share of the configured value.
    #[serde(default = "defaults::learning_step")]
    pub step: f64,
    /// The lowest a threshold may go, as a factor of the configured value.
    #[serde(default = "defaults::min_factor")]
    pub min_factor: f64,
    /// The highest a threshold may go, as a factor of the configured value.
    #[serde(default = "defaults::max_factor")]
    pub max_factor: f64,
}

/// One external hook: give exactly one of `webhook` or `command`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// A name for logs and the audit trail.
    pub name: String,
    /// An `http://host:port/path` URL that receives the event as a JSON POST.
    #[serde(default)]
    pub webhook: Option<String>,
    /// A program and its arguments (no shell), run with the event JSON on its standard
    /// input; exit status 0 is success.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Events that call it: `opened`, `escalated`, `resolved`, and `remediation` (the hook
    /// is then also the last remediation step of every plan). Default: all.
    #[serde(default = "defaults::hook_events")]
    pub on: Vec<HookEvent>,
    /// Time allowed for one call; a command still running then is killed.
    #[serde(default = "defaults::hook_timeout")]
    #[schemars(with = "String")]
    pub timeout: DurationSpec,
}

/// An incident event a hook can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    Opened,
    Escalated,
    Resolved,
    Remediation,
}

impl HookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Opened => "opened",
            HookEvent::Escalated => "escalated",
            HookEvent::Resolved => "resolved",
            HookEvent::Remediation => "remediation",
        }
    }
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            mode: HealMode::default(),
            interval: defaults::interval(),
            persist_path: None,
            min_requests: defaults::min_requests(),
            confirm_windows: 1,
            verify_windows: 1,
            verify_timeout_windows: defaults::verify_timeout_windows(),
            thresholds: HealThresholdsConfig::default(),
            rollback: HealRollbackConfig::default(),
            block: HealBlockConfig::default(),
            throttle: HealThrottleConfig::default(),
            circuit: HealCircuitConfig::default(),
            canary: HealCanaryConfig::default(),
            guardrails: HealGuardrailsConfig::default(),
            learning: HealLearningConfig::default(),
            hooks: Vec::new(),
            max_incidents: defaults::max_incidents(),
            max_audit: defaults::max_audit(),
            max_clients: defaults::max_clients(),
        }
    }
}

impl Default for HealThresholdsConfig {
    fn default() -> Self {
        HealThresholdsConfig {
            error_ratio: defaults::error_ratio(),
            attack_findings: defaults::attack_findings(),
            abuse_refusals: defaults::abuse_refusals(),
            prefix_offenders: defaults::prefix_offenders(),
            prefix_v4: defaults::prefix_v4(),
            prefix_v6: defaults::prefix_v6(),
            latency_factor: defaults::latency_factor(),
            latency_floor: defaults::latency_floor(),
        }
    }
}

impl Default for HealRollbackConfig {
    fn default() -> Self {
        HealRollbackConfig {
            regression_window: defaults::regression_window(),
            regression_delta: defaults::regression_delta(),
            stable_after: defaults::stable_after(),
        }
    }
}

impl Default for HealBlockConfig {
    fn default() -> Self {
        HealBlockConfig {
            ttl: defaults::block_ttl(),
            max_ttl: defaults::block_max_ttl(),
            offender_memory: defaults::offender_memory(),
        }
    }
}

impl Default for HealThrottleConfig {
    fn default() -> Self {
        HealThrottleConfig {
            rate: defaults::throttle_rate(),
            min_rate: defaults::throttle_min_rate(),
            ttl: defaults::throttle_ttl(),
            route_factor: defaults::route_factor(),
        }
    }
}

impl Default for HealCircuitConfig {
    fn default() -> Self {
        HealCircuitConfig {
            open: defaults::circuit_open(),
            max_open: defaults::circuit_max_open(),
            probe_percent: defaults::probe_percent(),
            min_probes: defaults::min_probes(),
        }
    }
}

impl Default for HealCanaryConfig {
    fn default() -> Self {
        HealCanaryConfig {
            enabled: true,
            share_percent: defaults::canary_share(),
            duration: defaults::canary_duration(),
            good_history: defaults::good_history(),
        }
    }
}

impl Default for HealGuardrailsConfig {
    fn default() -> Self {
        HealGuardrailsConfig {
            max_traffic_share: defaults::max_traffic_share(),
            max_blocks_per_minute: defaults::max_blocks_per_minute(),
            allowlist: Vec::new(),
        }
    }
}

impl Default for HealLearningConfig {
    fn default() -> Self {
        HealLearningConfig {
            enabled: true,
            step: defaults::learning_step(),
            min_factor: defaults::min_factor(),
            max_factor: defaults::max_factor(),
        }
    }
}

/// Default values, in one place so the docs and the code agree.
pub mod defaults {
    use super::{DurationSpec, HookEvent};

    pub fn yes() -> bool {
        true
    }
    pub fn one() -> u32 {
        1
    }
    pub fn interval() -> DurationSpec {
        DurationSpec::secs(1)
    }
    pub fn min_requests() -> u64 {
        10
    }
    pub fn verify_timeout_windows() -> u32 {
        5
    }
    pub fn error_ratio() -> f64 {
        0.5
    }
    pub fn attack_findings() -> u32 {
        5
    }
    pub fn abuse_refusals() -> u32 {
        20
    }
    pub fn prefix_offenders() -> u32 {
        3
    }
    pub fn prefix_v4() -> u8 {
        24
    }
    pub fn prefix_v6() -> u8 {
        64
    }
    pub fn latency_factor() -> f64 {
        3.0
    }
    pub fn latency_floor() -> DurationSpec {
        DurationSpec::millis(100)
    }
    pub fn regression_window() -> DurationSpec {
        DurationSpec::secs(120)
    }
    pub fn regression_delta() -> f64 {
        0.2
    }
    pub fn stable_after() -> DurationSpec {
        DurationSpec::secs(30)
    }
    pub fn block_ttl() -> DurationSpec {
        DurationSpec::secs(600)
    }
    pub fn block_max_ttl() -> DurationSpec {
        DurationSpec::secs(24 * 3600)
    }
    pub fn offender_memory() -> DurationSpec {
        DurationSpec::secs(24 * 3600)
    }
    pub fn throttle_rate() -> f64 {
        10.0
    }
    pub fn throttle_min_rate() -> f64 {
        1.0
    }
    pub fn throttle_ttl() -> DurationSpec {
        DurationSpec::secs(600)
    }
    pub fn route_factor() -> f64 {
        1.5
    }
    pub fn circuit_open() -> DurationSpec {
        DurationSpec::secs(10)
    }
    pub fn circuit_max_open() -> DurationSpec {
        DurationSpec::secs(300)
    }
    pub fn probe_percent() -> u8 {
        10
    }
    pub fn min_probes() -> u64 {
        3
    }
    pub fn canary_share() -> u8 {
        50
    }
    pub fn canary_duration() -> DurationSpec {
        DurationSpec::secs(60)
    }
    pub fn good_history() -> u64 {
        10
    }
    pub fn max_traffic_share() -> u8 {
        20
    }
    pub fn max_blocks_per_minute() -> u32 {
        60
    }
    pub fn learning_step() -> f64 {
        0.25
    }
    pub fn min_factor() -> f64 {
        0.5
    }
    pub fn max_factor() -> f64 {
        4.0
    }
    pub fn hook_events() -> Vec<HookEvent> {
        vec![
            HookEvent::Opened,
            HookEvent::Escalated,
            HookEvent::Resolved,
            HookEvent::Remediation,
        ]
    }
    pub fn hook_timeout() -> DurationSpec {
        DurationSpec::secs(5)
    }
    pub fn max_incidents() -> usize {
        1_000
    }
    pub fn max_audit() -> usize {
        10_000
    }
    pub fn max_clients() -> usize {
        100_000
    }
}

/// How a hook is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookTarget {
    /// `http://host:port/path`: scheme-less authority and path kept apart.
    Webhook {
        uri: http::Uri,
    },
    Command {
        argv: Vec<String>,
    },
}

/// A checked hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub target: HookTarget,
    pub on: Vec<HookEvent>,
    pub timeout: Duration,
}

/// The `heal:` section, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct HealSettings {
    pub engine: Settings,
    pub hooks: Vec<Hook>,
    pub persist_path: Option<PathBuf>,
    pub max_clients: usize,
}

impl Default for HealSettings {
    fn default() -> Self {
        HealSettings {
            engine: Settings::default(),
            hooks: Vec::new(),
            persist_path: None,
            max_clients: defaults::max_clients(),
        }
    }
}

fn ms(d: DurationSpec) -> u64 {
    u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)
}

/// Checks and compiles the section; `None` (with problems added) when it is invalid.
pub fn compile_heal(
    config: Option<&HealConfig>,
    problems: &mut Vec<Problem>,
) -> Option<HealSettings> {
    let Some(h) = config else {
        return Some(HealSettings::default());
    };
    let before = problems.len();
    let mut problem = |message: String| problems.push(Problem::general(format!("heal.{message}")));
    if h.interval.0 < Duration::from_millis(100) {
        problem("interval must be at least 100ms".into());
    }
    if h.persist_path.as_deref() == Some("") {
        problem("persist_path is empty: name a file or leave the key out".into());
    }
    for (name, value) in [
        ("confirm_windows", h.confirm_windows),
        ("verify_windows", h.verify_windows),
        ("verify_timeout_windows", h.verify_timeout_windows),
        ("thresholds.attack_findings", h.thresholds.attack_findings),
    ] {
        if value == 0 {
            problem(format!("{name} must be at least 1"));
        }
    }
    for (name, value) in [
        ("max_incidents", h.max_incidents),
        ("max_audit", h.max_audit),
        ("max_clients", h.max_clients),
    ] {
        if value == 0 {
            problem(format!("{name} must be at least 1"));
        }
    }
    if h.thresholds.prefix_offenders < 2 {
        problem("thresholds.prefix_offenders must be at least 2".into());
    }
    for (name, value) in [
        ("thresholds.error_ratio", h.thresholds.error_ratio),
        ("rollback.regression_delta", h.rollback.regression_delta),
        ("learning.step", h.learning.step),
    ] {
        if !(value.is_finite() && value > 0.0 && value <= 1.0) {
            problem(format!(
                "{name} must be a number above 0 and at most 1, not {value}"
            ));
        }
    }
    if !(h.thresholds.latency_factor.is_finite() && h.thresholds.latency_factor >= 1.0) {
        problem(format!(
            "thresholds.latency_factor must be at least 1, not {}",
            h.thresholds.latency_factor
        ));
    }
    if h.thresholds.prefix_v4 > 32 || h.thresholds.prefix_v6 > 128 {
        problem("thresholds.prefix_v4 is 0 to 32 and prefix_v6 0 to 128".into());
    }
    if !(h.learning.min_factor.is_finite()
        && h.learning.max_factor.is_finite()
        && h.learning.min_factor > 0.0
        && h.learning.min_factor <= 1.0
        && h.learning.max_factor >= 1.0)
    {
        problem("learning.min_factor must be in (0, 1] and learning.max_factor at least 1".into());
    }
    if !(h.throttle.rate.is_finite()
        && h.throttle.min_rate.is_finite()
        && h.throttle.min_rate > 0.0
        && h.throttle.rate >= h.throttle.min_rate)
    {
        problem(
            "throttle.rate and throttle.min_rate must be above 0, rate at least min_rate".into(),
        );
    }
    if !(h.throttle.route_factor.is_finite() && h.throttle.route_factor >= 1.0) {
        problem("throttle.route_factor must be at least 1".into());
    }
    for (name, d) in [
        ("block.ttl", h.block.ttl),
        ("throttle.ttl", h.throttle.ttl),
        ("circuit.open", h.circuit.open),
        ("canary.duration", h.canary.duration),
    ] {
        if d.0.is_zero() {
            problem(format!("{name} must be longer than 0"));
        }
    }
    if h.block.max_ttl.0 < h.block.ttl.0 || h.circuit.max_open.0 < h.circuit.open.0 {
        problem(
            "block.max_ttl and circuit.max_open must be at least block.ttl and circuit.open".into(),
        );
    }
    if !(1..=100).contains(&h.circuit.probe_percent) {
        problem("circuit.probe_percent must be 1 to 100".into());
    }
    if h.circuit.min_probes == 0 || h.canary.good_history == 0 {
        problem("circuit.min_probes and canary.good_history must be at least 1".into());
    }
    if h.canary.share_percent > 100 || h.guardrails.max_traffic_share > 100 {
        problem(
            "canary.share_percent and guardrails.max_traffic_share are percentages (0 to 100)"
                .into(),
        );
    }
    let mut allowlist = Vec::new();
    for entry in &h.guardrails.allowlist {
        match entry.parse::<Net>() {
            Ok(net) => allowlist.push(net),
            Err(e) => problem(format!("guardrails.allowlist: {e}")),
        }
    }
    let mut hooks = Vec::new();
    let mut names = std::collections::HashSet::new();
    for hook in &h.hooks {
        let name = &hook.name;
        if name.is_empty() || !names.insert(name.clone()) {
            problem(format!("hooks: `{name}` is empty or used twice"));
        }
        if hook.timeout.0.is_zero() {
            problem(format!("hooks `{name}`: timeout must be longer than 0"));
        }
        let target = match (&hook.webhook, &hook.command) {
            (Some(url), None) => match url.parse::<http::Uri>() {
                Ok(uri)
                    if uri.scheme_str() == Some("http")
                        && uri.authority().is_some_and(|a| a.port_u16().is_some()) =>
                {
                    Some(HookTarget::Webhook { uri })
                }
                _ => {
                    problem(format!(
                        "hooks `{name}`: webhook `{url}` must be http://host:port/path"
                    ));
                    None
                }
            },
            (None, Some(argv)) if !argv.is_empty() && !argv[0].is_empty() => {
                Some(HookTarget::Command { argv: argv.clone() })
            }
            (None, Some(_)) => {
                problem(format!("hooks `{name}`: command needs at least a program"));
                None
            }
            _ => {
                problem(format!(
                    "hooks `{name}`: give exactly one of webhook or command"
                ));
                None
            }
        };
        if let Some(target) = target {
            hooks.push(Hook {
                name: name.clone(),
                target,
                on: hook.on.clone(),
                timeout: hook.timeout.0,
            });
        }
    }
    if problems.len() > before {
        return None;
    }
    let mode = match h.mode {
        HealMode::Off => Mode::Off,
        HealMode::Observe => Mode::Observe,
        HealMode::Enforce => Mode::Enforce,
    };
    let engine = Settings {
        mode,
        interval_ms: ms(h.interval),
        min_requests: h.min_requests,
        confirm_windows: h.confirm_windows,
        error_ratio: h.thresholds.error_ratio,
        regression_delta: h.rollback.regression_delta,
        latency_factor: h.thresholds.latency_factor,
        latency_floor_ms: h.thresholds.latency_floor.0.as_secs_f64() * 1000.0,
        regression_window_ms: ms(h.rollback.regression_window),
        stable_after_ms: ms(h.rollback.stable_after),
        attack_findings: h.thresholds.attack_findings,
        abuse_refusals: h.thresholds.abuse_refusals,
        prefix_offenders: h.thresholds.prefix_offenders,
        prefix_v4: h.thresholds.prefix_v4,
        prefix_v6: h.thresholds.prefix_v6,
        block_ttl_ms: ms(h.block.ttl),
        max_block_ttl_ms: ms(h.block.max_ttl),
        offender_memory_ms: ms(h.block.offender_memory),
        throttle_rate: h.throttle.rate,
        throttle_min_rate: h.throttle.min_rate,
        throttle_ttl_ms: ms(h.throttle.ttl),
        route_throttle_factor: h.throttle.route_factor,
        circuit_open_ms: ms(h.circuit.open),
        circuit_max_open_ms: ms(h.circuit.max_open),
        probe_percent: h.circuit.probe_percent,
        min_probes: h.circuit.min_probes,
        canary: apiguard_heal::settings::CanarySettings {
            enabled: h.canary.enabled,
            share_percent: h.canary.share_percent,
            duration_ms: ms(h.canary.duration),
            good_history: h.canary.good_history,
        },
        guardrails: apiguard_heal::settings::Guardrails {
            max_traffic_share: f64::from(h.guardrails.max_traffic_share) / 100.0,
            max_blocks_per_minute: h.guardrails.max_blocks_per_minute,
            allowlist,
        },
        learning: apiguard_heal::settings::LearningSettings {
            enabled: h.learning.enabled,
            step: h.learning.step,
            min_factor: h.learning.min_factor,
            max_factor: h.learning.max_factor,
        },
        verify_windows: h.verify_windows,
        verify_timeout_windows: h.verify_timeout_windows,
        remediation_hook: hooks.iter().any(|k| k.on.contains(&HookEvent::Remediation)),
        max_incidents: h.max_incidents,
        max_audit: h.max_audit,
    };
    Some(HealSettings {
        engine,
        hooks,
        persist_path: h.persist_path.as_ref().map(PathBuf::from),
        max_clients: h.max_clients,
    })
}
