//! The pipeline contract: an ordered list of [`Stage`]s, each with one job, each answering with
//! an [`Outcome`]. The gateway runs them cheapest first and turns the accumulated score into a
//! decision against the route's threshold.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::request::RequestView;

/// How bad a finding is; the value is what it adds to the request's anomaly score (the same
/// scale as the OWASP CRS anomaly scoring, so thresholds read the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Notice,
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// The points this severity adds to the request score.
    pub fn score(self) -> u32 {
        match self {
            Severity::Notice => 2,
            Severity::Warning => 3,
            Severity::Error => 4,
            Severity::Critical => 5,
        }
    }
}

/// One explainable reason to distrust a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// A stable rule identifier, such as `sqli-942100` or `limits.body_size`.
    pub rule_id: Cow<'static, str>,
    /// The attack or policy class, such as `sqli`, `xss`, `protocol`, `limits`.
    pub class: Cow<'static, str>,
    pub severity: Severity,
    /// Points added to the request score (usually `severity.score()`).
    pub score: u32,
    /// Where in the request it was found, such as `query:id` or `json:$.comment`.
    pub target: String,
    /// The matched snippet, already redacted and truncated: safe to log and export.
    pub evidence: String,
}

/// What a stage decides about a request.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to say; the next stage runs.
    Continue,
    /// Add findings to the anomaly score; the decision comes after all stages ran (or as soon
    /// as the score passes the threshold).
    Score(Vec<Finding>),
    /// Ask the client to prove itself (authentication, proof of work); answered with 401.
    Challenge(Finding),
    /// Refuse now, whatever the score, with this HTTP status (403, 413, 429, ...).
    Block { status: u16, finding: Finding },
}

/// Mutable state shared by the stages of one request.
#[derive(Debug, Default)]
pub struct RequestContext {
    /// The anomaly score so far.
    pub score: u32,
    /// Every finding so far, in stage order.
    pub findings: Vec<Finding>,
    /// The authenticated identity, once an authentication stage set it.
    pub identity: Option<Identity>,
    /// Headers for the answer to the client, whatever it is (the upstream's response or a
    /// refusal made here): `WWW-Authenticate` on a 401, `Retry-After` and `RateLimit` on a
    /// 429, `RateLimit` on a success.
    pub response_headers: http::HeaderMap,
    /// What a refusal's problem+json `detail` tells the client, when the refusing stage has
    /// something more useful to say than its status (such as which digest did not match).
    /// Never attack details.
    pub problem_detail: Option<String>,
}

/// How a client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A verified JSON Web Token (bearer).
    Jwt,
    /// An API key matched against the configured (hashed) keys.
    ApiKey,
    /// A client certificate verified by the listener's TLS (mTLS).
    Mtls,
    /// An HTTP message signature (RFC 9421) verified with a configured key; the subject is
    /// the key's.
    Signature,
}

/// Who the request is from, as the authentication stage proved it; later stages
/// (authorisation, rate limits, behaviour) key on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The stable principal: the token's `sub`, the API key's configured name, or the
    /// certificate's subject (or first SAN when the subject is empty).
    pub subject: String,
    pub method: AuthMethod,
    /// The token's claims (a JSON object); for API keys and certificates, the configured
    /// attributes and the certificate's SANs. Empty object when there is nothing to say.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl RequestContext {
    pub fn add(&mut self, finding: Finding) {
        self.score = self.score.saturating_add(finding.score);
        self.findings.push(finding);
    }
}

/// The gateway's final word on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    /// Findings were made and would have blocked, but the route is in detect-only mode.
    LogOnly,
    Challenge,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::LogOnly => "log_only",
            Action::Challenge => "challenge",
            Action::Block => "block",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of request inspection. Implementations are small, synchronous and free of I/O on
/// the request path: what a stage needs from the outside world (block tables, keys, policies)
/// it reads from state refreshed elsewhere.
pub trait Stage: Send + Sync + 'static {
    /// A short stable name, used in metrics and events (`limits`, `detect`, ...).
    fn name(&self) -> &'static str;

    /// Whether this stage needs the request body buffered in [`RequestView::body`]. A request
    /// whose body is larger than the route's inspection limit is streamed uninspected and the
    /// stage sees `body: None` (the limits stage scores that case).
    fn needs_body(&self) -> bool {
        false
    }

    /// Whether this stage's refusals apply even on a route in detect-only mode. Detection
    /// findings are only logged there, but a missing credential, an exhausted rate limit or a
    /// policy deny is not a detection: stages with their own enforce/monitor setting
    /// (authentication, rate limiting, authorisation, schema validation) say yes, because
    /// detect-only is about tuning attack detection, not about opening access.
    fn enforced_in_detect_only(&self) -> bool {
        false
    }

    /// Inspect the request and answer.
    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome;
}
