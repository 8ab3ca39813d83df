//! Authorisation: Cedar policies over the identity, the route and the request's context,
//! validated against a schema at load; default deny (least privilege); and just-in-time
//! grants that an operator gives through the admin API and that expire by themselves.
//!
//! - [`compile`] reads policy files and an optional schema file into [`Policies`]; any parse
//!   or validation error rejects them (file:line:column and reason).
//! - [`AuthzStage`] is pipeline stage 5: it builds a Cedar request for each HTTP request and
//!   refuses (403) what no policy permits, what a `forbid` policy denies, and what a `forbid`
//!   policy cannot be evaluated on (fail closed). A request that no policy permits and no
//!   policy forbids is let through when a [`Grants`] entry covers it. Each stage remembers
//!   its recent Cedar decisions by everything they depend on (`cache.rs`); grants are
//!   looked up afresh on every request.
//! - [`Reputation`] is what the stage asks about the client address; the gateway implements
//!   it over its block table, so this crate does not depend on the gateway.

mod cache;
mod grants;
mod graphql;
mod policies;
mod stage;

pub use cache::CacheStats;
pub use grants::{
    AuditEntry, AuditEvent, Grant, GrantError, GrantPrincipal, GrantRequest, Grants, IpPrefix,
};
pub use graphql::{GraphQlOperations, graphql_operations};
pub use policies::{ANONYMOUS_ID, Policies, PolicyProblem, SCHEMA_TEXT, Source, compile};
pub use stage::{AuthzMode, AuthzStage, DECISION_CACHE_CAPACITY, Reputation, ReputationEntry};
