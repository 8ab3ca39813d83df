//! The hub's one error type, classified by who is to blame so that the HTTP status (and
//! later the gRPC code) follows from the variant.

use thiserror::Error;

/// Everything that can go wrong in the hub.
#[derive(Debug, Clone, Error)]
pub enum HubError {
    /// The configuration is wrong: nothing starts.
    #[error("configuration: {0}")]
    Config(String),
    /// The caller sent something invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// No or an unknown credential (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential without the right (403).
    #[error("{0}")]
    Forbidden(String),
    /// Not found (404).
    #[error("{0}")]
    NotFound(String),
    /// Already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The ingest queue is full: retry later (429).
    #[error("the hub is overloaded: {0}")]
    Overloaded(String),
    /// The broker is unreachable or did not confirm in time (503).
    #[error("the message broker is unavailable: {0}")]
    BrokerUnavailable(String),
    /// A feed cursor points before what the feed log keeps: the items after it were pruned
    /// (`limits.feed_retention`), so continuing from it would skip them silently (410).
    #[error("{message}")]
    CursorExpired {
        message: String,
        /// The last position of the feed log pruned.
        pruned_through: i64,
    },
    /// The store failed (500).
    #[error("storage: {0}")]
    Store(String),
    /// A bug or an unexpected state (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl HubError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            HubError::Invalid(_) | HubError::Config(_) => 400,
            HubError::Unauthenticated(_) => 401,
            HubError::Forbidden(_) => 403,
            HubError::NotFound(_) => 404,
            HubError::Conflict(_) => 409,
            HubError::CursorExpired { .. } => 410,
            HubError::Overloaded(_) => 429,
            HubError::BrokerUnavailable(_) => 503,
            HubError::Store(_) | HubError::Internal(_) => 500,
        }
    }
}

/// The stable code of [`HubError::CursorExpired`] in every API (REST problem, TAXII
/// `error_code`, GraphQL `extensions.code`).
pub const FEED_CURSOR_EXPIRED: &str = "FEED_CURSOR_EXPIRED";

impl From<sqlx::Error> for HubError {
    fn from(error: sqlx::Error) -> Self {
        HubError::Store(error.to_string())
    }
}
