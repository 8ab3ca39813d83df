//! Incidents and their state machine:
//!
//! ```text
//! normal → degraded → analysis → remediation → verification → normal
//!             │           │  ▲         │             │
//!             │           │  └─────────┴─────────────┘  (action refused, failed or not verified)
//!             │           └──→ escalated (nothing left to try) → normal (symptom gone)
//!             └──→ normal (the symptom went away by itself)
//! ```
//!
//! Every transition is recorded with its time, reason and evidence.

use serde::{Deserialize, Serialize};

use crate::action::ActionSpec;
use crate::symptom::Symptom;

/// Where an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No incident (the state before the first transition and after the last).
    Normal,
    /// A symptom was seen; waiting for it to be confirmed.
    Degraded,
    /// Diagnosing and choosing the next action.
    Analysis,
    /// An action is being applied.
    Remediation,
    /// An action is in effect; checking that the symptom is gone.
    Verification,
    /// Nothing left to try (or observe mode): hooks were told, operators must act.
    Escalated,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Normal,
        State::Degraded,
        State::Analysis,
        State::Remediation,
        State::Verification,
        State::Escalated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Normal => "normal",
            State::Degraded => "degraded",
            State::Analysis => "analysis",
            State::Remediation => "remediation",
            State::Verification => "verification",
            State::Escalated => "escalated",
        }
    }

    /// Whether the machine allows going from `self` to `to`.
    pub fn may_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Normal, Degraded)
                | (Degraded, Analysis)
                | (Degraded, Normal)
                | (Analysis, Remediation)
                | (Analysis, Escalated)
                | (Analysis, Normal)
                | (Remediation, Verification)
                | (Remediation, Analysis)
                | (Verification, Normal)
                | (Verification, Analysis)
                | (Escalated, Analysis)
                | (Escalated, Normal)
        )
    }
}

/// One audited step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub at_ms: u64,
    pub reason: String,
    pub evidence: Vec<String>,
}

/// One incident: a subject (a pool, a route, a client, the configuration) that showed a
/// symptom, and everything done about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    /// `pool:<name>`, `route:<id>`, `client:<address>`, `prefix:<net>`, `config`, ...
    pub subject: String,
    /// The symptom's kind, such as `upstream_failing`.
    pub kind: String,
    pub state: State,
    /// The latest measurement of the symptom.
    pub symptom: Symptom,
    /// Onset: the start of the first window that showed the symptom.
    pub opened_ms: u64,
    pub updated_ms: u64,
    /// The first action put in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitigated_ms: Option<u64>,
    /// When verification found the symptom gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_ms: Option<u64>,
    /// Actions tried, in order (ids of action records).
    pub actions: Vec<u64>,
    /// The steps not tried yet.
    pub plan: Vec<ActionSpec>,
    /// Whether the plan was made (an empty plan then means nothing is left to try).
    #[serde(default)]
    pub planned: bool,
    /// Windows spent in the current state (confirmation, verification).
    pub windows: u32,
    /// Consecutive windows verification saw the symptom gone.
    #[serde(default)]
    pub clear_windows: u32,
    pub transitions: Vec<Transition>,
    /// How it ended, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Transitions kept per incident; an incident that flaps keeps its first and latest ones.
const MAX_TRANSITIONS: usize = 200;

/// A transition the machine does not allow (a bug in the engine, reported, not a panic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTransition {
    pub from: State,
    pub to: State,
}

impl std::fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no transition from {} to {}",
            self.from.as_str(),
            self.to.as_str()
        )
    }
}

impl Incident {
    /// A new incident in `degraded`, with the opening transition recorded.
    pub fn open(id: u64, symptom: Symptom, onset_ms: u64, at_ms: u64) -> Incident {
        let evidence = symptom.evidence();
        let mut incident = Incident {
            id,
            subject: symptom.subject(),
            kind: symptom.kind().to_owned(),
            state: State::Normal,
            symptom,
            opened_ms: onset_ms,
            updated_ms: at_ms,
            mitigated_ms: None,
            verified_ms: None,
            closed_ms: None,
            actions: Vec::new(),
            plan: Vec::new(),
            planned: false,
            windows: 0,
            clear_windows: 0,
            transitions: Vec::new(),
            outcome: None,
        };
        let _ = incident.move_to(State::Degraded, at_ms, "symptom detected", evidence);
        incident
    }

    pub fn is_open(&self) -> bool {
        self.closed_ms.is_none()
    }

    /// Moves to `to`, recording why; refuses transitions the machine does not have.
    pub fn move_to(
        &mut self,
        to: State,
        at_ms: u64,
        reason: impl Into<String>,
        evidence: Vec<String>,
    ) -> Result<&Transition, InvalidTransition> {
        if !self.state.may_become(to) {
            return Err(InvalidTransition {
                from: self.state,
                to,
            });
        }
        if self.transitions.len() >= MAX_TRANSITIONS {
            self.transitions.remove(1);
        }
        self.transitions.push(Transition {
            from: self.state,
            to,
            at_ms,
            reason: reason.into(),
            evidence,
        });
        self.state = to;
        self.updated_ms = at_ms;
        self.windows = 0;
        self.clear_windows = 0;
        if to == State::Normal {
            self.closed_ms = Some(at_ms);
        }
        Ok(self.transitions.last().expect("just pushed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symptom() -> Symptom {
        Symptom::RouteFailing {
            route: "api".into(),
            pool: "backend".into(),
            error_ratio: 0.9,
            requests: 20,
        }
    }

    #[test]
    fn the_machine_follows_the_seed_and_records_every_step() {
        let mut i = Incident::open(1, symptom(), 1_000, 1_500);
        assert_eq!(i.state, State::Degraded);
        assert_eq!(i.subject, "route:api");
        for (to, at) in [
            (State::Analysis, 2_000),
            (State::Remediation, 2_001),
            (State::Verification, 2_002),
            (State::Analysis, 3_000),
            (State::Remediation, 3_001),
            (State::Verification, 3_002),
            (State::Normal, 4_000),
        ] {
            i.move_to(to, at, "step", vec!["evidence".into()]).unwrap();
        }
        assert_eq!(i.transitions.len(), 8);
        assert_eq!(i.transitions[0].from, State::Normal);
        assert!(i.transitions[0].evidence[0].contains("90%"));
        assert_eq!(i.closed_ms, Some(4_000));
        assert!(!i.is_open());
    }

    #[test]
    fn shortcuts_are_refused() {
        let mut i = Incident::open(1, symptom(), 0, 0);
        let err = i
            .move_to(State::Verification, 1, "skip", vec![])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no transition from degraded to verification"
        );
        assert_eq!(i.state, State::Degraded);
        assert!(!State::Normal.may_become(State::Remediation));
        assert!(!State::Remediation.may_become(State::Normal));
    }

    #[test]
    fn a_flapping_incident_keeps_a_bounded_history() {
        let mut i = Incident::open(1, symptom(), 0, 0);
        i.move_to(State::Analysis, 1, "x", vec![]).unwrap();
        for n in 0..500 {
            i.move_to(State::Escalated, n, "x", vec![]).unwrap();
            i.move_to(State::Analysis, n, "x", vec![]).unwrap();
        }
        assert_eq!(i.transitions.len(), MAX_TRANSITIONS);
        assert_eq!(i.transitions[0].to, State::Degraded, "the opening is kept");
    }
}
