//! Remediation actions: what heal asks the gateway to do, and the record of each one (its
//! TTL, its guardrail verdict, its verification and its outcome).

use serde::{Deserialize, Serialize};

use crate::net::Net;
use crate::target::{ClientKey, Target};

/// What a circuit covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
pub enum CircuitKey {
    Pool(String),
    Route(String),
}

impl CircuitKey {
    /// `pool:<name>` or `route:<id>`.
    pub fn label(&self) -> String {
        match self {
            CircuitKey::Pool(name) => format!("pool:{name}"),
            CircuitKey::Route(id) => format!("route:{id}"),
        }
    }
}

/// What a throttle covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "key", rename_all = "snake_case")]
pub enum ThrottleTarget {
    /// A client by address or prefix.
    Client(Net),
    /// An authenticated identity, wherever it connects from (its address may be a NAT or a
    /// proxy that other clients share).
    Identity(String),
    Route(String),
}

impl ThrottleTarget {
    /// The throttle that covers exactly `client`.
    pub fn of_client(client: &ClientKey) -> ThrottleTarget {
        match client {
            ClientKey::Address(ip) => ThrottleTarget::Client(Net::address(*ip)),
            ClientKey::Identity(subject) => ThrottleTarget::Identity(subject.clone()),
        }
    }

    /// The clients the throttle covers, as a block rule would name them (`None` for a
    /// route): the allowlist and the traffic share are checked on it.
    pub fn client_target(&self) -> Option<Target> {
        match self {
            ThrottleTarget::Client(net) => Some(Target::Net(*net)),
            ThrottleTarget::Identity(subject) => Some(Target::Identity(subject.clone())),
            ThrottleTarget::Route(_) => None,
        }
    }
}

/// One action, as the gateway applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionSpec {
    /// A block rule on an address, prefix, identity or fingerprint. While `canary_percent` is
    /// set the rule refuses only that share of the matching requests.
    Block {
        target: Target,
        ttl_ms: u64,
        canary_percent: Option<u8>,
        /// The clients whose own requests justified the rule.
        offenders: Vec<ClientKey>,
    },
    /// A request rate limit on a client or a route.
    Throttle {
        target: ThrottleTarget,
        rate_per_s: f64,
        ttl_ms: u64,
    },
    /// An open circuit: requests are answered 503 at once, or sent to `fallback` (a reroute).
    Circuit {
        key: CircuitKey,
        open_ms: u64,
        fallback: Option<String>,
    },
    /// Re-apply an earlier configuration.
    Rollback { from_version: u64, to_version: u64 },
    /// Call the configured hooks (webhook, command) to remediate outside the gateway.
    Hook { reason: String },
}

/// The kind of an action, for metrics and listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Block,
    Throttle,
    CircuitBreak,
    Reroute,
    Rollback,
    Hook,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Block => "block",
            ActionKind::Throttle => "throttle",
            ActionKind::CircuitBreak => "circuit_break",
            ActionKind::Reroute => "reroute",
            ActionKind::Rollback => "rollback",
            ActionKind::Hook => "hook",
        }
    }
}

impl ActionSpec {
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionSpec::Block { .. } => ActionKind::Block,
            ActionSpec::Throttle { .. } => ActionKind::Throttle,
            ActionSpec::Circuit { fallback: None, .. } => ActionKind::CircuitBreak,
            ActionSpec::Circuit {
                fallback: Some(_), ..
            } => ActionKind::Reroute,
            ActionSpec::Rollback { .. } => ActionKind::Rollback,
            ActionSpec::Hook { .. } => ActionKind::Hook,
        }
    }

    /// How long the action lasts once applied (0: until it is done, such as a rollback).
    pub fn ttl_ms(&self) -> u64 {
        match self {
            ActionSpec::Block { ttl_ms, .. } | ActionSpec::Throttle { ttl_ms, .. } => *ttl_ms,
            ActionSpec::Circuit { open_ms, .. } => *open_ms,
            ActionSpec::Rollback { .. } | ActionSpec::Hook { .. } => 0,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            ActionSpec::Block {
                target,
                ttl_ms,
                canary_percent,
                ..
            } => match canary_percent {
                Some(p) => format!(
                    "block {target} for {} s (canary: {p}% of its requests)",
                    ttl_ms / 1000
                ),
                None => format!("block {target} for {} s", ttl_ms / 1000),
            },
            ActionSpec::Throttle {
                target,
                rate_per_s,
                ttl_ms,
            } => {
                let what = match target {
                    ThrottleTarget::Client(net) => format!("client {net}"),
                    ThrottleTarget::Identity(subject) => format!("identity `{subject}`"),
                    ThrottleTarget::Route(id) => format!("route `{id}`"),
                };
                format!(
                    "throttle {what} to {rate_per_s:.1} requests/s for {} s",
                    ttl_ms / 1000
                )
            }
            ActionSpec::Circuit {
                key,
                open_ms,
                fallback: None,
            } => format!("open the circuit of {} for {} ms", key.label(), open_ms),
            ActionSpec::Circuit {
                key,
                open_ms,
                fallback: Some(pool),
            } => format!(
                "reroute {} to pool `{pool}` for {} ms",
                key.label(),
                open_ms
            ),
            ActionSpec::Rollback {
                from_version,
                to_version,
            } => format!(
                "roll the configuration back from version {from_version} to version {to_version}"
            ),
            ActionSpec::Hook { reason } => format!("call the remediation hooks ({reason})"),
        }
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Recorded in observe mode: what enforce mode would have done.
    Observed,
    /// A guardrail refused it.
    Refused,
    /// Asked of the gateway, not yet confirmed.
    Pending,
    /// In effect, on a share of the matching requests (a canaried block).
    Canary,
    /// In effect.
    Active,
    /// A circuit letting probes through.
    HalfOpen,
    /// In effect and the symptom is gone.
    Verified,
    /// Applied, but the symptom stayed (the incident moved on to the next action).
    Failed,
    /// Undone by heal (a canary that hurt legitimate clients) or by an operator.
    Reverted,
    /// Its TTL ran out, or its work is done (a closed circuit, a finished rollback).
    Ended,
}

impl ActionState {
    /// Whether the action still acts on traffic.
    pub fn in_effect(self) -> bool {
        matches!(
            self,
            ActionState::Pending
                | ActionState::Canary
                | ActionState::Active
                | ActionState::HalfOpen
                | ActionState::Verified
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Observed => "observed",
            ActionState::Refused => "refused",
            ActionState::Pending => "pending",
            ActionState::Canary => "canary",
            ActionState::Active => "active",
            ActionState::HalfOpen => "half_open",
            ActionState::Verified => "verified",
            ActionState::Failed => "failed",
            ActionState::Reverted => "reverted",
            ActionState::Ended => "ended",
        }
    }
}

/// One timestamped line of an action's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub at_ms: u64,
    pub text: String,
}

/// An action and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: u64,
    pub incident: u64,
    pub kind: ActionKind,
    pub spec: ActionSpec,
    pub state: ActionState,
    pub created_ms: u64,
    /// When it stops acting (0: not applied, or no TTL).
    pub until_ms: u64,
    /// When a canary applies in full if nothing went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_until_ms: Option<u64>,
    /// Probe rounds a circuit failed (each doubles its open time).
    #[serde(default)]
    pub reopened: u32,
    /// Windows a half-open circuit waited for probes.
    #[serde(default)]
    pub idle_windows: u32,
    pub notes: Vec<Note>,
}

const MAX_NOTES: usize = 32;

impl ActionRecord {
    pub fn note(&mut self, at_ms: u64, text: impl Into<String>) {
        if self.notes.len() >= MAX_NOTES {
            self.notes.remove(1);
        }
        self.notes.push(Note {
            at_ms,
            text: text.into(),
        });
    }
}

/// State of a circuit as the gateway enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CircuitPhase {
    /// Every request refused (or rerouted).
    Open { until_ms: u64 },
    /// `probe_percent` of the requests go to the upstream, the rest as when open.
    HalfOpen { probe_percent: u8 },
}

/// What the engine asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Put an action in effect; answer with `Healer::applied`.
    Apply { action: u64, spec: ActionSpec },
    /// After a restart: put a persisted action back in effect until `until_ms` (no answer
    /// expected).
    Reinstate {
        action: u64,
        spec: ActionSpec,
        until_ms: u64,
    },
    /// Undo an action in effect (remove the rule or throttle, close the circuit).
    Revert { action: u64, spec: ActionSpec },
    /// A canaried block rule applies in full from now until `until_ms`.
    Promote {
        action: u64,
        target: Target,
        until_ms: u64,
    },
    /// Move a circuit to another phase.
    SetCircuit {
        action: u64,
        key: CircuitKey,
        phase: CircuitPhase,
        fallback: Option<String>,
    },
    /// The configuration version has served well long enough: it is the rollback target.
    MarkKnownGood { version: u64 },
    /// Tell the hooks about an incident (`opened`, `escalated`, `resolved`); hooks that
    /// follow `remediation` are called by applying a `Hook` action instead.
    Notify { incident: u64, event: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_throttles_persist_and_throttles_saved_before_them_still_load() {
        let old: ThrottleTarget =
            serde_json::from_str(r#"{"scope":"client","key":"192.0.2.1"}"#).unwrap();
        assert_eq!(old, ThrottleTarget::Client("192.0.2.1".parse().unwrap()));
        let spec = ActionSpec::Throttle {
            target: ThrottleTarget::of_client(&ClientKey::Identity("mallory".into())),
            rate_per_s: 2.0,
            ttl_ms: 1_000,
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["target"]["scope"], "identity");
        assert_eq!(json["target"]["key"], "mallory");
        assert_eq!(serde_json::from_value::<ActionSpec>(json).unwrap(), spec);
        assert_eq!(
            spec.describe(),
            "throttle identity `mallory` to 2.0 requests/s for 1 s"
        );
    }
}
