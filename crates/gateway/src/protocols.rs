//! Protocol inspection (stage 7) on the gateway's side: the `graphql:` and `grpc:` route
//! sections compiled into the stages of crates/policy, and what those stages cannot do from a
//! request's head and buffered body alone:
//!
//! - refusals shaped for the protocol (a trailers-only gRPC status; problem+json or a GraphQL
//!   error body naming the limit);
//! - gRPC request bodies, which are streams: a unary request is read (bounded) and its
//!   message decoded and inspected before anything is sent upstream; a client stream is
//!   inspected message by message as it flows ([`GrpcStreamGuard`]), and a violation stops it;
//! - GraphQL responses in production mode, whose error messages lose their field
//!   suggestions.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apiguard_detect::{Engine, Target, TargetKind};
use apiguard_model::event::now_ms;
use apiguard_model::{Action, EventKind, Finding, SecurityEvent, Stage};
use apiguard_policy::graphql::{
    BudgetSettings, CostBudget, CostModel, GraphqlLimits, GraphqlSettings, GraphqlStage,
    MAX_NESTING, PersistedQueries, strip_suggestions,
};
use apiguard_policy::grpc::{
    Descriptors, GrpcCode, GrpcSettings, GrpcStage, MessageInspector, MethodAllowlist, Violation,
    code_for_rule, percent_encode_message,
};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::body::{BodyGuard, BoxError, ResponseBody, TrailersOnError};
use crate::config::{Config, DurationSpec, Spanned, UpstreamProtocol};
use crate::detection::RouteDetection;
use crate::load::Problem;
use crate::pipeline::Decision;
use crate::problem::problem;
use crate::snapshot::Snapshot;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// GraphQL inspection of a route (see docs/policy.md, "Protocol inspection").
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlConfig {
    /// Production mode: refuse introspection (`__schema`, `__type`) with 403, and remove
    /// "Did you mean …?" field suggestions from the error messages of responses.
    #[serde(default = "defaults::yes")]
    pub production: bool,
    /// Most fields along one path of an operation (`{ user { name } }` is 2). 1 to 60.
    #[serde(default = "defaults::max_depth")]
    pub max_depth: usize,
    /// Most aliased fields in an operation (each use of a fragment counts).
    #[serde(default = "defaults::max_aliases")]
    pub max_aliases: u64,
    /// Most root fields in an operation.
    #[serde(default = "defaults::max_root_fields")]
    pub max_root_fields: u64,
    /// Most operations in a batch (a JSON array of requests). 1 refuses real batches.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Most lexical tokens in one document (names, punctuators, numbers, strings).
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: usize,
    /// Largest document in bytes.
    #[serde(default = "defaults::max_document_bytes")]
    pub max_document_bytes: usize,
    /// Largest request body in bytes (413 above it). It is also how much of the body is
    /// buffered for inspection on this route.
    #[serde(default = "defaults::max_request_bytes")]
    pub max_request_bytes: usize,
    /// Largest static cost of one request (the sum over a batch); `null` for no limit.
    #[serde(default = "defaults::max_cost")]
    pub max_cost: Option<u64>,
    /// How the static cost is computed.
    #[serde(default)]
    pub cost: GraphqlCostConfig,
    /// A cost budget per identity (per client address for anonymous requests) over a time
    /// window: 429 with Retry-After when spent. None when absent.
    #[serde(default)]
    pub budget: Option<GraphqlBudgetConfig>,
    /// Files of allowed documents (`.graphql` files, or JSON: an Apollo persisted-query
    /// manifest, an object of id → document, or an array of documents). When given, only
    /// these documents are accepted, sent whole or by their SHA-256 as Apollo's
    /// `extensions.persistedQuery.sha256Hash`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub persisted_queries: Vec<Spanned<String>>,
    /// How refusals are written: `problem` (application/problem+json) or `graphql` (a
    /// GraphQL response with an `errors` entry). Both name the limit exceeded.
    #[serde(default)]
    pub refusals: RefusalFormat,
    /// Responses up to this size are checked for field suggestions in production mode;
    /// larger ones go out unchanged.
    #[serde(default = "defaults::max_response_inspect")]
    pub max_response_inspect: usize,
}

/// The static cost of a GraphQL operation: every field costs `field_cost`; a list field
/// multiplies the cost of what is selected under it by its size argument's value (`first:
/// 20`), or by `default_list_size` when the size is not known.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlCostConfig {
    /// Cost of one field.
    #[serde(default = "defaults::field_cost")]
    pub field_cost: u64,
    /// Argument names that give a list's size.
    #[serde(default = "defaults::list_arguments")]
    pub list_arguments: Vec<String>,
    /// Fields that return lists without a size argument (their size is `default_list_size`).
    #[serde(default)]
    pub list_fields: Vec<String>,
    /// The size of a list whose size argument is absent for a `list_fields` field, or not a
    /// number (an unset variable).
    #[serde(default = "defaults::default_list_size")]
    pub default_list_size: u64,
}

impl Default for GraphqlCostConfig {
    fn default() -> Self {
        GraphqlCostConfig {
            field_cost: defaults::field_cost(),
            list_arguments: defaults::list_arguments(),
            list_fields: Vec::new(),
            default_list_size: defaults::default_list_size(),
        }
    }
}

/// A GraphQL cost budget.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlBudgetConfig {
    /// Cost units an identity may spend per `per` (and at once, when it has spent nothing).
    pub cost: u64,
    /// The window over which the budget refills, such as `1m`.
    #[schemars(with = "String")]
    pub per: DurationSpec,
    /// Identities tracked at most; past it, new ones share one budget until idle ones have
    /// refilled.
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
}

/// How a GraphQL route writes its refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefusalFormat {
    /// `application/problem+json`, like every other refusal of the gateway.
    #[default]
    Problem,
    /// `{"errors": [{"message": …, "extensions": {"code": …}}]}` with the same status.
    Graphql,
}

/// gRPC inspection of a route (see docs/policy.md, "Protocol inspection").
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// `.proto` files of the services behind the route, compiled at load (imports are
    /// looked up in `include_paths`). Give these or `descriptor_set`, or neither.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub proto_files: Vec<Spanned<String>>,
    /// Directories where `import`s of `proto_files` are found. Default: the directories of
    /// the `proto_files`.
    #[serde(default)]
    pub include_paths: Vec<String>,
    /// A serialized `FileDescriptorSet` (`protoc --include_imports --descriptor_set_out`,
    /// `buf build -o`), instead of `proto_files`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub descriptor_set: Option<Spanned<String>>,
    /// Methods allowed, as `package.Service/Method` or `package.Service/*`. Default: every
    /// method of the descriptors; without descriptors, any method. Other methods are refused
    /// with UNIMPLEMENTED.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Let server reflection (`grpc.reflection.*`) through. Refused with UNIMPLEMENTED
    /// otherwise.
    #[serde(default)]
    pub allow_reflection: bool,
    /// Largest request message in bytes (its length prefix); larger ones are refused with
    /// RESOURCE_EXHAUSTED.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: u32,
    /// With descriptors: decode request messages and pass their string fields (with their
    /// field paths, `grpc:item`) to attack detection.
    #[serde(default = "defaults::yes")]
    pub inspect_messages: bool,
}

mod defaults {
    use apiguard_policy::graphql::{CostModel, GraphqlLimits};

    pub fn yes() -> bool {
        true
    }
    pub fn max_depth() -> usize {
        GraphqlLimits::default().max_depth
    }
    pub fn max_aliases() -> u64 {
        GraphqlLimits::default().max_aliases
    }
    pub fn max_root_fields() -> u64 {
        GraphqlLimits::default().max_root_fields
    }
    pub fn max_batch() -> usize {
        GraphqlLimits::default().max_batch
    }
    pub fn max_tokens() -> usize {
        GraphqlLimits::default().max_tokens
    }
    pub fn max_document_bytes() -> usize {
        GraphqlLimits::default().max_document_bytes
    }
    pub fn max_request_bytes() -> usize {
        GraphqlLimits::default().max_request_bytes
    }
    pub fn max_cost() -> Option<u64> {
        GraphqlLimits::default().max_cost
    }
    pub fn max_response_inspect() -> usize {
        1024 * 1024
    }
    pub fn field_cost() -> u64 {
        CostModel::default().field_cost
    }
    pub fn list_arguments() -> Vec<String> {
        CostModel::default().list_arguments
    }
    pub fn default_list_size() -> u64 {
        CostModel::default().default_list_size
    }
    pub fn max_keys() -> usize {
        100_000
    }
    pub fn max_message_bytes() -> u32 {
        4 * 1024 * 1024
    }
}

// ---------------------------------------------------------------------------------------
// Compiling
// ---------------------------------------------------------------------------------------

/// A route's protocol inspection, compiled.
#[derive(Default)]
pub struct RouteProtocols {
    pub graphql: Option<GraphqlRoute>,
    pub grpc: Option<GrpcRoute>,
}

/// A GraphQL route.
pub struct GraphqlRoute {
    pub stage: Arc<GraphqlStage>,
    pub production: bool,
    pub refusals: RefusalFormat,
    pub max_response_inspect: usize,
}

/// A gRPC route.
pub struct GrpcRoute {
    pub stage: Arc<GrpcStage>,
    /// The route's detection engine, when messages are decoded for it.
    pub engine: Option<Arc<Engine>>,
    pub threshold: u32,
    pub enforce: bool,
}

impl RouteProtocols {
    /// The stages to run (after authentication and authorisation, before detection).
    pub fn stages(&self) -> Vec<Arc<dyn Stage>> {
        let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
        if let Some(g) = &self.graphql {
            stages.push(g.stage.clone());
        }
        if let Some(g) = &self.grpc {
            stages.push(g.stage.clone());
        }
        stages
    }

    /// Body bytes the route must buffer for its protocol stage.
    pub fn body_limit(&self) -> Option<usize> {
        self.graphql
            .as_ref()
            .map(|g| g.stage.settings.limits.max_request_bytes)
    }
}

fn read_file(file: &Spanned<String>, what: &str, problems: &mut Vec<Problem>) -> Option<Vec<u8>> {
    std::fs::read(&file.value)
        .map_err(|e| {
            problems.push(Problem::at(
                file,
                format!("cannot read {what} `{}`: {e}", file.value),
            ))
        })
        .ok()
}

/// Checks and compiles every route's `graphql:` and `grpc:`, in route order. `detection` is
/// each route's detection (gRPC messages are inspected by the route's engine); `previous`
/// lends its cost budgets to the routes whose budget did not change.
pub fn compile_protocols(
    config: &Config,
    detection: &[RouteDetection],
    previous: Option<&Snapshot>,
    problems: &mut Vec<Problem>,
) -> Vec<RouteProtocols> {
    let mut out = Vec::with_capacity(config.routes.len());
    for (i, route) in config.routes.iter().enumerate() {
        let at = |message: String| {
            Problem::at(&route.id, format!("route `{}`: {message}", route.id.value))
        };
        if route.graphql.is_some() && route.grpc.is_some() {
            problems.push(at("give `graphql` or `grpc`, not both".into()));
        }
        let previous_budget = || {
            previous
                .and_then(|p| p.routes.iter().find(|r| r.id == route.id.value))
                .and_then(|r| r.protocols.graphql.as_ref())
                .and_then(|g| g.stage.settings.budget.clone())
        };
        let graphql = route.graphql.as_ref().and_then(|g| {
            compile_graphql(
                g,
                route.limits.max_body_bytes,
                &at,
                previous_budget,
                problems,
            )
        });
        let grpc = route.grpc.as_ref().and_then(|g| {
            let upstream = config.upstreams.get(&route.upstream.value);
            if upstream.is_some_and(|u| u.protocol != UpstreamProtocol::H2c) {
                problems.push(at(format!(
                    "grpc needs an upstream with `protocol: h2c`; `{}` speaks HTTP/1.1",
                    route.upstream.value
                )));
            }
            compile_grpc(g, detection.get(i), &at, problems)
        });
        out.push(RouteProtocols { graphql, grpc });
    }
    out
}

fn compile_graphql(
    config: &GraphqlConfig,
    max_body_bytes: u64,
    at: &dyn Fn(String) -> Problem,
    previous_budget: impl FnOnce() -> Option<Arc<CostBudget>>,
    problems: &mut Vec<Problem>,
) -> Option<GraphqlRoute> {
    let before = problems.len();
    if !(1..=60).contains(&config.max_depth) {
        problems.push(at(format!(
            "graphql.max_depth must be 1 to 60 (documents never nest deeper than {MAX_NESTING})"
        )));
    }
    for (name, value) in [
        ("max_batch", config.max_batch),
        ("max_tokens", config.max_tokens),
        ("max_document_bytes", config.max_document_bytes),
        ("max_request_bytes", config.max_request_bytes),
        ("max_response_inspect", config.max_response_inspect),
    ] {
        if value == 0 {
            problems.push(at(format!("graphql.{name} must be at least 1")));
        }
    }
    if config.cost.list_arguments.iter().any(|a| a.is_empty()) {
        problems.push(at("graphql.cost.list_arguments has an empty name".into()));
    }
    let budget_settings = config.budget.as_ref().map(|b| BudgetSettings {
        capacity: b.cost,
        window: b.per.0,
        max_keys: b.max_keys,
    });
    if let Some(b) = &budget_settings
        && (b.capacity == 0 || b.window.is_zero() || b.max_keys == 0)
    {
        problems.push(at(
            "graphql.budget: cost, per and max_keys must be more than 0".into(),
        ));
    }
    let mut files = Vec::new();
    for file in &config.persisted_queries {
        if let Some(content) = read_file(file, "the persisted-query file", problems) {
            files.push((file.value.clone(), content));
        }
    }
    let persisted =
        if config.persisted_queries.is_empty() || files.len() < config.persisted_queries.len() {
            None
        } else {
            match PersistedQueries::from_files(&files) {
                Ok(list) => Some(Arc::new(list)),
                Err(e) => {
                    problems.push(Problem::at(
                        &config.persisted_queries[0],
                        format!("graphql.persisted_queries: {e}"),
                    ));
                    None
                }
            }
        };
    if problems.len() > before {
        return None;
    }
    let budget = budget_settings.map(|settings| {
        previous_budget()
            .filter(|b| b.settings == settings)
            .unwrap_or_else(|| Arc::new(CostBudget::new(settings)))
    });
    let settings = GraphqlSettings {
        limits: GraphqlLimits {
            max_depth: config.max_depth,
            max_aliases: config.max_aliases,
            max_root_fields: config.max_root_fields,
            max_batch: config.max_batch,
            max_tokens: config.max_tokens,
            max_document_bytes: config.max_document_bytes,
            // Never above the route's body limit: the body buffered for the stage is at most
            // that long, and a longer one must not look complete.
            max_request_bytes: config
                .max_request_bytes
                .min(usize::try_from(max_body_bytes).unwrap_or(usize::MAX)),
            max_cost: config.max_cost,
        },
        cost: CostModel {
            field_cost: config.cost.field_cost,
            list_arguments: config.cost.list_arguments.clone(),
            list_fields: config.cost.list_fields.clone(),
            default_list_size: config.cost.default_list_size,
        },
        production: config.production,
        persisted,
        budget,
    };
    Some(GraphqlRoute {
        stage: Arc::new(GraphqlStage::new(settings)),
        production: config.production,
        refusals: config.refusals,
        max_response_inspect: config.max_response_inspect,
    })
}

fn compile_grpc(
    config: &GrpcConfig,
    detection: Option<&RouteDetection>,
    at: &dyn Fn(String) -> Problem,
    problems: &mut Vec<Problem>,
) -> Option<GrpcRoute> {
    let before = problems.len();
    if config.max_message_bytes == 0 {
        problems.push(at("grpc.max_message_bytes must be at least 1".into()));
    }
    let descriptors = match (&config.descriptor_set, config.proto_files.as_slice()) {
        (Some(_), [_, ..]) => {
            problems.push(at(
                "grpc: give `proto_files` or `descriptor_set`, not both".into()
            ));
            None
        }
        (Some(file), []) => read_file(file, "the descriptor set", problems).and_then(|bytes| {
            Descriptors::from_descriptor_set(&bytes)
                .map_err(|e| {
                    problems.push(Problem::at(
                        file,
                        format!("grpc.descriptor_set `{}`: {e}", file.value),
                    ))
                })
                .ok()
        }),
        (None, [first, ..]) => {
            let files: Vec<std::path::PathBuf> = config
                .proto_files
                .iter()
                .map(|f| f.value.clone().into())
                .collect();
            let includes: Vec<std::path::PathBuf> =
                config.include_paths.iter().map(Into::into).collect();
            Descriptors::from_protos(&files, &includes)
                .map_err(|e| problems.push(Problem::at(first, format!("grpc.proto_files: {e}"))))
                .ok()
        }
        (None, []) => None,
    };
    let allowlist = match (&config.methods, &descriptors) {
        (Some(methods), _) => MethodAllowlist::new(methods.iter().map(String::as_str))
            .map_err(|e| problems.push(at(format!("grpc.methods: {e}"))))
            .ok(),
        (None, Some(d)) => MethodAllowlist::new(d.method_names()).ok(),
        (None, None) => None,
    };
    if problems.len() > before {
        return None;
    }
    // Messages are decoded for the detection engine; with detection off there is no reader.
    let engine = detection
        .and_then(|d| d.engine.clone())
        .filter(|_| config.inspect_messages && descriptors.is_some());
    let settings = Arc::new(GrpcSettings {
        allowlist,
        allow_reflection: config.allow_reflection,
        max_message_bytes: config.max_message_bytes,
        descriptors: descriptors.filter(|_| engine.is_some()).map(Arc::new),
    });
    Some(GrpcRoute {
        stage: Arc::new(GrpcStage { settings }),
        engine,
        threshold: detection.map_or(u32::MAX, |d| d.threshold),
        enforce: detection.is_some_and(|d| d.enforce),
    })
}

// ---------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------

/// A trailers-only gRPC answer: HTTP 200, `content-type: application/grpc`, `grpc-status`
/// and `grpc-message` in the head, no body.
pub fn grpc_status_response(code: u8, message: &str, request_id: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    grpc_status_headers(headers, code, message);
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(crate::headers::X_REQUEST_ID, id);
    }
    response
}

fn grpc_status_headers(headers: &mut HeaderMap, code: u8, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(value) = HeaderValue::from_str(&percent_encode_message(message)) {
        headers.insert("grpc-message", value);
    }
}

/// The gRPC status of a refusal with this HTTP status and finding.
fn grpc_code(status: u16, finding: Option<&Finding>) -> (u8, String) {
    if let Some(f) = finding
        && f.class == apiguard_policy::grpc::CLASS
        && let Some(code) = code_for_rule(&f.rule_id)
    {
        return (code.as_u8(), f.evidence.clone());
    }
    // The usual mapping of HTTP refusals to gRPC codes.
    let (code, message) = match status {
        401 => (16, "authentication is required"),
        413 => (
            GrpcCode::ResourceExhausted.as_u8(),
            "the request is too large",
        ),
        429 => (
            GrpcCode::ResourceExhausted.as_u8(),
            "too many requests: retry after the time in Retry-After",
        ),
        503 => (14, "the gateway cannot serve this request right now"),
        _ => (
            GrpcCode::PermissionDenied.as_u8(),
            "the request was refused by policy",
        ),
    };
    (code, message.to_owned())
}

impl RouteProtocols {
    /// The answer to a refused request on this route, when its protocol wants its own
    /// shape: every refusal of a gRPC request is a gRPC status; a GraphQL limit is named in
    /// problem+json or a GraphQL error body. `None`: the gateway's usual problem+json.
    pub fn refusal(
        &self,
        decision: &Decision,
        request_headers: &HeaderMap,
        request_id: &str,
    ) -> Option<Response<ResponseBody>> {
        let finding = decision.findings.last();
        if self.grpc.is_some() && is_grpc(request_headers) {
            let (code, message) = grpc_code(decision.status, finding);
            return Some(grpc_status_response(code, &message, request_id));
        }
        let finding = finding.filter(|f| {
            f.class == apiguard_policy::graphql::CLASS || f.class == apiguard_policy::grpc::CLASS
        })?;
        let status = StatusCode::from_u16(decision.status).unwrap_or(StatusCode::BAD_REQUEST);
        if self
            .graphql
            .as_ref()
            .is_some_and(|g| g.refusals == RefusalFormat::Graphql)
        {
            return Some(graphql_error(status, finding, request_id));
        }
        Some(problem(status, &finding.evidence, request_id))
    }
}

/// A refusal as a GraphQL response: `{"errors": [{"message", "extensions": {"code", …}}]}`.
fn graphql_error(
    status: StatusCode,
    finding: &Finding,
    request_id: &str,
) -> Response<ResponseBody> {
    let code = finding.rule_id.to_ascii_uppercase().replace('.', "_");
    let body = serde_json::json!({
        "errors": [{
            "message": finding.evidence,
            "extensions": {
                "code": code,
                "rule": finding.rule_id,
                "status": status.as_u16(),
                "request_id": request_id,
            }
        }]
    });
    let mut response = Response::new(ResponseBody::local(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(crate::headers::X_REQUEST_ID, id);
    }
    response
}

/// Whether a request is gRPC (or gRPC-Web): its content type says so.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

// ---------------------------------------------------------------------------------------
// GraphQL responses
// ---------------------------------------------------------------------------------------

impl GraphqlRoute {
    /// Request headers sent upstream: in production mode, responses are asked uncompressed so
    /// that their error messages can be read (a compressed response would carry its
    /// suggestions out unread).
    pub fn forward_headers(&self, headers: &mut HeaderMap) {
        if self.production {
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
    }

    /// In production mode, removes field suggestions from a JSON response of up to
    /// `max_response_inspect` bytes (read within `timeout`); anything else goes out as it
    /// came.
    pub async fn filter_response(
        &self,
        head: &mut http::response::Parts,
        mut body: ResponseBody,
        timeout: Duration,
    ) -> ResponseBody {
        let json = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || m.ends_with("+json")
            });
        let encoded = head
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let limit = self.max_response_inspect;
        let declared_too_big = http_body::Body::size_hint(&body)
            .exact()
            .is_some_and(|n| n > limit as u64);
        if !self.production || !json || encoded || declared_too_big {
            return body;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut read = BytesMut::new();
        let complete = loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        read.extend_from_slice(&data);
                        if read.len() > limit {
                            break false;
                        }
                    }
                    // A JSON response has no trailers; one that does is passed on as is.
                    Err(_) => break false,
                },
                Ok(None) => break true,
                Ok(Some(Err(_))) | Err(_) => break false,
            }
        };
        let read = read.freeze();
        if !complete {
            return ResponseBody::Rewritten {
                data: Some(read),
                rest: Some(Box::new(body)),
            };
        }
        let data = match strip_suggestions(&read) {
            Some(stripped) => {
                let stripped = Bytes::from(stripped);
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(stripped.len()));
                stripped
            }
            None => read,
        };
        ResponseBody::Rewritten {
            data: Some(data),
            rest: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// gRPC request bodies
// ---------------------------------------------------------------------------------------

/// What happens to a gRPC request's body.
pub enum GrpcBody {
    /// Nothing to inspect: it streams as usual.
    Untouched,
    /// A unary request, read whole and inspected: send this.
    Buffered {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// A client stream: send it through this guard.
    Guarded(Box<GrpcStreamGuard>),
    /// Answer this (the body could not be read).
    Answer(Box<Response<ResponseBody>>),
}

/// Publishes the findings of a streamed message, which come after the request's event.
pub struct StreamReport {
    pub events: tokio::sync::broadcast::Sender<Arc<SecurityEvent>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub route: String,
    pub client_ip: std::net::IpAddr,
    pub method: String,
    pub path: String,
    pub request_id: String,
    pub threshold: u32,
}

impl StreamReport {
    fn publish(&self, findings: Vec<Finding>, action: Action) {
        for finding in &findings {
            self.metrics
                .findings
                .with_label_values(&[&finding.rule_id, &finding.class])
                .inc();
        }
        let event = SecurityEvent {
            at_ms: now_ms(),
            request_id: Some(self.request_id.clone()),
            client_ip: Some(self.client_ip.to_canonical()),
            identity: None,
            fingerprint: None,
            route: Some(self.route.clone()),
            method: Some(self.method.clone()),
            path: Some(self.path.clone()),
            kind: EventKind::RequestInspected {
                action,
                score: findings.iter().fold(0u32, |s, f| s.saturating_add(f.score)),
                threshold: self.threshold,
                findings,
            },
        };
        tracing::warn!(target: "apiguard::security", event = %serde_json::to_string(&event).unwrap_or_default(), "security event");
        let _ = self.events.send(Arc::new(event));
    }
}

/// The detection outcome of one message's string fields: its findings, and whether they
/// refuse it.
fn detect_fields(
    engine: &Engine,
    fields: Vec<(String, String)>,
    base_score: u32,
    threshold: u32,
    enforce: bool,
) -> (Vec<Finding>, bool) {
    let targets: Vec<Target> = fields
        .into_iter()
        .map(|(path, value)| Target::new(TargetKind::GrpcField, path, value))
        .collect();
    let verdict = engine.inspect_targets(&targets);
    let score = base_score.saturating_add(verdict.score);
    let refuse = enforce && verdict.score > 0 && score >= threshold;
    (verdict.findings, refuse)
}

impl GrpcRoute {
    /// Inspects the body of an allowed gRPC request: reads a unary request whole (adding its
    /// findings to `decision`, which may then refuse it), or makes the guard of a stream.
    #[allow(clippy::too_many_arguments)]
    pub async fn inspect_body(
        &self,
        path: &str,
        incoming: &mut Option<Incoming>,
        timeout: Duration,
        max_body_bytes: u64,
        decision: &mut Decision,
        request_id: &str,
        report: impl FnOnce() -> StreamReport,
    ) -> GrpcBody {
        if !matches!(decision.action, Action::Allow | Action::LogOnly) {
            return GrpcBody::Untouched;
        }
        let Some(body) = incoming.as_mut() else {
            return GrpcBody::Untouched;
        };
        let settings = &self.stage.settings;
        let mut inspector = MessageInspector::new(settings, path);
        let unary = settings
            .descriptors
            .as_ref()
            .and_then(|d| apiguard_policy::grpc::method_of(path).and_then(|m| d.method(m)))
            .is_some_and(|m| !m.client_streaming);
        if !unary {
            return GrpcBody::Guarded(Box::new(GrpcStreamGuard {
                inspector,
                engine: self.engine.clone(),
                threshold: self.threshold,
                enforce: self.enforce,
                base_score: decision.score,
                violation: Arc::new(OnceLock::new()),
                report: report(),
            }));
        }
        // A unary request is one message: read it (bounded by the message size limit, which
        // the prefix is checked against before the message arrives) and inspect it before
        // anything goes upstream.
        let mut fields = Vec::new();
        let mut data = BytesMut::new();
        let mut trailers = None;
        let read = tokio::time::timeout(timeout, async {
            loop {
                match body.frame().await {
                    None => return Ok(Ok(())),
                    Some(Err(_)) => return Err(()),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(chunk) => {
                            if (data.len() + chunk.len()) as u64 > max_body_bytes {
                                return Ok(Err(Violation::new(
                                    "grpc.message_size",
                                    GrpcCode::ResourceExhausted,
                                    format!(
                                        "the request is larger than the route's limit of {max_body_bytes} bytes"
                                    ),
                                )));
                            }
                            if let Err(v) = inspector.feed(&chunk, |f| {
                                fields.extend(f);
                                Ok(())
                            }) {
                                return Ok(Err(v));
                            }
                            data.extend_from_slice(&chunk);
                        }
                        Err(frame) => {
                            trailers = frame.into_trailers().ok();
                            return Ok(Ok(()));
                        }
                    },
                }
            }
        })
        .await;
        let checked = match read {
            Err(_elapsed) => {
                return GrpcBody::Answer(Box::new(grpc_status_response(
                    4,
                    "the request message did not arrive in time",
                    request_id,
                )));
            }
            Ok(Err(())) => {
                return GrpcBody::Answer(Box::new(grpc_status_response(
                    GrpcCode::Internal.as_u8(),
                    "the request body could not be read",
                    request_id,
                )));
            }
            Ok(Ok(checked)) => checked.and_then(|()| inspector.finish()),
        };
        *incoming = None;
        if let Err(violation) = checked {
            refuse(decision, violation.finding(), 403);
            return GrpcBody::Untouched;
        }
        if let Some(engine) = &self.engine
            && !fields.is_empty()
        {
            let (findings, refused) =
                detect_fields(engine, fields, decision.score, self.threshold, self.enforce);
            for finding in findings {
                decision.score = decision.score.saturating_add(finding.score);
                decision.findings.push(finding);
            }
            if refused {
                decision.action = Action::Block;
                decision.status = 403;
            } else if decision.score >= self.threshold
                && decision.score > 0
                && decision.action == Action::Allow
            {
                decision.action = Action::LogOnly;
            }
        }
        GrpcBody::Buffered {
            data: data.freeze(),
            trailers,
        }
    }
}

fn refuse(decision: &mut Decision, finding: Finding, status: u16) {
    decision.score = decision.score.saturating_add(finding.score);
    decision.findings.push(finding);
    decision.action = Action::Block;
    decision.status = status;
}

/// The error a guarded gRPC stream stops with.
#[derive(Debug, thiserror::Error)]
#[error("gRPC request stream refused: {0}")]
pub struct GrpcRefused(String);

/// Inspects a streamed gRPC request message by message as it goes upstream.
pub struct GrpcStreamGuard {
    inspector: MessageInspector,
    engine: Option<Arc<Engine>>,
    threshold: u32,
    enforce: bool,
    /// The score of the request's head.
    base_score: u32,
    violation: Arc<OnceLock<Violation>>,
    report: StreamReport,
}

impl GrpcStreamGuard {
    /// Set once the guard stopped the stream: why.
    pub fn violation(&self) -> Arc<OnceLock<Violation>> {
        self.violation.clone()
    }

    fn stop(&mut self, violation: Violation, findings: Vec<Finding>) -> BoxError {
        self.report.publish(findings, Action::Block);
        let message = violation.message.clone();
        let _ = self.violation.set(violation);
        Box::new(GrpcRefused(message))
    }
}

impl BodyGuard for GrpcStreamGuard {
    fn check(&mut self, chunk: &Bytes) -> Result<(), BoxError> {
        let (engine, base, threshold, enforce) = (
            self.engine.clone(),
            self.base_score,
            self.threshold,
            self.enforce,
        );
        let mut logged = Vec::new();
        let mut refused = Vec::new();
        let result = self.inspector.feed(chunk, |fields| {
            let Some(engine) = &engine else {
                return Ok(());
            };
            let (findings, refuse) = detect_fields(engine, fields, base, threshold, enforce);
            if refuse {
                refused = findings;
                return Err(Violation::new(
                    "detect",
                    GrpcCode::PermissionDenied,
                    "the request was refused by policy",
                ));
            }
            logged.extend(findings);
            Ok(())
        });
        if !logged.is_empty() {
            self.report.publish(logged, Action::LogOnly);
        }
        match result {
            Ok(()) => Ok(()),
            Err(violation) if violation.rule == "detect" => Err(self.stop(violation, refused)),
            Err(violation) => {
                let finding = violation.finding();
                Err(self.stop(violation, vec![finding]))
            }
        }
    }

    fn end(&mut self) -> Result<(), BoxError> {
        match self.inspector.finish() {
            Ok(()) => Ok(()),
            Err(violation) => {
                let finding = violation.finding();
                Err(self.stop(violation, vec![finding]))
            }
        }
    }
}

/// The answer to a gRPC request whose stream a guard stopped before the upstream answered.
pub fn stopped_stream_response(violation: &Violation, request_id: &str) -> Response<ResponseBody> {
    grpc_status_response(violation.code.as_u8(), &violation.message, request_id)
}

/// For a response whose request stream a guard may stop later: the trailers ending the
/// response (a gRPC status) instead of the upstream's reset stream.
pub fn trailers_on_stop(violation: Arc<OnceLock<Violation>>) -> TrailersOnError {
    Box::new(move || {
        let v = violation.get()?;
        let mut trailers = HeaderMap::new();
        grpc_status_headers(&mut trailers, v.code.as_u8(), &v.message);
        Some(trailers)
    })
}
