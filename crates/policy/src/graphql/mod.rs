//! GraphQL inspection, part of stage 7 of the pipeline (protocol inspection). On a route
//! declared as GraphQL, every operation a request carries (a `POST` JSON body, a batch, an
//! `application/graphql` body or a `GET ?query=`) is pre-scanned, parsed with
//! async-graphql-parser and measured without a schema, then refused when it passes a limit:
//! request and document size, tokens, depth, aliases, root fields, batch size, static cost,
//! and a cost budget per identity over a time window. In production mode introspection is
//! refused (and the gateway strips field suggestions from responses, see
//! [`strip_suggestions`]). An optional allowlist admits only persisted documents.
//!
//! Every refusal is a [`Finding`] of class `graphql_policy` whose rule names the limit
//! (`graphql.depth`, ...) and whose evidence is the client-facing detail ("depth 12 is over
//! the limit of 10"): the gateway turns it into problem+json or a GraphQL error body.

mod analyze;
mod budget;
mod persisted;
mod request;
mod scan;
mod suggestions;

use std::sync::Arc;

use apiguard_model::{Finding, Outcome, RequestContext, RequestView, Severity, Stage};
use dashmap::DashMap;
use http::{HeaderValue, Method, header};

pub use analyze::{AnalyzeError, CostModel, Stats, analyze_document};
pub use budget::{BudgetSettings, CostBudget, Spend};
pub use persisted::{PersistedQueries, Sha256Digest, document_hash, parse_hash};
pub use request::{GraphqlRequest, RequestError, from_get, from_post};
pub use scan::{MAX_NESTING, Scan, ScanError, scan_document};
pub use suggestions::{strip_message, strip_suggestions};

use crate::ratelimit::LimitKey;

/// The class of every GraphQL finding.
/// Not `graphql`: that is the detection engine's class for GraphQL attacks (its
/// `graphql.introspection` rule blocks introspection on every route); these are the route's
/// own limits, refused whatever the detection mode and never reported to a hub as attacks.
pub const CLASS: &str = "graphql_policy";

/// Costs remembered for persisted-query hashes seen with their document, at most.
const MAX_KNOWN_COSTS: usize = 10_000;

/// Limits on what one request may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlLimits {
    /// Fields along the longest path of an operation.
    pub max_depth: usize,
    /// Aliased fields in an operation.
    pub max_aliases: u64,
    /// Root fields of an operation.
    pub max_root_fields: u64,
    /// Operations in a batch (a JSON array).
    pub max_batch: usize,
    /// Lexical tokens of a document.
    pub max_tokens: usize,
    /// Bytes of one document.
    pub max_document_bytes: usize,
    /// Bytes of a request body.
    pub max_request_bytes: usize,
    /// Static cost of a request (the sum over a batch); `None`: no per-request limit.
    pub max_cost: Option<u64>,
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        GraphqlLimits {
            max_depth: 10,
            max_aliases: 15,
            max_root_fields: 10,
            max_batch: 5,
            max_tokens: 5_000,
            max_document_bytes: 32 * 1024,
            max_request_bytes: 256 * 1024,
            max_cost: Some(10_000),
        }
    }
}

/// A route's GraphQL settings, compiled.
#[derive(Debug, Default)]
pub struct GraphqlSettings {
    pub limits: GraphqlLimits,
    pub cost: CostModel,
    /// Refuse introspection (`__schema`, `__type`).
    pub production: bool,
    /// When set, only these documents are accepted.
    pub persisted: Option<Arc<PersistedQueries>>,
    /// The cost budget per identity (or client address), when set.
    pub budget: Option<Arc<CostBudget>>,
}

/// Why a request is refused: the finding's rule, the HTTP status, and the detail for the
/// client (it names the limit and the measured value, never the request's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub status: u16,
    pub detail: String,
}

impl Refusal {
    fn new(rule: &'static str, status: u16, detail: impl Into<String>) -> Self {
        Refusal {
            rule,
            status,
            detail: detail.into(),
        }
    }

    fn in_batch(mut self, index: Option<usize>) -> Self {
        if let Some(i) = index {
            self.detail = format!("operation {i} of the batch: {}", self.detail);
        }
        self
    }

    fn into_outcome(self) -> Outcome {
        Outcome::Block {
            status: self.status,
            finding: Finding {
                rule_id: self.rule.into(),
                class: CLASS.into(),
                severity: Severity::Critical,
                score: Severity::Critical.score(),
                target: "graphql".into(),
                evidence: self.detail,
            },
        }
    }
}

/// What a request measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measured {
    pub operations: usize,
    /// The static cost of all its operations.
    pub cost: u64,
}

/// The GraphQL stage of one route.
#[derive(Debug)]
pub struct GraphqlStage {
    pub settings: GraphqlSettings,
    /// Costs of documents seen with their persisted-query hash, for later requests that send
    /// the hash alone (their document is then known to the server, not to the gateway).
    known_costs: DashMap<Sha256Digest, u64>,
}

impl GraphqlStage {
    pub fn new(settings: GraphqlSettings) -> Self {
        GraphqlStage {
            settings,
            known_costs: DashMap::new(),
        }
    }

    /// Checks a request's operations against every limit except the budget; answers what
    /// they measure. `Ok(None)`: not a GraphQL operation (a `GET` without `query`, an
    /// `OPTIONS` preflight, ...).
    pub fn measure(&self, request: &RequestView<'_>) -> Result<Option<Measured>, Refusal> {
        let limits = &self.settings.limits;
        let (requests, batch) = match *request.method {
            Method::GET | Method::HEAD => match from_get(request.query()) {
                Ok(Some(one)) => (vec![one], false),
                Ok(None) => return Ok(None),
                Err(e) => return Err(Refusal::new("graphql.request", 400, e.to_string())),
            },
            Method::POST => {
                let body = request.body.map_or(&[][..], |b| &b[..]);
                if body.len() > limits.max_request_bytes {
                    return Err(Refusal::new(
                        "graphql.request_size",
                        413,
                        format!(
                            "the GraphQL request is larger than the limit of {} bytes",
                            limits.max_request_bytes
                        ),
                    ));
                }
                let content_type = request
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                from_post(content_type, body).map_err(|e| match e {
                    RequestError::ContentType => {
                        Refusal::new("graphql.content_type", 415, e.to_string())
                    }
                    e => Refusal::new("graphql.request", 400, e.to_string()),
                })?
            }
            _ => return Ok(None),
        };
        if requests.len() > limits.max_batch {
            return Err(Refusal::new(
                "graphql.batch",
                400,
                format!(
                    "a batch of {} operations is over the limit of {}",
                    requests.len(),
                    limits.max_batch
                ),
            ));
        }
        let mut cost = 0u64;
        for (i, one) in requests.iter().enumerate() {
            let index = batch.then_some(i);
            cost = cost.saturating_add(self.measure_one(one).map_err(|r| r.in_batch(index))?);
        }
        if let Some(max) = limits.max_cost
            && cost > max
        {
            return Err(Refusal::new(
                "graphql.cost",
                400,
                format!("the query's cost of {cost} is over the limit of {max}"),
            ));
        }
        Ok(Some(Measured {
            operations: requests.len(),
            cost,
        }))
    }

    /// Checks one operation; answers its cost.
    fn measure_one(&self, request: &GraphqlRequest) -> Result<u64, Refusal> {
        let limits = &self.settings.limits;
        let claimed = match &request.persisted_hash {
            Some(hex) => Some(parse_hash(hex).ok_or_else(|| {
                Refusal::new(
                    "graphql.persisted_query",
                    400,
                    "extensions.persistedQuery.sha256Hash is not a SHA-256 in hex",
                )
            })?),
            None => None,
        };
        let stored;
        let (document, hash) = match (&request.query, claimed) {
            (Some(query), _) => {
                if query.len() > limits.max_document_bytes {
                    return Err(Refusal::new(
                        "graphql.document_size",
                        413,
                        format!(
                            "the GraphQL document is larger than the limit of {} bytes",
                            limits.max_document_bytes
                        ),
                    ));
                }
                let hash = (claimed.is_some() || self.settings.persisted.is_some())
                    .then(|| document_hash(query));
                if claimed.is_some() && claimed != hash {
                    return Err(Refusal::new(
                        "graphql.persisted_query",
                        400,
                        "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query",
                    ));
                }
                if let (Some(list), Some(hash)) = (&self.settings.persisted, &hash)
                    && list.get(hash).is_none()
                {
                    return Err(not_persisted());
                }
                (query.as_str(), hash)
            }
            (None, Some(hash)) => match &self.settings.persisted {
                Some(list) => {
                    stored = list.get(&hash).ok_or_else(not_persisted)?.clone();
                    (&*stored, None)
                }
                // Automatic persisted queries: the server knows the document; its cost is
                // known if it came through here with its text before.
                None => {
                    return Ok(self
                        .known_costs
                        .get(&hash)
                        .map_or(self.settings.cost.field_cost, |c| *c));
                }
            },
            (None, None) => {
                return Err(Refusal::new(
                    "graphql.request",
                    400,
                    "the request has no `query`",
                ));
            }
        };
        let stats = self.measure_document(
            document,
            request.operation_name.as_deref(),
            request.variables.as_ref(),
        )?;
        if let Some(hash) = hash
            && claimed.is_some()
            && self.known_costs.len() < MAX_KNOWN_COSTS
        {
            self.known_costs.insert(hash, stats.cost);
        }
        Ok(stats.cost)
    }

    /// Pre-scans, parses and measures one document against the limits.
    pub fn measure_document(
        &self,
        document: &str,
        operation_name: Option<&str>,
        variables: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Stats, Refusal> {
        let limits = &self.settings.limits;
        scan_document(document, limits.max_tokens).map_err(|e| match e {
            ScanError::TooManyTokens { limit } => Refusal::new(
                "graphql.tokens",
                400,
                format!("the GraphQL document has more than {limit} tokens"),
            ),
            ScanError::TooDeep { limit } => Refusal::new(
                "graphql.depth",
                400,
                format!("the GraphQL document nests deeper than {limit} levels"),
            ),
        })?;
        let parsed = async_graphql_parser::parse_query(document).map_err(|e| {
            let at = e
                .positions()
                .next()
                .map(|p| format!(" (line {}, column {})", p.line, p.column))
                .unwrap_or_default();
            Refusal::new(
                "graphql.syntax",
                400,
                format!("the GraphQL document does not parse{at}"),
            )
        })?;
        let stats = analyze_document(&parsed, operation_name, variables, &self.settings.cost)
            .map_err(|e| Refusal::new("graphql.document", 400, e.to_string()))?;
        if self.settings.production && stats.introspection {
            return Err(Refusal::new(
                "graphql.introspection_disabled",
                403,
                "introspection is disabled on this API",
            ));
        }
        let over = |rule, what: &str, value: u64, limit: u64| {
            Refusal::new(
                rule,
                400,
                format!("the query's {what} of {value} is over the limit of {limit}"),
            )
        };
        if stats.depth > limits.max_depth {
            return Err(over(
                "graphql.depth",
                "depth",
                stats.depth as u64,
                limits.max_depth as u64,
            ));
        }
        if stats.aliases > limits.max_aliases {
            return Err(over(
                "graphql.aliases",
                "alias count",
                stats.aliases,
                limits.max_aliases,
            ));
        }
        if stats.root_fields > limits.max_root_fields {
            return Err(over(
                "graphql.root_fields",
                "root field count",
                stats.root_fields,
                limits.max_root_fields,
            ));
        }
        Ok(stats)
    }

    /// Spends `cost` from the budget of the request's identity (its client address when
    /// anonymous).
    fn spend(&self, request: &RequestView<'_>, ctx: &mut RequestContext, cost: u64) -> Outcome {
        let Some(budget) = &self.settings.budget else {
            return Outcome::Continue;
        };
        let capacity = budget.settings.capacity;
        if cost > capacity {
            return Refusal::new(
                "graphql.cost",
                400,
                format!(
                    "the query's cost of {cost} is over the budget of {capacity} per {}s",
                    budget.settings.window.as_secs()
                ),
            )
            .into_outcome();
        }
        let key = match &ctx.identity {
            Some(identity) => LimitKey::Subject(identity.method, identity.subject.as_str().into()),
            None => LimitKey::client(request.client.peer.ip()),
        };
        match budget.spend(&key, cost) {
            Spend::Allowed { .. } => Outcome::Continue,
            Spend::Refused { retry_after } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                ctx.response_headers
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
                Refusal::new(
                    "graphql.budget",
                    429,
                    format!(
                        "the GraphQL cost budget of {capacity} per {}s is spent: this query costs {cost}; retry after the time in Retry-After",
                        budget.settings.window.as_secs()
                    ),
                )
                .into_outcome()
            }
        }
    }
}

fn not_persisted() -> Refusal {
    Refusal::new(
        "graphql.persisted_query",
        403,
        "this document is not in the API's persisted-query allowlist",
    )
}

impl Stage for GraphqlStage {
    fn name(&self) -> &'static str {
        "graphql"
    }

    fn needs_body(&self) -> bool {
        true
    }

    /// A GraphQL limit is policy, not detection: it holds in detect-only mode too.
    fn enforced_in_detect_only(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        match self.measure(request) {
            Ok(None) => Outcome::Continue,
            Ok(Some(measured)) => self.spend(request, ctx, measured.cost),
            Err(refusal) => refusal.into_outcome(),
        }
    }
}

#[cfg(test)]
mod tests;
