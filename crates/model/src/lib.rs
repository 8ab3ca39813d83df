//! The shared vocabulary of apiguard: what a request looks like to an inspection stage, what a
//! stage may answer, and the security events every decision produces. No I/O lives here, so
//! every other crate (the pure detection engine included) can depend on it.

#![forbid(unsafe_code)]

pub mod event;
pub mod feed;
pub mod pipeline;
pub mod request;
pub mod threat;

pub use event::{EventKind, SecurityEvent};
pub use pipeline::{
    Action, AuthMethod, Finding, Identity, Outcome, RequestContext, Severity, Stage,
};
pub use request::{ClientInfo, RequestView};
