//! Security events: the stream every decision feeds and every consumer (behaviour, heal,
//! discovery, console, hub reporter) reads.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::pipeline::{Action, Finding};

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A request was inspected and produced findings (whatever the action).
    RequestInspected {
        action: Action,
        score: u32,
        threshold: u32,
        findings: Vec<Finding>,
    },
    /// A response on its way to the client carried sensitive data (card numbers, secrets,
    /// stack traces, ...): reported, and masked when `masked`.
    ResponseInspected {
        /// The upstream's status.
        status: u16,
        /// The sensitive data was replaced before the response left.
        masked: bool,
        findings: Vec<Finding>,
    },
    /// An upstream target was taken out of rotation.
    UpstreamEjected {
        pool: String,
        target: String,
        reason: String,
        until_ms: u64,
    },
    /// An upstream target came back.
    UpstreamRestored { pool: String, target: String },
    /// A new configuration took effect.
    ConfigApplied { version: u64, hash: String },
    /// A configuration was refused; the previous one keeps serving.
    ConfigRejected { reason: String },
}

/// One event with its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The request id, for request-scoped events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// The authenticated subject, when authentication proved one: self-healing blocks an
    /// authenticated offender by identity rather than by an address others may share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The client fingerprint (16 hex digits, see `apiguard_behavior::bot::client_fingerprint`),
    /// on request events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl SecurityEvent {
    /// An event not tied to a request.
    pub fn system(kind: EventKind) -> Self {
        SecurityEvent {
            at_ms: now_ms(),
            request_id: None,
            client_ip: None,
            identity: None,
            fingerprint: None,
            route: None,
            method: None,
            path: None,
            kind,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
