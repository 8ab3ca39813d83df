//! The engine: one `tick` per decision window drives every incident through the state
//! machine and every action through its life, and returns the commands the gateway carries
//! out. Pure: time comes from the window, traffic questions go through [`Traffic`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use crate::action::{
    ActionKind, ActionRecord, ActionSpec, ActionState, CircuitKey, CircuitPhase, Command,
};
use crate::guardrail::{self, GuardContext};
use crate::incident::{Incident, State};
use crate::learning::{Lesson, Threshold, Thresholds};
use crate::net::Net;
use crate::observe::{ConfigChange, Traffic, Window};
use crate::planner::{self, PlanContext};
use crate::settings::{Mode, Settings};
use crate::store::{AuditEntry, Offender, Persisted};
use crate::symptom::{self, Baselines, DetectContext, Symptom};
use crate::target::{ClientKey, Target};

/// Windows in a row a client may show findings below the attack threshold before the
/// threshold is judged too high.
const NEAR_MISS_WINDOWS: u32 = 3;
/// How long a flagged client is remembered (to learn from operators' blocks).
const FLAGGED_MEMORY_MS: u64 = 600_000;
const MAX_TRACKED_CLIENTS: usize = 10_000;
/// Half-open windows without probes after which a circuit closes (no traffic to judge).
const MAX_IDLE_PROBE_WINDOWS: u32 = 10;

/// The self-healing engine.
pub struct Healer {
    settings: Settings,
    state: Persisted,
    thresholds: Thresholds,
    baselines: Baselines,
    /// The last configuration change not made by heal.
    last_change: Option<ConfigChange>,
    current_version: u64,
    /// The newest version whose change was taken into account.
    seen_version: u64,
    version_since_ms: u64,
    requests_since_change: u64,
    known_good: Option<u64>,
    /// Versions heal applied itself (rollbacks): never blamed.
    heal_versions: BTreeSet<u64>,
    near_miss: BTreeMap<ClientKey, u32>,
    /// Flagged clients: when last, from where, with which fingerprint.
    recent_flagged: BTreeMap<ClientKey, (u64, Vec<IpAddr>, Option<u64>)>,
    block_times: VecDeque<u64>,
    /// Group rules (prefixes, fingerprints) whose canary hurt legitimate clients: not proposed
    /// again until then.
    prefix_cooldown: BTreeMap<Target, u64>,
    outcomes: Vec<(ActionKind, &'static str)>,
    /// Notifications from transitions made between ticks (`applied`).
    queued: Vec<(u64, &'static str)>,
    dirty: bool,
}

/// Kinds of incidents that say the configuration in effect is not healthy.
const ERROR_KINDS: [&str; 4] = [
    "config_regression",
    "upstream_failing",
    "route_failing",
    "latency_regression",
];

impl Healer {
    /// A new engine, continuing from `restored` state when there is one.
    pub fn new(settings: Settings, restored: Option<Persisted>) -> Healer {
        let mut state = restored.unwrap_or_default();
        let mut thresholds = state
            .thresholds
            .take()
            .unwrap_or_else(|| Thresholds::from_settings(&settings));
        thresholds.clamp_to(&settings);
        Healer {
            settings,
            state,
            thresholds,
            baselines: Baselines::default(),
            last_change: None,
            current_version: 0,
            seen_version: 0,
            version_since_ms: 0,
            requests_since_change: 0,
            known_good: None,
            heal_versions: BTreeSet::new(),
            near_miss: BTreeMap::new(),
            recent_flagged: BTreeMap::new(),
            block_times: VecDeque::new(),
            prefix_cooldown: BTreeMap::new(),
            outcomes: Vec::new(),
            queued: Vec::new(),
            dirty: false,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes new settings (a reload); learned thresholds are kept inside the new bounds.
    pub fn configure(&mut self, settings: Settings) {
        if settings != self.settings {
            self.thresholds.clamp_to(&settings);
            self.settings = settings;
        }
    }

    pub fn incidents(&self) -> &[Incident] {
        &self.state.incidents
    }

    pub fn incident(&self, id: u64) -> Option<&Incident> {
        self.state
            .incidents
            .binary_search_by_key(&id, |i| i.id)
            .ok()
            .map(|at| &self.state.incidents[at])
    }

    pub fn actions(&self) -> &[ActionRecord] {
        &self.state.actions
    }

    pub fn action(&self, id: u64) -> Option<&ActionRecord> {
        self.state
            .actions
            .binary_search_by_key(&id, |a| a.id)
            .ok()
            .map(|at| &self.state.actions[at])
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    pub fn audit(&self) -> &VecDeque<AuditEntry> {
        &self.state.audit
    }

    pub fn known_good(&self) -> Option<u64> {
        self.known_good
    }

    /// The state to persist (thresholds included).
    pub fn persisted(&self) -> Persisted {
        let mut state = self.state.clone();
        state.thresholds = Some(self.thresholds.clone());
        state
    }

    /// Whether something worth persisting changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Action outcomes since the last call, for metrics: (kind, outcome).
    pub fn take_outcomes(&mut self) -> Vec<(ActionKind, &'static str)> {
        std::mem::take(&mut self.outcomes)
    }

    /// Heal's block rules in effect: (action, target), so the gateway can notice the ones an
    /// operator removed.
    pub fn blocks_in_effect(&self) -> Vec<(u64, Target)> {
        self.state
            .actions
            .iter()
            .filter(|a| a.state.in_effect())
            .filter_map(|a| match &a.spec {
                ActionSpec::Block { target, .. } => Some((a.id, target.clone())),
                _ => None,
            })
            .collect()
    }

    /// After a restart: the commands that put persisted blocks and throttles back in effect.
    /// Circuits start closed (the upstream may have recovered meanwhile) and actions that
    /// were never confirmed are failed.
    pub fn restore(&mut self, now_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        for a in &mut self.state.actions {
            if !a.state.in_effect() {
                continue;
            }
            match &a.spec {
                ActionSpec::Block { .. } | ActionSpec::Throttle { .. }
                    if a.state != ActionState::Pending =>
                {
                    if a.until_ms > now_ms {
                        out.push(Command::Reinstate {
                            action: a.id,
                            spec: a.spec.clone(),
                            until_ms: a.until_ms,
                        });
                        a.note(now_ms, "reinstated after a restart");
                    } else {
                        a.state = ActionState::Ended;
                        a.note(now_ms, "expired while the gateway was down");
                    }
                }
                ActionSpec::Circuit { .. } => {
                    a.state = ActionState::Ended;
                    a.note(now_ms, "the gateway restarted; circuits start closed");
                }
                ActionSpec::Rollback { .. } | ActionSpec::Hook { .. }
                    if a.state != ActionState::Pending =>
                {
                    a.state = ActionState::Ended;
                }
                _ => {
                    a.state = ActionState::Failed;
                    a.note(now_ms, "the gateway restarted before it was confirmed");
                }
            }
            notes.push(a.id);
        }
        let stuck: Vec<u64> = self
            .state
            .incidents
            .iter()
            .filter(|i| i.state == State::Remediation)
            .map(|i| i.id)
            .collect();
        for id in stuck {
            self.transition(
                id,
                State::Analysis,
                now_ms,
                "the gateway restarted during remediation",
                vec![],
                &mut out,
            );
        }
        if !notes.is_empty() {
            self.record(
                now_ms,
                None,
                None,
                format!("restarted: {} persisted actions looked at", notes.len()),
                vec![],
            );
        }
        out
    }

    /// One decision window: returns what the gateway must do.
    pub fn tick(&mut self, window: &Window, traffic: &dyn Traffic) -> Vec<Command> {
        let mut out = Vec::new();
        if self.settings.mode == Mode::Off {
            return out;
        }
        let now = window.end_ms;
        for (incident, event) in self.queued.drain(..) {
            out.push(Command::Notify { incident, event });
        }
        self.track_config(window, now, &mut out);
        for (client, c) in &window.clients {
            if c.flagged > 0 {
                self.recent_flagged
                    .insert(client.clone(), (now, c.addresses.clone(), c.fingerprint));
            }
        }
        self.operator_feedback(window, now);
        self.maintain_actions(window, traffic, now, &mut out);
        let symptoms = self.detect(window, now);
        self.verify(window, &symptoms, now, &mut out);
        self.follow_symptoms(window, symptoms, now, &mut out);
        self.analyse(window, traffic, now, &mut out);
        // Judged after this window's symptoms, so a version that just broke something is
        // never marked good.
        self.mark_known_good(now, &mut out);
        self.learn_near_misses(window, now);
        let frozen = self.routes_under_incident(window);
        self.baselines
            .learn(window, self.settings.min_requests, &frozen);
        self.prune(now);
        out
    }

    /// The gateway's answer to an `Apply`: `Ok` with the new configuration version for a
    /// rollback, or why it could not be done.
    pub fn applied(&mut self, action: u64, result: Result<Option<u64>, String>, now_ms: u64) {
        let Some(at) = self.action_index(action) else {
            return;
        };
        let canary = self.settings.canary.duration_ms;
        let a = &mut self.state.actions[at];
        let incident = a.incident;
        let kind = a.kind;
        let spec = a.spec.clone();
        let mut out = Vec::new();
        match result {
            Ok(new_version) => {
                let ttl = a.spec.ttl_ms();
                a.until_ms = if ttl > 0 {
                    now_ms.saturating_add(ttl)
                } else {
                    0
                };
                a.state = match &a.spec {
                    ActionSpec::Block {
                        canary_percent: Some(_),
                        ..
                    } => {
                        a.canary_until_ms = Some(now_ms.saturating_add(canary));
                        ActionState::Canary
                    }
                    _ => ActionState::Active,
                };
                a.note(now_ms, format!("applied: {}", a.spec.describe()));
                self.outcomes.push((kind, "applied"));
                match &spec {
                    ActionSpec::Block { target, .. } => {
                        self.block_times.push_back(now_ms);
                        self.remember_offender(target.clone(), now_ms);
                    }
                    ActionSpec::Rollback { to_version, .. } => {
                        if let Some(version) = new_version {
                            self.heal_versions.insert(version);
                            self.seen_version = self.seen_version.max(version);
                            self.version_since_ms = now_ms;
                            self.requests_since_change = 0;
                            // The new version runs the known good text.
                            self.known_good = Some(version);
                            self.current_version = version;
                        }
                        let _ = to_version;
                    }
                    _ => {}
                }
                if let Some(i) = self.incident_index(incident) {
                    let inc = &mut self.state.incidents[i];
                    inc.mitigated_ms.get_or_insert(now_ms);
                    if inc.state == State::Remediation {
                        self.transition(
                            incident,
                            State::Verification,
                            now_ms,
                            format!("action #{action} in effect"),
                            vec![spec.describe()],
                            &mut out,
                        );
                    }
                }
                self.record(
                    now_ms,
                    Some(incident),
                    Some(action),
                    format!("applied: {}", spec.describe()),
                    vec![],
                );
            }
            Err(reason) => {
                a.state = ActionState::Failed;
                a.note(now_ms, format!("could not be applied: {reason}"));
                self.outcomes.push((kind, "failed"));
                self.record(
                    now_ms,
                    Some(incident),
                    Some(action),
                    format!("could not apply: {}", spec.describe()),
                    vec![reason.clone()],
                );
                if self
                    .incident_index(incident)
                    .is_some_and(|i| self.state.incidents[i].state == State::Remediation)
                {
                    self.transition(
                        incident,
                        State::Analysis,
                        now_ms,
                        format!("action #{action} could not be applied"),
                        vec![reason],
                        &mut out,
                    );
                }
            }
        }
        // Notifications from these transitions go out with the next tick's commands.
        self.pending_notes(out);
    }

    /// Records a hook's result in the audit trail (and in the action's history when the hook
    /// ran as a remediation step).
    pub fn hook_result(&mut self, incident: u64, action: Option<u64>, now_ms: u64, text: String) {
        if let Some(at) = action.and_then(|a| self.action_index(a)) {
            self.state.actions[at].note(now_ms, text.clone());
        }
        self.record(now_ms, Some(incident), action, text, vec![]);
    }

    fn pending_notes(&mut self, commands: Vec<Command>) {
        // Transitions made outside a tick only produce notifications; keep them for the next
        // tick's output rather than dropping them.
        for command in commands {
            if let Command::Notify { incident, event } = command {
                self.queued.push((incident, event));
            }
        }
    }
}

/// The private steps of a tick.
impl Healer {
    fn incident_index(&self, id: u64) -> Option<usize> {
        self.state
            .incidents
            .binary_search_by_key(&id, |i| i.id)
            .ok()
    }

    fn action_index(&self, id: u64) -> Option<usize> {
        self.state.actions.binary_search_by_key(&id, |a| a.id).ok()
    }

    fn open_incident(&self, subject: &str) -> Option<usize> {
        self.state
            .incidents
            .iter()
            .rposition(|i| i.is_open() && i.subject == subject)
    }

    /// Appends to the audit trail.
    fn record(
        &mut self,
        at_ms: u64,
        incident: Option<u64>,
        action: Option<u64>,
        what: String,
        evidence: Vec<String>,
    ) {
        self.state.audit.push_back(AuditEntry {
            at_ms,
            incident,
            action,
            what,
            evidence,
        });
        while self.state.audit.len() > self.settings.max_audit.max(1) {
            self.state.audit.pop_front();
        }
        self.dirty = true;
    }

    /// Moves an incident, audits it, and queues the notifications hooks care about.
    fn transition(
        &mut self,
        id: u64,
        to: State,
        now: u64,
        reason: impl Into<String>,
        evidence: Vec<String>,
        out: &mut Vec<Command>,
    ) -> bool {
        let Some(at) = self.incident_index(id) else {
            return false;
        };
        let reason = reason.into();
        let incident = &mut self.state.incidents[at];
        let from = incident.state;
        if let Err(invalid) = incident.move_to(to, now, reason.clone(), evidence.clone()) {
            // A bug in the engine: keep running, leave a trace.
            self.record(
                now,
                Some(id),
                None,
                format!("refused transition: {invalid}"),
                vec![],
            );
            return false;
        }
        if to == State::Normal && incident.outcome.is_none() {
            incident.outcome = Some(reason.clone());
        }
        self.record(
            now,
            Some(id),
            None,
            format!("{} → {}: {reason}", from.as_str(), to.as_str()),
            evidence,
        );
        match to {
            State::Escalated => out.push(Command::Notify {
                incident: id,
                event: "escalated",
            }),
            State::Normal => out.push(Command::Notify {
                incident: id,
                event: "resolved",
            }),
            _ => {}
        }
        true
    }

    fn new_action(&mut self, incident: u64, spec: ActionSpec, state: ActionState, now: u64) -> u64 {
        let id = self.state.next_action;
        self.state.next_action += 1;
        self.state.actions.push(ActionRecord {
            id,
            incident,
            kind: spec.kind(),
            spec,
            state,
            created_ms: now,
            until_ms: 0,
            canary_until_ms: None,
            reopened: 0,
            idle_windows: 0,
            notes: Vec::new(),
        });
        if let Some(at) = self.incident_index(incident) {
            self.state.incidents[at].actions.push(id);
        }
        id
    }

    fn remember_offender(&mut self, target: Target, now: u64) {
        let memory = self.settings.offender_memory_ms;
        match self.state.offenders.iter_mut().find(|o| o.target == target) {
            Some(o) => {
                if now.saturating_sub(o.last_ms) > memory {
                    o.blocks = 0;
                }
                o.blocks = o.blocks.saturating_add(1);
                o.last_ms = now;
            }
            None => self.state.offenders.push(Offender {
                target,
                blocks: 1,
                last_ms: now,
            }),
        }
    }

    /// The TTL of the next block on `target`: doubled for each block it had recently.
    fn block_ttl(&self, target: &Target, now: u64) -> u64 {
        let s = &self.settings;
        let previous = self
            .state
            .offenders
            .iter()
            .find(|o| o.target == *target && now.saturating_sub(o.last_ms) <= s.offender_memory_ms)
            .map_or(0, |o| o.blocks);
        let factor = 1u64 << previous.min(32);
        s.block_ttl_ms
            .saturating_mul(factor)
            .min(s.max_block_ttl_ms.max(s.block_ttl_ms))
    }

    fn track_config(&mut self, window: &Window, _now: u64, _out: &mut Vec<Command>) {
        if self.version_since_ms == 0 {
            self.version_since_ms = window.start_ms;
        }
        let mut changes = window.config_changes.clone();
        // The snapshot can be newer than the events (a reload finishing during the tick):
        // the change counts from now, and its event, when it comes, only moves its time.
        if self.current_version > 0
            && window.config_version > self.seen_version
            && !changes.iter().any(|c| c.version == window.config_version)
        {
            changes.push(ConfigChange {
                version: window.config_version,
                at_ms: window.end_ms,
            });
        }
        for change in changes {
            if change.version <= self.seen_version {
                if let Some(last) = &mut self.last_change
                    && last.version == change.version
                {
                    last.at_ms = last.at_ms.min(change.at_ms);
                }
                continue;
            }
            self.seen_version = change.version;
            if !self.heal_versions.contains(&change.version) {
                self.last_change = Some(change.clone());
            }
            self.version_since_ms = change.at_ms;
            self.requests_since_change = 0;
        }
        if window.config_version > 0 {
            self.current_version = window.config_version;
            self.seen_version = self.seen_version.max(window.config_version);
        }
        self.requests_since_change += window.total_requests;
    }

    /// Marks the version in effect known good once it served long enough without an error
    /// incident.
    fn mark_known_good(&mut self, now: u64, out: &mut Vec<Command>) {
        let unhealthy = self
            .state
            .incidents
            .iter()
            .any(|i| i.is_open() && ERROR_KINDS.contains(&i.kind.as_str()));
        let served = now.saturating_sub(self.version_since_ms);
        if self.current_version > 0
            && self.known_good != Some(self.current_version)
            && served >= self.settings.stable_after_ms
            && self.requests_since_change >= self.settings.min_requests
            && !unhealthy
        {
            self.known_good = Some(self.current_version);
            out.push(Command::MarkKnownGood {
                version: self.current_version,
            });
            self.record(
                now,
                None,
                None,
                format!(
                    "configuration version {} is known good",
                    self.current_version
                ),
                vec![format!(
                    "served {} ms and {} requests without an error incident",
                    served, self.requests_since_change
                )],
            );
        }
    }

    fn operator_feedback(&mut self, window: &Window, now: u64) {
        for &id in &window.removed_by_operator {
            let Some(at) = self.action_index(id) else {
                continue;
            };
            let a = &mut self.state.actions[at];
            if !a.state.in_effect() {
                continue;
            }
            a.state = ActionState::Reverted;
            a.note(now, "removed by an operator before it expired");
            let (incident, kind) = (a.incident, a.kind);
            let threshold = match &a.spec {
                ActionSpec::Block { target, .. } if !target.is_single_client() => {
                    Threshold::PrefixOffenders
                }
                _ => Threshold::AttackFindings,
            };
            self.outcomes.push((kind, "reverted"));
            self.record(
                now,
                Some(incident),
                Some(id),
                "an operator removed the rule: counted as a false alarm".into(),
                vec![],
            );
            self.lesson(
                threshold,
                Lesson::FalseAlarm,
                now,
                format!("an operator removed the rule of action #{id}"),
            );
        }
        for rule in &window.operator_blocks {
            let covered = self
                .blocks_in_effect()
                .iter()
                .any(|(_, target)| target.overlaps(rule));
            let seen = self
                .recent_flagged
                .iter()
                .any(|(client, (at, addresses, fingerprint))| {
                    rule.covers(client, addresses, *fingerprint)
                        && now.saturating_sub(*at) <= FLAGGED_MEMORY_MS
                });
            if seen && !covered {
                self.lesson(
                    Threshold::AttackFindings,
                    Lesson::Missed,
                    now,
                    format!("an operator blocked {rule}, which had findings heal did not act on"),
                );
            }
        }
    }

    fn lesson(&mut self, threshold: Threshold, lesson: Lesson, now: u64, reason: String) {
        if let Some(change) =
            self.thresholds
                .learn(threshold, lesson, &self.settings, now, reason.clone())
        {
            self.record(
                now,
                None,
                None,
                format!(
                    "threshold {:?} moved from {:.2} to {:.2}",
                    change.threshold, change.from, change.to
                ),
                vec![reason],
            );
        }
    }

    /// Expiry, canary verdicts and circuit phases of the actions in effect.
    fn maintain_actions(
        &mut self,
        window: &Window,
        traffic: &dyn Traffic,
        now: u64,
        out: &mut Vec<Command>,
    ) {
        let ids: Vec<u64> = self
            .state
            .actions
            .iter()
            .filter(|a| a.state.in_effect() && a.state != ActionState::Pending)
            .map(|a| a.id)
            .collect();
        for id in ids {
            let Some(at) = self.action_index(id) else {
                continue;
            };
            let a = self.state.actions[at].clone();
            match &a.spec {
                ActionSpec::Block { target, .. } if a.state == ActionState::Canary => {
                    self.judge_canary(&a, target.clone(), window, traffic, now, out);
                }
                ActionSpec::Block { .. } | ActionSpec::Throttle { .. } => {
                    if a.until_ms > 0 && now >= a.until_ms {
                        let rec = &mut self.state.actions[at];
                        rec.state = ActionState::Ended;
                        rec.note(now, "expired");
                        self.outcomes.push((a.kind, "expired"));
                        self.dirty = true;
                    }
                }
                ActionSpec::Circuit {
                    key,
                    fallback,
                    open_ms,
                } => {
                    self.step_circuit(at, key, fallback.clone(), *open_ms, window, now, out);
                }
                ActionSpec::Rollback { .. } | ActionSpec::Hook { .. } => {}
            }
        }
    }

    fn judge_canary(
        &mut self,
        a: &ActionRecord,
        target: Target,
        window: &Window,
        traffic: &dyn Traffic,
        now: u64,
        out: &mut Vec<Command>,
    ) {
        // A client the rule covers, with a good history from before the rule, whose traffic
        // now is clean: the rule hurts a legitimate client.
        let harmed: Vec<String> = window
            .clients
            .iter()
            .filter(|(client, c)| {
                target.covers(client, &c.addresses, c.fingerprint)
                    && c.flagged == 0
                    && (c.canary_hits > 0 || c.clean > 0)
            })
            .filter_map(|(client, c)| {
                traffic.good_history(client, a.created_ms).map(|history| {
                    format!(
                        "{client}: {} requests matched the canary, {} clean answers this window; {history}",
                        c.canary_hits, c.clean
                    )
                })
            })
            .collect();
        let Some(at) = self.action_index(a.id) else {
            return;
        };
        if !harmed.is_empty() {
            let rec = &mut self.state.actions[at];
            rec.state = ActionState::Reverted;
            rec.note(
                now,
                format!(
                    "canary reverted: it hurt legitimate clients ({})",
                    harmed.join("; ")
                ),
            );
            out.push(Command::Revert {
                action: a.id,
                spec: a.spec.clone(),
            });
            self.outcomes.push((a.kind, "reverted"));
            self.record(
                now,
                Some(a.incident),
                Some(a.id),
                format!("canary of {target} reverted: it hurt legitimate clients"),
                harmed.clone(),
            );
            let threshold = if target.is_single_client() {
                Threshold::AttackFindings
            } else {
                self.prefix_cooldown.insert(
                    target.clone(),
                    now.saturating_add(self.settings.canary.duration_ms.saturating_mul(10)),
                );
                Threshold::PrefixOffenders
            };
            self.lesson(
                threshold,
                Lesson::FalseAlarm,
                now,
                format!("the canary of action #{} hurt legitimate clients", a.id),
            );
            if let Some(i) = self.incident_index(a.incident)
                && self.state.incidents[i].state == State::Verification
            {
                self.transition(
                    a.incident,
                    State::Analysis,
                    now,
                    "the canaried rule hurt legitimate clients and was reverted",
                    harmed.clone(),
                    out,
                );
                self.state.incidents[i].plan.clear();
                self.transition(
                    a.incident,
                    State::Normal,
                    now,
                    "false alarm: the rule would block legitimate clients; it was reverted",
                    harmed,
                    out,
                );
            }
            return;
        }
        if a.canary_until_ms.is_some_and(|until| now >= until) {
            let rec = &mut self.state.actions[at];
            rec.state = ActionState::Active;
            if let ActionSpec::Block { canary_percent, .. } = &mut rec.spec {
                *canary_percent = None;
            }
            rec.note(
                now,
                "canary passed: the rule applies to every matching request",
            );
            out.push(Command::Promote {
                action: a.id,
                target: target.clone(),
                until_ms: a.until_ms,
            });
            self.outcomes.push((a.kind, "promoted"));
            self.record(
                now,
                Some(a.incident),
                Some(a.id),
                format!("canary of {target} passed: promoted"),
                vec![],
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step_circuit(
        &mut self,
        at: usize,
        key: &CircuitKey,
        fallback: Option<String>,
        open_ms: u64,
        window: &Window,
        now: u64,
        out: &mut Vec<Command>,
    ) {
        let s = &self.settings;
        let threshold = self.thresholds.error_ratio;
        let (min_probes, probe_percent, max_open) =
            (s.min_probes, s.probe_percent, s.circuit_max_open_ms);
        let a = &mut self.state.actions[at];
        let (id, incident, kind) = (a.id, a.incident, a.kind);
        match a.state {
            ActionState::Active | ActionState::Verified if now >= a.until_ms => {
                let nothing_to_probe = match key {
                    CircuitKey::Pool(pool) => {
                        window.pools.get(pool).is_some_and(|p| p.available == 0)
                    }
                    CircuitKey::Route(_) => false,
                };
                if nothing_to_probe {
                    a.until_ms = now.saturating_add(open_ms);
                    a.note(
                        now,
                        "still open: no target of the pool is available to probe",
                    );
                    out.push(Command::SetCircuit {
                        action: id,
                        key: key.clone(),
                        phase: CircuitPhase::Open {
                            until_ms: a.until_ms,
                        },
                        fallback,
                    });
                } else {
                    a.state = ActionState::HalfOpen;
                    a.idle_windows = 0;
                    a.note(
                        now,
                        format!("half-open: {probe_percent}% of requests probe the upstream"),
                    );
                    out.push(Command::SetCircuit {
                        action: id,
                        key: key.clone(),
                        phase: CircuitPhase::HalfOpen { probe_percent },
                        fallback,
                    });
                }
                self.dirty = true;
            }
            ActionState::HalfOpen => {
                let (probes, failures) = match key {
                    CircuitKey::Pool(pool) => window
                        .pools
                        .get(pool)
                        .map_or((0, 0), |p| (p.attempts, p.failures)),
                    CircuitKey::Route(route) => window.routes.get(route).map_or((0, 0), |r| {
                        (r.judged(), r.errors.saturating_sub(r.circuit_rejected))
                    }),
                };
                if probes >= min_probes {
                    let ratio = failures as f64 / probes as f64;
                    if ratio < threshold {
                        a.state = ActionState::Ended;
                        a.note(now, format!("closed: {probes} probes, {failures} failed"));
                        out.push(Command::Revert {
                            action: id,
                            spec: a.spec.clone(),
                        });
                        self.outcomes.push((kind, "closed"));
                        self.record(
                            now,
                            Some(incident),
                            Some(id),
                            format!("circuit of {} closed: the upstream recovered", key.label()),
                            vec![format!("{probes} probes, {failures} failed")],
                        );
                    } else {
                        a.reopened = a.reopened.saturating_add(1);
                        let open = open_ms
                            .saturating_mul(1u64 << a.reopened.min(32))
                            .min(max_open.max(open_ms));
                        a.until_ms = now.saturating_add(open);
                        a.state = ActionState::Active;
                        a.note(
                            now,
                            format!(
                                "probes failed ({failures} of {probes}): open again for {open} ms"
                            ),
                        );
                        out.push(Command::SetCircuit {
                            action: id,
                            key: key.clone(),
                            phase: CircuitPhase::Open {
                                until_ms: a.until_ms,
                            },
                            fallback,
                        });
                        self.outcomes.push((kind, "reopened"));
                    }
                    self.dirty = true;
                } else {
                    a.idle_windows += 1;
                    if a.idle_windows >= MAX_IDLE_PROBE_WINDOWS {
                        a.state = ActionState::Ended;
                        a.note(now, "closed: no traffic came to probe the upstream with");
                        out.push(Command::Revert {
                            action: id,
                            spec: a.spec.clone(),
                        });
                        self.outcomes.push((kind, "closed"));
                        self.dirty = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn detect(&self, window: &Window, now: u64) -> Vec<Symptom> {
        let in_effect = || self.state.actions.iter().filter(|a| a.state.in_effect());
        let blocked_targets: Vec<&Target> = in_effect()
            .filter_map(|a| match &a.spec {
                ActionSpec::Block { target, .. } => Some(target),
                _ => None,
            })
            .collect();
        let circuits: BTreeSet<String> = in_effect()
            .filter_map(|a| match &a.spec {
                ActionSpec::Circuit { key, .. } => Some(key.label()),
                _ => None,
            })
            .collect();
        let blocked = |client: &ClientKey, c: &crate::observe::ClientWindow| {
            blocked_targets
                .iter()
                .any(|t| t.covers(client, &c.addresses, c.fingerprint))
        };
        let ctx = DetectContext {
            settings: &self.settings,
            thresholds: &self.thresholds,
            baselines: &self.baselines,
            last_change: self.last_change.as_ref(),
            blocked: &blocked,
            circuits: &circuits,
        };
        let mut symptoms = symptom::detect(window, &ctx);

        // Offenders blocked now, grouped by prefix: enough of them in one prefix is a
        // distributed attack.
        let mut groups: BTreeMap<Net, Vec<IpAddr>> = BTreeMap::new();
        for net in blocked_targets.iter().filter_map(|t| t.as_net()) {
            if let Some(ip) = net.as_address() {
                let prefix = Net::prefix_of(ip, self.settings.prefix_v4, self.settings.prefix_v6);
                groups.entry(prefix).or_default().push(ip);
            }
        }
        let needed = self.thresholds.prefix_offenders.round().max(2.0) as usize;
        let cooling = |target: &Target| {
            self.prefix_cooldown
                .get(target)
                .is_some_and(|until| now < *until)
        };
        for (prefix, offenders) in groups {
            let covered = blocked_targets
                .iter()
                .filter_map(|t| t.as_net())
                .any(|n| !n.is_address() && n.overlaps(&prefix));
            if offenders.len() >= needed && !covered && !cooling(&Target::Net(prefix)) {
                symptoms.push(Symptom::DistributedAttack { prefix, offenders });
            }
        }

        // Offenders of this window sharing one fingerprint from several networks: clients
        // attacking now, and clients under a single-client block that keep coming. Rotating
        // addresses does not change the software that sends the requests. Offenders from one
        // network are the prefix rule's business.
        let attack_threshold = self.thresholds.attack_findings.round().max(1.0) as u32;
        let mut by_fingerprint: BTreeMap<u64, (Vec<ClientKey>, BTreeSet<Net>)> = BTreeMap::new();
        for (client, c) in &window.clients {
            let Some(fingerprint) = c.fingerprint else {
                continue;
            };
            let blocked_alone = c.blocked > 0
                && blocked_targets
                    .iter()
                    .any(|t| t.is_single_client() && t.covers(client, &c.addresses, c.fingerprint));
            if c.flagged >= attack_threshold || blocked_alone {
                let (offenders, networks) = by_fingerprint.entry(fingerprint).or_default();
                offenders.push(client.clone());
                networks.extend(client.address().iter().chain(&c.addresses).map(|ip| {
                    Net::prefix_of(*ip, self.settings.prefix_v4, self.settings.prefix_v6)
                }));
            }
        }
        for (fingerprint, (offenders, networks)) in by_fingerprint {
            let target = Target::Fingerprint(fingerprint);
            let covered = blocked_targets.iter().any(|t| **t == target);
            if networks.len() >= needed && !covered && !cooling(&target) {
                symptoms.push(Symptom::SharedFingerprint {
                    fingerprint,
                    offenders,
                });
            }
        }
        symptoms
    }

    /// Whether the incident's symptom is still there, judged for the action in effect.
    fn still_present(
        &self,
        incident: &Incident,
        action: &ActionRecord,
        window: &Window,
        symptoms: &[Symptom],
    ) -> (bool, String) {
        let threshold = self.thresholds.error_ratio;
        let min = self.settings.min_requests;
        match &action.spec {
            ActionSpec::Circuit { key, .. } => {
                let routes: Vec<_> = window
                    .routes
                    .iter()
                    .filter(|(id, r)| match key {
                        CircuitKey::Pool(pool) => &r.pool == pool,
                        CircuitKey::Route(route) => *id == route,
                    })
                    .map(|(_, r)| r)
                    .collect();
                let judged: u64 = routes.iter().map(|r| r.judged()).sum();
                let refused: u64 = routes.iter().map(|r| r.circuit_rejected).sum();
                let errors: u64 = routes
                    .iter()
                    .map(|r| r.errors.saturating_sub(r.circuit_rejected))
                    .sum();
                if judged < min {
                    return (
                        false,
                        format!(
                            "contained: {refused} requests answered by the circuit, {judged} reached an upstream ({errors} failed)"
                        ),
                    );
                }
                let ratio = errors as f64 / judged as f64;
                (
                    ratio >= threshold,
                    format!(
                        "{errors} of {judged} answers failed ({:.0}%), {refused} answered by the circuit",
                        ratio * 100.0
                    ),
                )
            }
            ActionSpec::Rollback { .. } => {
                let Symptom::ConfigRegression { routes, .. } = &incident.symptom else {
                    return (false, "not a configuration regression".into());
                };
                let mut bad = Vec::new();
                let mut good = Vec::new();
                for route in routes {
                    let Some(w) = window.routes.get(route) else {
                        good.push(format!("route `{route}` no longer exists"));
                        continue;
                    };
                    if w.judged() < min {
                        good.push(format!(
                            "route `{route}`: {} answers, too few to judge",
                            w.judged()
                        ));
                        continue;
                    }
                    let base = self.baselines.routes.get(route);
                    let base_errors = base.map_or(0.0, |b| b.error_ratio);
                    let slow = match (w.latency_ms, base) {
                        (Some(l), Some(b)) if b.windows >= 3 => {
                            l >= b.latency_ms * self.settings.latency_factor
                                && l >= b.latency_ms + self.settings.latency_floor_ms
                        }
                        _ => false,
                    };
                    let line = format!(
                        "route `{route}`: {:.0}% errors over {} answers (baseline {:.0}%), latency {}",
                        w.error_ratio() * 100.0,
                        w.judged(),
                        base_errors * 100.0,
                        w.latency_ms.map_or("-".into(), |l| format!("{l:.1} ms"))
                    );
                    if w.error_ratio() >= base_errors + self.settings.regression_delta || slow {
                        bad.push(line);
                    } else {
                        good.push(line);
                    }
                }
                if bad.is_empty() {
                    (false, good.join("; "))
                } else {
                    (true, bad.join("; "))
                }
            }
            _ => match symptoms.iter().find(|s| s.subject() == incident.subject) {
                Some(s) => (true, s.evidence().join("; ")),
                None => (
                    false,
                    match &incident.symptom {
                        Symptom::Attack { client, .. } | Symptom::Abuse { client, .. } => {
                            let c = window.clients.get(client);
                            format!(
                                "client {client}: {} requests refused by rules, {} with findings",
                                c.map_or(0, |c| c.blocked),
                                c.map_or(0, |c| c.flagged)
                            )
                        }
                        _ => format!(
                            "no {} on {} in this window",
                            incident.kind, incident.subject
                        ),
                    },
                ),
            },
        }
    }

    fn verify(&mut self, window: &Window, symptoms: &[Symptom], now: u64, out: &mut Vec<Command>) {
        let ids: Vec<u64> = self
            .state
            .incidents
            .iter()
            .filter(|i| i.state == State::Verification)
            .map(|i| i.id)
            .collect();
        for id in ids {
            let Some(i) = self.incident_index(id) else {
                continue;
            };
            let Some(action) = self.state.incidents[i]
                .actions
                .last()
                .and_then(|a| self.action(*a))
                .cloned()
            else {
                continue;
            };
            if action.state == ActionState::Canary {
                // Verification waits for the canary's verdict.
                continue;
            }
            let (present, evidence) =
                self.still_present(&self.state.incidents[i], &action, window, symptoms);
            let inc = &mut self.state.incidents[i];
            if present {
                inc.windows += 1;
                inc.clear_windows = 0;
                if inc.windows >= self.settings.verify_timeout_windows.max(1) {
                    let windows = inc.windows;
                    if let Some(at) = self.action_index(action.id) {
                        let rec = &mut self.state.actions[at];
                        rec.note(now, format!("verification failed: {evidence}"));
                        let revert = matches!(
                            rec.spec,
                            ActionSpec::Circuit { .. } | ActionSpec::Throttle { .. }
                        ) && rec.state.in_effect();
                        rec.state = ActionState::Failed;
                        if revert {
                            out.push(Command::Revert {
                                action: action.id,
                                spec: action.spec.clone(),
                            });
                        }
                    }
                    self.outcomes.push((action.kind, "failed"));
                    self.transition(
                        id,
                        State::Analysis,
                        now,
                        format!("verification failed: the symptom is still there after {windows} windows"),
                        vec![evidence],
                        out,
                    );
                }
            } else {
                inc.clear_windows += 1;
                if inc.clear_windows >= self.settings.verify_windows.max(1) {
                    inc.verified_ms = Some(now);
                    inc.outcome = Some(format!(
                        "mitigated by action #{}: {}",
                        action.id,
                        action.spec.describe()
                    ));
                    if let Some(at) = self.action_index(action.id) {
                        let rec = &mut self.state.actions[at];
                        if rec.state == ActionState::Active {
                            rec.state = ActionState::Verified;
                        }
                        rec.note(now, format!("verified: {evidence}"));
                    }
                    self.outcomes.push((action.kind, "verified"));
                    self.transition(
                        id,
                        State::Normal,
                        now,
                        format!("verified: the symptom is gone after action #{}", action.id),
                        vec![evidence],
                        out,
                    );
                }
            }
        }
    }

    fn follow_symptoms(
        &mut self,
        window: &Window,
        symptoms: Vec<Symptom>,
        now: u64,
        out: &mut Vec<Command>,
    ) {
        let confirm = self.settings.confirm_windows.max(1);
        let mut seen = BTreeSet::new();
        for symptom in symptoms {
            let subject = symptom.subject();
            seen.insert(subject.clone());
            if let Some(at) = self.open_incident(&subject) {
                let inc = &mut self.state.incidents[at];
                inc.symptom = symptom;
                inc.updated_ms = now;
                match inc.state {
                    State::Degraded => {
                        inc.windows += 1;
                        if inc.windows + 1 >= confirm {
                            let id = inc.id;
                            let evidence = inc.symptom.evidence();
                            self.transition(
                                id,
                                State::Analysis,
                                now,
                                format!("confirmed over {confirm} windows"),
                                evidence,
                                out,
                            );
                        }
                    }
                    State::Escalated => {
                        inc.windows += 1;
                        let retry = self.settings.mode == Mode::Enforce
                            && inc.windows >= self.settings.verify_timeout_windows.max(1)
                            && inc.plan.is_empty();
                        if retry {
                            inc.planned = false;
                            let id = inc.id;
                            let evidence = inc.symptom.evidence();
                            self.transition(
                                id,
                                State::Analysis,
                                now,
                                "still there: planning again (guardrails or the state may allow more now)",
                                evidence,
                                out,
                            );
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let id = self.state.next_incident;
            self.state.next_incident += 1;
            let incident = Incident::open(id, symptom, window.start_ms, now);
            let evidence = incident.symptom.evidence();
            self.state.incidents.push(incident);
            self.record(
                now,
                Some(id),
                None,
                format!("normal → degraded: {subject}"),
                evidence.clone(),
            );
            out.push(Command::Notify {
                incident: id,
                event: "opened",
            });
            if confirm <= 1 {
                self.transition(id, State::Analysis, now, "confirmed", evidence, out);
            }
        }
        let gone: Vec<(u64, State, String)> = self
            .state
            .incidents
            .iter()
            .filter(|i| {
                // An incident that moved this tick (a failed verification) has fresh evidence
                // of its own.
                matches!(
                    i.state,
                    State::Degraded | State::Analysis | State::Escalated
                ) && !seen.contains(&i.subject)
                    && i.transitions.last().is_none_or(|t| t.at_ms < now)
            })
            .map(|i| (i.id, i.state, i.kind.clone()))
            .collect();
        for (id, state, kind) in gone {
            if state == State::Degraded && (kind == "upstream_failing" || kind == "route_failing") {
                self.lesson(
                    Threshold::ErrorRatio,
                    Lesson::FalseAlarm,
                    now,
                    format!("incident #{id} cleared before it was confirmed"),
                );
            }
            self.transition(
                id,
                State::Normal,
                now,
                "the symptom went away without an action",
                vec![],
                out,
            );
        }
    }

    fn analyse(
        &mut self,
        window: &Window,
        traffic: &dyn Traffic,
        now: u64,
        out: &mut Vec<Command>,
    ) {
        let ids: Vec<u64> = self
            .state
            .incidents
            .iter()
            .filter(|i| i.state == State::Analysis)
            .map(|i| i.id)
            .collect();
        for id in ids {
            let Some(i) = self.incident_index(id) else {
                continue;
            };
            if !self.state.incidents[i].planned {
                let symptom = self.state.incidents[i].symptom.clone();
                let block_ttl = |target: &Target| self.block_ttl(target, now);
                // A rule whose reach exceeds its evidence starts as a canary: a group rule
                // always, a single client's when that client has a good history (a NAT, a
                // compromised client or account).
                let canary = |target: &Target| match target {
                    Target::Net(net) => match net.as_address() {
                        Some(ip) => traffic.good_history(&ClientKey::from(ip), now).is_some(),
                        None => true,
                    },
                    Target::Identity(subject) => traffic
                        .good_history(&ClientKey::Identity(subject.clone()), now)
                        .is_some(),
                    Target::Fingerprint(_) => true,
                };
                let ctx = PlanContext {
                    settings: &self.settings,
                    window,
                    error_ratio: self.thresholds.error_ratio,
                    known_good: self.known_good,
                    current_version: self.current_version,
                    block_ttl: &block_ttl,
                    canary: &canary,
                };
                let plan = planner::plan(&symptom, &ctx);
                let inc = &mut self.state.incidents[i];
                inc.plan = plan;
                inc.planned = true;
            }
            loop {
                let inc = &mut self.state.incidents[i];
                if inc.plan.is_empty() {
                    let evidence = inc.symptom.evidence();
                    let reason = if inc.actions.is_empty() {
                        "no remediation applies: operators must act"
                    } else {
                        "every remediation was tried: operators must act"
                    };
                    self.transition(id, State::Escalated, now, reason, evidence, out);
                    break;
                }
                let spec = inc.plan.remove(0);
                let kind = spec.kind();
                if self.settings.mode == Mode::Observe {
                    let action = self.new_action(id, spec.clone(), ActionState::Observed, now);
                    self.outcomes.push((kind, "observed"));
                    self.state.incidents[i].plan.clear();
                    self.transition(
                        id,
                        State::Escalated,
                        now,
                        format!("observe mode: would {} (action #{action})", spec.describe()),
                        self.state.incidents[i].symptom.evidence(),
                        out,
                    );
                    break;
                }
                while self
                    .block_times
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) > 60_000)
                {
                    self.block_times.pop_front();
                }
                let guard = GuardContext {
                    settings: &self.settings,
                    window,
                    traffic,
                    blocks_last_minute: self.block_times.len() as u32,
                };
                match guardrail::check(&spec, &guard) {
                    Err(reason) => {
                        let action = self.new_action(id, spec.clone(), ActionState::Refused, now);
                        if let Some(at) = self.action_index(action) {
                            self.state.actions[at]
                                .note(now, format!("refused by a guardrail: {reason}"));
                        }
                        self.outcomes.push((kind, "refused"));
                        self.record(
                            now,
                            Some(id),
                            Some(action),
                            format!("guardrail refused: {}", spec.describe()),
                            vec![reason],
                        );
                    }
                    Ok(passed) => {
                        let action = self.new_action(id, spec.clone(), ActionState::Pending, now);
                        let mut evidence = vec![format!("guardrails: {passed}")];
                        evidence.extend(self.state.incidents[i].symptom.evidence());
                        self.transition(
                            id,
                            State::Remediation,
                            now,
                            format!("action #{action}: {}", spec.describe()),
                            evidence,
                            out,
                        );
                        out.push(Command::Apply { action, spec });
                        break;
                    }
                }
            }
        }
    }

    fn learn_near_misses(&mut self, window: &Window, now: u64) {
        let threshold = self.thresholds.attack_findings.round().max(1.0) as u32;
        let blocked: Vec<Target> = self
            .blocks_in_effect()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let mut next = BTreeMap::new();
        let mut missed = Vec::new();
        for (client, c) in &window.clients {
            if c.flagged == 0 {
                continue;
            }
            if c.flagged < threshold
                && !blocked
                    .iter()
                    .any(|t| t.covers(client, &c.addresses, c.fingerprint))
            {
                let n = self.near_miss.get(client).copied().unwrap_or(0) + 1;
                if n >= NEAR_MISS_WINDOWS {
                    missed.push(client.clone());
                } else {
                    next.insert(client.clone(), n);
                }
            }
        }
        self.near_miss = next;
        for ip in missed {
            self.lesson(
                Threshold::AttackFindings,
                Lesson::Missed,
                now,
                format!("client {ip} had findings in {NEAR_MISS_WINDOWS} windows in a row, each below the attack threshold"),
            );
        }
        self.recent_flagged
            .retain(|_, (at, _, _)| now.saturating_sub(*at) <= FLAGGED_MEMORY_MS);
        if self.recent_flagged.len() > MAX_TRACKED_CLIENTS {
            self.recent_flagged.clear();
        }
        if self.near_miss.len() > MAX_TRACKED_CLIENTS {
            self.near_miss.clear();
        }
    }

    fn routes_under_incident(&self, window: &Window) -> BTreeSet<String> {
        let mut frozen = BTreeSet::new();
        for i in self.state.incidents.iter().filter(|i| i.is_open()) {
            match &i.symptom {
                Symptom::ConfigRegression { routes, .. } => frozen.extend(routes.iter().cloned()),
                Symptom::UpstreamFailing { routes, .. } => frozen.extend(routes.iter().cloned()),
                Symptom::RouteFailing { route, .. } | Symptom::LatencyRegression { route, .. } => {
                    frozen.insert(route.clone());
                }
                _ => {}
            }
        }
        // Routes behind a circuit answer from a fallback or not at all: not their normal.
        for a in self.state.actions.iter().filter(|a| a.state.in_effect()) {
            if let ActionSpec::Circuit { key, .. } = &a.spec {
                for (id, r) in &window.routes {
                    let covered = match key {
                        CircuitKey::Pool(pool) => &r.pool == pool,
                        CircuitKey::Route(route) => id == route,
                    };
                    if covered {
                        frozen.insert(id.clone());
                    }
                }
            }
        }
        frozen
    }

    fn prune(&mut self, now: u64) {
        let keep = self.settings.max_incidents.max(1);
        let closed = self.state.incidents.iter().filter(|i| !i.is_open()).count();
        if closed > keep {
            let mut drop = closed - keep;
            self.state.incidents.retain(|i| {
                if drop > 0 && !i.is_open() {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
        let keep_actions = keep.saturating_mul(4);
        let done = self
            .state
            .actions
            .iter()
            .filter(|a| !a.state.in_effect())
            .count();
        if done > keep_actions {
            let mut drop = done - keep_actions;
            self.state.actions.retain(|a| {
                if drop > 0 && !a.state.in_effect() {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
        let memory = self.settings.offender_memory_ms;
        self.state
            .offenders
            .retain(|o| now.saturating_sub(o.last_ms) <= memory);
        self.prefix_cooldown.retain(|_, until| *until > now);
    }
}
