//! Self-healing in the gateway: a background task that builds one window per decision
//! interval (from the security event stream, the metrics and the pools), runs the pure
//! engine of `apiguard-heal`, and carries out its commands on the enforcement state (block
//! rules, throttles), the circuits, the configuration (rollback) and the hooks. The request
//! path only reads the circuits and writes the client ledger.

pub mod admin;
pub mod config;
pub mod hooks;
pub mod ledger;
pub mod window;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use apiguard_heal::{ActionSpec, CircuitPhase, Command, Healer, Mode, Target, ThrottleTarget};
use apiguard_model::event::now_ms;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::{broadcast, mpsc, watch};

use crate::circuit::Circuits;
use crate::enforcement::{BlockRule, BlockTarget, Enforcement};
use crate::runtime::Gateway;
use crate::throttle::{Throttle, ThrottleScope};
use config::HealSettings;
use hooks::{HookResult, Hooks};
use ledger::Ledger;
use window::WindowBuilder;

/// What the request path reads and writes; it outlives configuration reloads.
pub struct HealState {
    pub circuits: Circuits,
    pub ledger: Ledger,
}

/// Self-healing's metrics.
pub struct HealMetrics {
    incidents: IntGaugeVec,
    actions: IntCounterVec,
    circuits: IntGaugeVec,
    thresholds: GaugeVec,
}

impl HealMetrics {
    fn new(registry: &Registry) -> HealMetrics {
        let incidents = IntGaugeVec::new(
            Opts::new(
                "heal_incidents",
                "Self-healing incidents by state (normal: closed incidents kept)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let actions = IntCounterVec::new(
            Opts::new(
                "heal_actions_total",
                "Self-healing actions by kind and outcome (applied, verified, failed, refused, reverted, promoted, closed, reopened, expired, observed)",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let circuits = IntGaugeVec::new(
            Opts::new("heal_circuits", "Circuits by phase (open, half_open)"),
            &["phase"],
        )
        .expect("valid metric");
        let thresholds = GaugeVec::new(
            Opts::new(
                "heal_threshold",
                "Self-healing thresholds in effect after learning",
            ),
            &["name"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(incidents.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(actions.clone()),
            Box::new(circuits.clone()),
            Box::new(thresholds.clone()),
        ] {
            // Registering twice (a second gateway on one registry) is the only failure, and
            // the metrics then still count.
            let _ = registry.register(collector);
        }
        HealMetrics {
            incidents,
            actions,
            circuits,
            thresholds,
        }
    }
}

/// The engine and what it acts through.
pub struct HealHandle {
    pub state: Arc<HealState>,
    healer: Mutex<Healer>,
    metrics: HealMetrics,
    persist_path: Option<PathBuf>,
}

impl HealHandle {
    /// Creates the engine, continuing from the persisted state when `persist_path` has one.
    pub fn new(settings: &HealSettings, registry: &Registry) -> HealHandle {
        let restored = settings.persist_path.as_ref().and_then(|path| {
            match apiguard_heal::store::load(path) {
                Ok(state) => {
                    if let Some(state) = &state {
                        tracing::info!(file = %path.display(), incidents = state.incidents.len(), "self-healing state loaded");
                    }
                    state
                }
                Err(error) => {
                    tracing::warn!(%error, "self-healing state not loaded: starting afresh");
                    None
                }
            }
        });
        let state = Arc::new(HealState {
            circuits: Circuits::new(),
            ledger: Ledger::new(settings.max_clients),
        });
        state.ledger.set_enabled(
            settings.engine.mode != Mode::Off,
            settings.engine.canary.good_history,
        );
        HealHandle {
            state,
            healer: Mutex::new(Healer::new(settings.engine.clone(), restored)),
            metrics: HealMetrics::new(registry),
            persist_path: settings.persist_path.clone(),
        }
    }

    /// Reads the engine (admin views).
    pub fn read<R>(&self, f: impl FnOnce(&Healer) -> R) -> R {
        f(&self.healer.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts persisted blocks and throttles back in effect (at start).
    pub fn restore(&self, enforcement: &Enforcement) {
        let commands = self
            .healer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(now_ms());
        for command in commands {
            if let Command::Reinstate {
                action,
                spec,
                until_ms,
            } = command
            {
                let _ = install(
                    enforcement,
                    action,
                    &spec,
                    until_ms,
                    "reinstated after a restart",
                );
            }
        }
    }

    /// Writes the state to `persist_path`, if set.
    pub fn save(&self) {
        let Some(path) = &self.persist_path else {
            return;
        };
        let state = self
            .healer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .persisted();
        if let Err(error) = apiguard_heal::store::save(path, &state) {
            tracing::warn!(%error, "self-healing state not saved");
        }
    }
}

/// The enforcement rule target of a heal target (both read and write the same text).
fn block_target(target: &Target) -> Option<BlockTarget> {
    target.to_string().parse().ok()
}

fn throttle_scope(target: &ThrottleTarget) -> ThrottleScope {
    match target {
        ThrottleTarget::Client(net) => ThrottleScope::Client(*net),
        ThrottleTarget::Identity(subject) => ThrottleScope::Identity(subject.clone()),
        ThrottleTarget::Route(id) => ThrottleScope::Route(id.clone()),
    }
}

fn indicator(action: u64) -> String {
    format!("heal-action-{action}")
}

/// Puts a block or throttle in effect until `until_ms`.
fn install(
    enforcement: &Enforcement,
    action: u64,
    spec: &ActionSpec,
    until_ms: u64,
    why: &str,
) -> Result<(), String> {
    let now = now_ms();
    match spec {
        ActionSpec::Block {
            target,
            canary_percent,
            ..
        } => {
            let target =
                block_target(target).ok_or_else(|| format!("`{target}` is not a block target"))?;
            enforcement.insert(BlockRule {
                target,
                until_ms,
                source: "heal".into(),
                reason: format!("self-healing action #{action} ({why})"),
                indicator: Some(indicator(action)),
                created_ms: now,
                canary_percent: *canary_percent,
            });
            Ok(())
        }
        ActionSpec::Throttle {
            target, rate_per_s, ..
        } => {
            enforcement.throttles.insert(Throttle::new(
                throttle_scope(target),
                *rate_per_s,
                until_ms,
                format!("self-healing action #{action} ({why})"),
            ));
            Ok(())
        }
        _ => Err("only blocks and throttles are installed this way".into()),
    }
}

/// Starts the task; it ends with the gateway or at shutdown.
pub fn start(gateway: &Arc<Gateway>, shutdown: watch::Receiver<bool>) {
    let events = gateway.subscribe();
    tokio::spawn(run(Arc::downgrade(gateway), events, shutdown));
}

async fn run(
    gateway: Weak<Gateway>,
    mut events: broadcast::Receiver<Arc<apiguard_model::SecurityEvent>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (results_tx, mut results) = mpsc::channel::<HookResult>(256);
    let hooks = Hooks::new(results_tx);
    let mut builder = WindowBuilder::new(now_ms());
    let mut last_admin_block_ms = now_ms();
    let mut next = tokio::time::Instant::now();
    loop {
        let interval = match gateway.upgrade() {
            Some(g) => Duration::from_millis(g.snapshot().heal.engine.interval_ms.max(100)),
            None => return,
        };
        next += interval;
        let now_instant = tokio::time::Instant::now();
        if next < now_instant {
            // Fell behind (a slow save or a stalled runtime): start afresh from now.
            next = now_instant + interval;
        }
        let deadline = tokio::time::sleep_until(next);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                received = events.recv() => match received {
                    Ok(event) => builder.event(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => builder.missed(n),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(result) = results.recv() => {
                    if let Some(g) = gateway.upgrade() {
                        g.heal().healer.lock().unwrap_or_else(|e| e.into_inner()).hook_result(
                            result.incident,
                            result.action,
                            now_ms(),
                            result.text,
                        );
                    }
                }
                _ = &mut deadline => break,
                _ = shutdown.changed() => return,
            }
        }
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let save = tick(&gateway, &mut builder, &hooks, &mut last_admin_block_ms);
        if save {
            let gateway = gateway.clone();
            let _ = tokio::task::spawn_blocking(move || gateway.heal().save()).await;
        }
    }
}

/// One decision: returns whether the state should be saved.
fn tick(
    gateway: &Gateway,
    builder: &mut WindowBuilder,
    hooks: &Hooks,
    last_admin_block_ms: &mut u64,
) -> bool {
    let handle = gateway.heal();
    let snapshot = gateway.snapshot();
    let settings = snapshot.heal.clone();
    let now = now_ms();
    let ledger = &handle.state.ledger;
    ledger.set_enabled(
        settings.engine.mode != Mode::Off,
        settings.engine.canary.good_history,
    );
    let ended = ledger.advance(now);
    let enforcement = gateway.enforcement();
    enforcement.throttles.purge_expired(now);
    let mut window = builder.finish(now, &snapshot, gateway.metrics(), &handle.state.circuits);
    let mut healer = handle.healer.lock().unwrap_or_else(|e| e.into_inner());
    healer.configure(settings.engine.clone());
    if settings.engine.mode == Mode::Off {
        // Off means nothing of heal acts: circuits it left open would hold traffic forever.
        for circuit in handle.state.circuits.list() {
            handle.state.circuits.close(&circuit.key);
        }
        return false;
    }
    for (client, c) in &mut window.clients {
        c.clean = ledger.clean_in(client, ended);
        if c.flagged > 0 {
            // A history is what a client did before it first misbehaved.
            ledger.mark_flagged(client, ended, c.flagged);
        }
    }
    for (id, target) in healer.blocks_in_effect() {
        let until = healer.action(id).map_or(0, |a| a.until_ms);
        let present = block_target(&target).is_some_and(|t| enforcement.rule(&t).is_some());
        if !present && until > now + 1_000 {
            window.removed_by_operator.push(id);
        }
    }
    for rule in enforcement.rules() {
        if rule.source == "admin" && rule.created_ms > *last_admin_block_ms {
            *last_admin_block_ms = rule.created_ms;
            if let Ok(target) = rule.target.to_string().parse() {
                window.operator_blocks.push(target);
            }
        }
    }
    tracing::trace!(target: "apiguard::heal", window = ?window, "decision window");
    let commands = healer.tick(&window, &ledger.view(ended));
    execute(gateway, &mut healer, &settings, hooks, commands);
    // Applying can produce follow-up notifications (a failed action); they leave with the
    // next tick.
    for (kind, outcome) in healer.take_outcomes() {
        handle
            .metrics
            .actions
            .with_label_values(&[kind.as_str(), outcome])
            .inc();
    }
    update_gauges(handle, &healer);
    if window.total_requests > 0 || !window.clients.is_empty() {
        ledger.prune(now, 3_600_000);
    }
    healer.take_dirty()
}

fn update_gauges(handle: &HealHandle, healer: &Healer) {
    let m = &handle.metrics;
    for state in apiguard_heal::State::ALL {
        let n = healer
            .incidents()
            .iter()
            .filter(|i| i.state == state)
            .count();
        m.incidents
            .with_label_values(&[state.as_str()])
            .set(n as i64);
    }
    let (mut open, mut half) = (0, 0);
    for c in handle.state.circuits.list() {
        match c.phase {
            CircuitPhase::Open { .. } => open += 1,
            CircuitPhase::HalfOpen { .. } => half += 1,
        }
    }
    m.circuits.with_label_values(&["open"]).set(open);
    m.circuits.with_label_values(&["half_open"]).set(half);
    let t = healer.thresholds();
    m.thresholds
        .with_label_values(&["error_ratio"])
        .set(t.error_ratio);
    m.thresholds
        .with_label_values(&["attack_findings"])
        .set(t.attack_findings);
    m.thresholds
        .with_label_values(&["prefix_offenders"])
        .set(t.prefix_offenders);
}

/// The JSON hooks receive.
fn payload(healer: &Healer, gateway: &Gateway, incident: u64, event: &str) -> serde_json::Value {
    let record = healer.incident(incident);
    let actions: Vec<_> = record
        .map(|i| i.actions.iter().filter_map(|a| healer.action(*a)).collect())
        .unwrap_or_default();
    serde_json::json!({
        "event": event,
        "incident": record,
        "actions": actions,
        "config_version": gateway.snapshot().version,
        "at_ms": now_ms(),
    })
}

/// Carries out the engine's commands.
fn execute(
    gateway: &Gateway,
    healer: &mut Healer,
    settings: &HealSettings,
    hooks: &Hooks,
    commands: Vec<Command>,
) {
    let enforcement = gateway.enforcement();
    let circuits = &gateway.heal().state.circuits;
    for command in commands {
        let now = now_ms();
        match command {
            Command::Apply { action, spec } => {
                let result = match &spec {
                    ActionSpec::Block { .. } | ActionSpec::Throttle { .. } => install(
                        enforcement,
                        action,
                        &spec,
                        now.saturating_add(spec.ttl_ms()),
                        "applied",
                    )
                    .map(|()| None),
                    ActionSpec::Circuit {
                        key,
                        open_ms,
                        fallback,
                    } => {
                        let snapshot = gateway.snapshot();
                        match fallback {
                            Some(pool) if !snapshot.pools.contains_key(pool) => {
                                Err(format!("the fallback pool `{pool}` no longer exists"))
                            }
                            _ => {
                                circuits.set(
                                    key.clone(),
                                    CircuitPhase::Open {
                                        until_ms: now.saturating_add(*open_ms),
                                    },
                                    fallback.clone(),
                                    action,
                                );
                                Ok(None)
                            }
                        }
                    }
                    ActionSpec::Rollback { to_version, .. } => {
                        gateway.rollback_to(*to_version, "heal").map(Some)
                    }
                    ActionSpec::Hook { .. } => {
                        let incident = healer.action(action).map_or(0, |a| a.incident);
                        let body = payload(healer, gateway, incident, "remediation");
                        match hooks.call(
                            &settings.hooks,
                            "remediation",
                            &body,
                            incident,
                            Some(action),
                        ) {
                            0 => Err("no hook follows `remediation`".into()),
                            _ => Ok(None),
                        }
                    }
                };
                // Applying can take a while (a rollback compiles a configuration): the
                // action is in effect from when it finished.
                let now = now_ms();
                match &result {
                    Ok(_) => {
                        tracing::warn!(target: "apiguard::security", action, what = %spec.describe(), "self-healing action applied")
                    }
                    Err(error) => {
                        tracing::error!(target: "apiguard::security", action, what = %spec.describe(), %error, "self-healing action could not be applied")
                    }
                }
                healer.applied(action, result, now);
            }
            Command::Reinstate {
                action,
                spec,
                until_ms,
            } => {
                let _ = install(enforcement, action, &spec, until_ms, "reinstated");
            }
            Command::Revert { action, spec } => {
                match &spec {
                    ActionSpec::Block { target, .. } => {
                        if let Some(target) = block_target(target) {
                            let ours = indicator(action);
                            enforcement.remove_if(&target, |r| {
                                r.indicator.as_deref() == Some(ours.as_str())
                            });
                        }
                    }
                    ActionSpec::Throttle { target, .. } => {
                        enforcement.throttles.remove(&throttle_scope(target));
                    }
                    ActionSpec::Circuit { key, .. } => {
                        // Only the circuit this action set (a later action may own it now).
                        if circuits
                            .list()
                            .iter()
                            .any(|c| &c.key == key && c.action == action)
                        {
                            circuits.close(key);
                        }
                    }
                    ActionSpec::Rollback { .. } | ActionSpec::Hook { .. } => {}
                }
                tracing::warn!(target: "apiguard::security", action, what = %spec.describe(), "self-healing action undone");
            }
            Command::Promote { target, .. } => {
                if let Some(target) = block_target(&target) {
                    enforcement.promote(&target);
                }
            }
            Command::SetCircuit {
                action,
                key,
                phase,
                fallback,
            } => circuits.set(key, phase, fallback, action),
            Command::MarkKnownGood { version } => {
                gateway.mark_known_good(version);
            }
            Command::Notify { incident, event } => {
                let body = payload(healer, gateway, incident, event);
                hooks.call(&settings.hooks, event, &body, incident, None);
            }
        }
    }
}
