//! apiguard's self-healing decisions, as a pure library: no sockets, no clocks, no threads.
//!
//! The gateway feeds one [`Window`] per decision interval (route and pool outcomes from its
//! metrics, client findings from the security event stream, configuration changes) to a
//! [`Healer`], which drives incidents through the state machine (normal → degraded →
//! analysis → remediation → verification → normal, see [`incident`]), plans remediations
//! ([`planner`]), checks them against [`guardrail`]s, verifies them, learns from the outcome
//! ([`learning`]), and answers with [`Command`]s the gateway carries out. [`store`] persists
//! the incidents and the audit trail.

#![forbid(unsafe_code)]

pub mod action;
pub mod guardrail;
mod healer;
pub mod incident;
pub mod learning;
pub mod net;
pub mod observe;
pub mod planner;
pub mod settings;
pub mod store;
pub mod symptom;
pub mod target;

pub use action::{
    ActionKind, ActionRecord, ActionSpec, ActionState, CircuitKey, CircuitPhase, Command,
    ThrottleTarget,
};
pub use healer::Healer;
pub use incident::{Incident, State, Transition};
pub use net::Net;
pub use observe::{ClientWindow, ConfigChange, PoolWindow, RouteWindow, Traffic, Window};
pub use settings::{Mode, Settings};
pub use store::Persisted;
pub use target::{ClientKey, Target, fingerprint_text};
