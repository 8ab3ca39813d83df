//! The configuration file as written by users: serde structs with a doc comment on every field
//! (the same comments become docs/configuration.md and the JSON Schema in schemas/).
//!
//! Fields that later checks must point at keep their YAML location ([`Spanned`]), so that
//! `apiguard validate` can say file:line:column for a route naming a missing upstream as well
//! as for a syntax error.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
pub use serde_saphyr::Spanned;

/// The whole gateway configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "apiguard gateway configuration")]
pub struct Config {
    /// Where the gateway accepts client traffic. At least one.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener: /metrics, /healthz, /readyz, /config/versions, POST
    /// /config/reload. Optional; keep it on a loopback or management address.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Upstream pools by name. Routes refer to them by this name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes. The most specific match wins (see docs/configuration.md, "Route matching").
    pub routes: Vec<RouteConfig>,
    /// Attack detection for every route (on, blocking, at paranoia level 1 when absent). A
    /// route changes it under its own `detect:`.
    #[serde(default)]
    pub detect: DetectConfig,
    /// Authorisation with Cedar policies for every route (see docs/policy.md). Off when
    /// absent; when present, a route no policy permits is refused. A route changes the mode
    /// under its own `authz:`.
    #[serde(default)]
    pub authz: Option<AuthzConfig>,
    /// Threat sharing with an apiguard hub: report what this gateway blocks, and block what
    /// other participants report. Off when absent.
    #[serde(default)]
    pub hub: Option<HubConfig>,
    /// Behavioural detection: baselines learned from live traffic and the models judging
    /// requests against them (see docs/behavior.md). Off when absent.
    #[serde(default)]
    pub behavior: Option<BehaviorConfig>,
    /// Authentication providers (JWT, API keys, mTLS) that routes name under their own
    /// `auth:`, and continuous verification. See docs/policy.md.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Rate limiting: cluster mode through Redis, and the limits of routes that set none.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Self-healing: incidents, remediation (blocks, throttles, circuits, reroutes, config
    /// rollback, hooks), verification and learning (see docs/heal.md). Off when absent.
    #[serde(default)]
    pub heal: Option<crate::heal::config::HealConfig>,
    /// Keys that verify HTTP message signatures (RFC 9421), by key id, and the replay cache.
    /// Routes require signatures under their own `integrity:`. See docs/policy.md.
    #[serde(default)]
    pub signatures: SignaturesConfig,
    /// Access logs.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Hot reload behaviour.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Worker threads serving traffic, each a single-threaded runtime with its own upstream
    /// connections (nginx's `worker_processes`). Default: one per CPU the process may use.
    /// Fewer than the CPUs is faster when the load generator or the upstream share the
    /// machine (see docs/benchmarks.md). Read at start only; `--workers` overrides it.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub workers: Option<usize>,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for metrics and logs. Defaults to the address.
    #[serde(default)]
    pub name: Option<String>,
    /// `IP:port` to bind, such as `0.0.0.0:8443` or `[::1]:8080`.
    #[schemars(with = "String")]
    pub address: Spanned<String>,
    /// Serve TLS on this listener (ALPN offers h2 and http/1.1). Without it the listener
    /// speaks cleartext HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How long a client may take to send a complete request head before the connection is
    /// closed (slowloris protection). An idle HTTP/1.1 keep-alive connection is closed after
    /// the same time.
    #[serde(default = "defaults::header_read_timeout")]
    #[schemars(with = "String")]
    pub header_read_timeout: DurationSpec,
    /// Maximum open connections; further connections are closed at once.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Maximum concurrent HTTP/2 streams per connection.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
}

/// TLS for a listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    #[schemars(with = "String")]
    pub cert: Spanned<String>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    #[schemars(with = "String")]
    pub key: Spanned<String>,
    /// PEM file with the CA certificates that sign client certificates. Setting it turns on
    /// client certificate verification (mTLS).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub client_ca: Option<Spanned<String>>,
    /// With `client_ca`: `required` refuses clients without a valid certificate; `optional`
    /// also accepts clients that present no certificate (their identity is then unknown). A
    /// certificate that is presented must be valid either way.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether a client certificate is mandatory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:port` to bind.
    #[schemars(with = "String")]
    pub address: Spanned<String>,
}

/// An upstream pool.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Targets as `host:port` (IP or name resolved at connect time).
    #[schemars(with = "Vec<String>")]
    pub targets: Vec<Spanned<String>>,
    /// Protocol towards the targets: `http1`, or `h2c` (HTTP/2 without TLS, for gRPC).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// `round_robin` or `least_requests` (the target with the fewest requests in flight; ties
    /// go round-robin).
    #[serde(default)]
    pub balancing: Balancing,
    /// Time allowed to open a TCP connection to a target.
    #[serde(default = "defaults::connect_timeout")]
    #[schemars(with = "String")]
    pub connect_timeout: DurationSpec,
    /// Time allowed for a target to answer with a response head. A route may override it.
    #[serde(default = "defaults::request_timeout")]
    #[schemars(with = "String")]
    pub request_timeout: DurationSpec,
    /// How long an unused pooled connection to a target is kept.
    #[serde(default = "defaults::upstream_idle_timeout")]
    #[schemars(with = "String")]
    pub idle_timeout: DurationSpec,
    /// Idle connections kept per target.
    #[serde(default = "defaults::max_idle_per_target")]
    pub max_idle_per_target: usize,
    /// Extra attempts on another target after a connection failure. Only requests with an
    /// idempotent method and no body are retried.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Active HTTP health checks. Off when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection of failing targets (like Envoy's outlier detection).
    #[serde(default)]
    pub outlier_detection: OutlierConfig,
    /// The upstream's OpenAPI 3.0 or 3.1 specification: requests (and optionally responses)
    /// of every route to this upstream are validated against it. Off when absent.
    #[serde(default)]
    pub openapi: Option<OpenApiConfig>,
    /// Another pool (a key of `upstreams`) that takes this pool's requests when none of its
    /// targets is available, and when self-healing reroutes around it (see docs/heal.md).
    #[serde(default)]
    pub fallback: Option<String>,
}

/// The wire protocol towards upstream targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    #[default]
    RoundRobin,
    LeastRequests,
}

/// Active health checks: a GET to each target every `interval`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The path to GET, such as `/healthz`.
    pub path: String,
    /// Time between checks of one target.
    #[serde(default = "defaults::health_interval")]
    #[schemars(with = "String")]
    pub interval: DurationSpec,
    /// Time allowed for one check.
    #[serde(default = "defaults::health_timeout")]
    #[schemars(with = "String")]
    pub timeout: DurationSpec,
    /// Consecutive failed checks that mark a target unhealthy.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Consecutive passed checks that mark an unhealthy target healthy again.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
}

/// Passive outlier detection.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive 5xx answers that eject a target; 0 turns this check off.
    #[serde(default = "defaults::consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Consecutive connection failures or timeouts that eject a target; 0 turns it off.
    #[serde(default = "defaults::consecutive_gateway_failures")]
    pub consecutive_gateway_failures: u32,
    /// Ejection time for a first ejection; each further ejection of the same target lasts
    /// this times the number of ejections so far, up to `max_ejection_time`.
    #[serde(default = "defaults::base_ejection_time")]
    #[schemars(with = "String")]
    pub base_ejection_time: DurationSpec,
    /// Cap on one ejection's length.
    #[serde(default = "defaults::max_ejection_time")]
    #[schemars(with = "String")]
    pub max_ejection_time: DurationSpec,
    /// At most this share of the pool (percent) is ejected at once; when it is above 0, at
    /// least one target is ejectable in a pool of two or more. 0 turns ejection off.
    #[serde(default = "defaults::max_ejection_percent")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: defaults::consecutive_5xx(),
            consecutive_gateway_failures: defaults::consecutive_gateway_failures(),
            base_ejection_time: defaults::base_ejection_time(),
            max_ejection_time: defaults::max_ejection_time(),
            max_ejection_percent: defaults::max_ejection_percent(),
        }
    }
}

/// A route: which requests, to which pool, with which limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A unique id, used in metrics, logs and events.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// What the request must look like. An empty match takes every request.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// The upstream pool (a key of `upstreams`).
    #[schemars(with = "String")]
    pub upstream: Spanned<String>,
    /// Per-route limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// This route's changes to the top-level `detect:` settings.
    #[serde(default)]
    pub detect: RouteDetectConfig,
    /// This route's changes to the top-level `behavior:` settings.
    #[serde(default)]
    pub behavior: RouteBehaviorConfig,
    /// Authentication on this route: which providers of `auth.providers` it accepts. No
    /// authentication when absent.
    #[serde(default)]
    pub auth: Option<RouteAuthConfig>,
    /// This route's rate limits, checked in order. When absent, `rate_limit.defaults` apply;
    /// `[]` turns rate limiting off for the route.
    #[serde(default)]
    pub rate_limit: Option<Vec<LimitConfig>>,
    /// This route's change to the top-level `authz:` mode.
    #[serde(default)]
    pub authz: RouteAuthzConfig,
    /// This route's changes to its upstream's `openapi:` settings.
    #[serde(default)]
    pub openapi: RouteOpenApiConfig,
    /// The route serves GraphQL: inspect its operations (depth, aliases, root fields, batch
    /// size, tokens, cost and a cost budget, introspection, persisted queries). See
    /// docs/policy.md, "Protocol inspection". Off when absent.
    #[serde(default)]
    pub graphql: Option<crate::protocols::GraphqlConfig>,
    /// The route serves gRPC: a method allowlist from proto descriptors, message size limits,
    /// reflection off, and request messages decoded for attack detection. See docs/policy.md,
    /// "Protocol inspection". Off when absent.
    #[serde(default)]
    pub grpc: Option<crate::protocols::GrpcConfig>,
    /// Request signatures and `Content-Digest` checks on this route. None when absent.
    #[serde(default)]
    pub integrity: Option<RouteIntegrityConfig>,
    /// Sensitive data in this route's responses: detected, or masked. Off when absent.
    #[serde(default)]
    pub response_inspection: Option<ResponseInspectionConfig>,
}

/// Authorisation (see docs/policy.md, "Authorisation").
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    /// `enforce` refuses (403) what no policy or grant permits and what a `forbid` policy
    /// denies; `monitor` lets it through and logs the decision; `off` does not evaluate.
    #[serde(default)]
    pub mode: AuthzModeConfig,
    /// Cedar policy files, read at start and at every reload. Any parse or validation error
    /// rejects the configuration.
    #[schemars(with = "Vec<String>")]
    pub policies: Vec<Spanned<String>>,
    /// A Cedar schema file (human syntax, or JSON when the name ends in `.json`) added to the
    /// built-in `ApiGuard` schema: it declares `ApiGuard::Claims`, the identity claims
    /// policies may read. Without it no claim is readable.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub schema: Option<Spanned<String>>,
    /// The longest just-in-time grant the admin API gives.
    #[serde(default = "defaults::max_grant_ttl")]
    #[schemars(with = "String")]
    pub max_grant_ttl: DurationSpec,
}

/// What authorisation does with a denied request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthzModeConfig {
    /// Refuse it with 403.
    #[default]
    Enforce,
    /// Let it through; the decision is logged and published (finding `authz.*`, score 0).
    Monitor,
    /// Do not evaluate policies.
    Off,
}

/// A route's change to authorisation.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthzConfig {
    /// Replaces the top-level `authz.mode` for this route.
    #[serde(default)]
    pub mode: Option<AuthzModeConfig>,
}

/// An upstream's OpenAPI specification and how it is enforced.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConfig {
    /// The specification file, YAML or JSON, OpenAPI 3.0.x or 3.1.x; read at start and at
    /// every reload.
    #[schemars(with = "String")]
    pub spec: Spanned<String>,
    /// `enforce` refuses a request that violates the specification (400, 413, 415);
    /// `monitor` lets it through and logs the violations; `off` does not validate.
    #[serde(default)]
    pub mode: OpenApiModeConfig,
    /// A request for a path or method the specification does not declare: `allow` passes
    /// it, `log` passes it with a finding, `block` refuses it (404, 405).
    #[serde(default)]
    pub unknown_endpoints: UnknownEndpointsConfig,
    /// The path prefix the specification's paths are under, such as `/api/v1`. Default:
    /// the path of the first `servers` URL.
    #[serde(default)]
    pub base_path: Option<String>,
    /// Response validation. Off when absent.
    #[serde(default)]
    pub responses: Option<ResponseValidationConfig>,
}

/// What a specification violation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenApiModeConfig {
    /// Refuse the request.
    #[default]
    Enforce,
    /// Let it through; violations are logged and published (findings `openapi.*`, score 0).
    Monitor,
    /// Do not validate.
    Off,
}

/// What happens to a request the specification does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownEndpointsConfig {
    /// Pass it on.
    #[default]
    Allow,
    /// Pass it on with a finding.
    Log,
    /// Refuse it: 404 for an unknown path, 405 for an undeclared method.
    Block,
}

/// Checking the upstream's responses against the specification.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseValidationConfig {
    /// `enforce` replaces a violating response with a 502 (its data never reaches the
    /// client); `monitor` passes it on and logs the violations; `off` does not check.
    #[serde(default = "defaults::response_mode")]
    pub mode: OpenApiModeConfig,
    /// Largest JSON response body buffered for validation; a longer one streams on unchecked
    /// (its status and content type are still checked).
    #[serde(default = "defaults::max_response_validation_bytes")]
    pub max_body_bytes: usize,
    /// Report object members the specification does not declare (excessive data exposure),
    /// even where the schema does not say `additionalProperties: false`.
    #[serde(default = "defaults::yes")]
    pub undeclared_fields: bool,
}

/// A route's changes to its upstream's OpenAPI validation.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteOpenApiConfig {
    /// Replaces the upstream's `openapi.mode` for this route.
    #[serde(default)]
    pub mode: Option<OpenApiModeConfig>,
    /// Replaces the upstream's `openapi.unknown_endpoints` for this route.
    #[serde(default)]
    pub unknown_endpoints: Option<UnknownEndpointsConfig>,
}

/// Request matching. Every given condition must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host name, exact (`api.example.com`) or a leading wildcard (`*.example.com`). Compared
    /// without the port and case-insensitively.
    #[serde(default)]
    pub host: Option<String>,
    /// Path condition; absent means any path.
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Allowed methods (upper case); absent or empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions: name → exact value, or `"*"` for "present with any value".
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One path condition: exactly one of `exact`, `prefix` or `template`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum PathMatch {
    /// The whole path, such as `/healthz`.
    Exact(String),
    /// A prefix at a segment boundary: `/api` matches `/api` and `/api/users`, not `/apix`.
    Prefix(String),
    /// Segments with `{name}` placeholders matching one segment each, such as
    /// `/users/{id}/orders/{order}`.
    Template(String),
}

/// Per-route limits; a request over one is refused before it reaches the upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body in bytes (413 above it; checked against Content-Length up front
    /// and counted while streaming).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// Most request headers (431 above it).
    #[serde(default = "defaults::max_header_count")]
    pub max_header_count: usize,
    /// Largest total size of request header names and values in bytes (431 above it).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Overrides the pool's `request_timeout` for this route.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub request_timeout: Option<DurationSpec>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: defaults::max_body_bytes(),
            max_header_count: defaults::max_header_count(),
            max_header_bytes: defaults::max_header_bytes(),
            request_timeout: None,
        }
    }
}

/// What the detection engine does with a request whose score reaches the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DetectMode {
    /// Refuse it with 403 (problem+json, no attack detail).
    #[default]
    Block,
    /// Let it through; findings are still logged, counted and published as events (for
    /// tuning a new route).
    DetectOnly,
    /// Do not inspect.
    Off,
}

/// Attack detection settings (see docs/detection.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// `block`, `detect_only` or `off`.
    #[serde(default)]
    pub mode: DetectMode,
    /// 1 (fewest false positives) to 4 (most detections): rules above this level do not run.
    #[serde(default = "defaults::paranoia")]
    pub paranoia: u8,
    /// The anomaly score at which a request is refused. Findings score by severity: notice 2,
    /// warning 3, error 4, critical 5.
    #[serde(default = "defaults::threshold")]
    pub threshold: u32,
    /// How many bytes of a request body are buffered and inspected. A longer body is inspected
    /// up to here (which is itself a notice-level finding) and the rest is streamed.
    #[serde(default = "defaults::max_body_inspect")]
    pub max_body_inspect: usize,
    /// Extra rule files (YAML, the format of docs/detection.md), added to the built-in rules.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub rule_files: Vec<Spanned<String>>,
    /// Precise exceptions: a rule or class, optionally on one target only.
    #[serde(default)]
    pub exclusions: Vec<ExclusionConfig>,
    /// Bounds on request parsing; reaching one is itself a finding (class `limits`).
    #[serde(default)]
    pub limits: ParseLimitsConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            mode: DetectMode::default(),
            paranoia: defaults::paranoia(),
            threshold: defaults::threshold(),
            max_body_inspect: defaults::max_body_inspect(),
            rule_files: Vec::new(),
            exclusions: Vec::new(),
            limits: ParseLimitsConfig::default(),
        }
    }
}

/// A route's changes to the top-level detection settings: a field given here replaces the
/// top-level one, except `rule_files` and `exclusions`, which are added to the top-level ones.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteDetectConfig {
    #[serde(default)]
    pub mode: Option<DetectMode>,
    #[serde(default)]
    pub paranoia: Option<u8>,
    #[serde(default)]
    pub threshold: Option<u32>,
    #[serde(default)]
    pub max_body_inspect: Option<usize>,
    /// Rule files for this route only, in addition to the top-level ones.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub rule_files: Vec<Spanned<String>>,
    /// Exclusions for this route only, in addition to the top-level ones.
    #[serde(default)]
    pub exclusions: Vec<ExclusionConfig>,
}

/// Silences a rule or a class, everywhere or on one target, so a false positive is tuned away
/// without turning a rule off everywhere. `rule` and `class` may end in `*` (a prefix).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExclusionConfig {
    /// A rule id such as `sqli.tokenizer`, or a prefix such as `sqli.*`.
    #[serde(default)]
    pub rule: Option<String>,
    /// A class such as `sqli`, `xss`, `rce`.
    #[serde(default)]
    pub class: Option<String>,
    /// The one target it applies to, such as `json:$.comment`, `header:x-preview`,
    /// `cookie:session`, `query:q` (a trailing `*` makes it a prefix). Absent: every target.
    #[serde(default)]
    pub target: Option<String>,
}

/// What the behaviour stage does with what it notices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BehaviorMode {
    /// Learn baselines and track clients, report nothing (observe only).
    #[default]
    Learn,
    /// Learn, and report findings with a score of 0: logged, counted and published as
    /// events, never changing the decision.
    Detect,
    /// Learn, and add findings' scores to the request's anomaly score (the detection
    /// threshold and mode then decide).
    Enforce,
    /// Neither learn nor judge.
    Off,
}

/// Behavioural detection settings (see docs/behavior.md for every model).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BehaviorConfig {
    /// `learn` (observe only), `detect` (report, score 0), `enforce` (report and score) or
    /// `off`.
    #[serde(default)]
    pub mode: BehaviorMode,
    /// Endpoints (route, method, path template) learned at most; further ones are not
    /// learned. Read at start only.
    #[serde(default = "defaults::behavior_max_endpoints")]
    #[schemars(range(min = 1))]
    pub max_endpoints: usize,
    /// Clients (identities or addresses) tracked at most; past it the least recently seen
    /// are forgotten. Read at start only.
    #[serde(default = "defaults::behavior_max_clients")]
    #[schemars(range(min = 1))]
    pub max_clients: usize,
    /// Parameters learned per endpoint at most. Read at start only.
    #[serde(default = "defaults::behavior_max_params")]
    #[schemars(range(min = 1))]
    pub max_params: usize,
    /// A JSON file keeping the learned endpoint baselines across restarts: loaded at start
    /// (a missing file is fine; an unreadable one is logged and learning starts afresh),
    /// written every `persist_interval` and at shutdown. Off when absent. Read at start only.
    #[serde(default)]
    pub persist_path: Option<String>,
    /// How often the baselines are written to `persist_path` (at least 1s).
    #[serde(default = "defaults::behavior_persist_interval")]
    #[schemars(with = "String")]
    pub persist_interval: DurationSpec,
    /// The positive model: each parameter's learned character class, length and values.
    #[serde(default)]
    pub shape: ShapeConfig,
    /// One client walking many distinct ids of one endpoint template (enumeration, BOLA).
    #[serde(default = "defaults::behavior_enumeration")]
    pub enumeration: BucketConfig,
    /// One client collecting many distinct 404/410 answers (probing, CrowdSec's
    /// `http-probing`).
    #[serde(default = "defaults::behavior_probing")]
    pub probing: BucketConfig,
    /// One client requesting many distinct non-static paths (crawling, CrowdSec's
    /// `http-crawl-non_statics`).
    #[serde(default = "defaults::behavior_crawling")]
    pub crawling: BucketConfig,
    /// One client's request bursts.
    #[serde(default = "defaults::behavior_rate")]
    pub rate: BucketConfig,
    /// One client collecting many 401/403 answers (brute force, credential stuffing).
    #[serde(default = "defaults::behavior_auth_failures")]
    pub auth_failures: BucketConfig,
    /// Bot signals: a browser User-Agent without a browser's headers, headers changing under
    /// one User-Agent, automation agents.
    #[serde(default)]
    pub bot: BotConfig,
    /// Call sequences: transitions between endpoints never seen in clean sessions.
    #[serde(default)]
    pub sequence: SequenceConfig,
    /// A client's request rate and 4xx ratio against the learned distribution of clients.
    #[serde(default)]
    pub rate_anomaly: RateAnomalyConfig,
    /// Authentication failures (401/403) per account, from any address (credential
    /// stuffing against one account).
    #[serde(default)]
    pub accounts: AccountsConfig,
    /// Request payload sizes and endpoint latency judged against their learned baselines.
    #[serde(default)]
    pub volume: VolumeConfig,
}

/// Payload sizes and latency: a request body far larger than its endpoint's learned sizes is
/// flagged (warning); an endpoint whose recent responses are far slower than its learned
/// latency is reported once per spell (a zero-score finding).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Run this model.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Clean sized requests (payloads) or responses (latency) an endpoint needs before it is
    /// judged: a cold baseline never fires.
    #[serde(default = "defaults::behavior_volume_min_samples")]
    #[schemars(range(min = 1))]
    pub min_samples: u64,
    /// Standard deviations above the learned mean a value must be.
    #[serde(default = "defaults::behavior_volume_deviations")]
    #[schemars(range(min = 1.0))]
    pub deviations: f64,
    /// And at least this many times the learned mean.
    #[serde(default = "defaults::behavior_volume_factor")]
    #[schemars(range(min = 1.0))]
    pub factor: f64,
    /// Request bodies up to this many bytes are never flagged.
    #[serde(default = "defaults::behavior_volume_min_payload_bytes")]
    pub min_payload_bytes: u64,
    /// Latency up to this much above the learned latency is never flagged, such as `100ms`.
    #[serde(default = "defaults::behavior_volume_latency_floor")]
    #[schemars(with = "String")]
    pub latency_floor: DurationSpec,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            enabled: true,
            min_samples: defaults::behavior_volume_min_samples(),
            deviations: defaults::behavior_volume_deviations(),
            factor: defaults::behavior_volume_factor(),
            min_payload_bytes: defaults::behavior_volume_min_payload_bytes(),
            latency_floor: defaults::behavior_volume_latency_floor(),
        }
    }
}

/// Bot signals read from request headers. Only User-Agents claiming a browser are checked
/// against browser habits: API clients sending few headers are not flagged for it.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Run this model.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Flag User-Agents naming an automation tool (headless browsers, scraping frameworks):
    /// a weak signal (notice, 2 points).
    #[serde(default = "defaults::yes")]
    pub automation_agents: bool,
    /// Flag a client whose User-Agent, Accept-Encoding and Accept-Language headers change
    /// presence or order while its User-Agent stays the same.
    #[serde(default = "defaults::yes")]
    pub consistency: bool,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            enabled: true,
            automation_agents: true,
            consistency: true,
        }
    }
}

/// The call-sequence model: per endpoint, how often each endpoint came right before it in
/// clean sessions (a bounded first-order Markov model).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    /// Run this model.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Clean transitions into an endpoint before transitions into it are judged.
    #[serde(default = "defaults::behavior_sequence_min_samples")]
    #[schemars(range(min = 1))]
    pub min_samples: u64,
    /// A transition seen at most this share of the clean transitions into its endpoint is
    /// flagged; 0 flags only transitions never seen.
    #[serde(default = "defaults::behavior_sequence_rare_ratio")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub rare_ratio: f64,
    /// Distinct previous endpoints remembered per endpoint (memory bound).
    #[serde(default = "defaults::behavior_sequence_max_predecessors")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_predecessors: usize,
    /// A pause longer than this starts a new session, such as `30m`.
    #[serde(default = "defaults::behavior_sequence_session_gap")]
    #[schemars(with = "String")]
    pub session_gap: DurationSpec,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        SequenceConfig {
            enabled: true,
            min_samples: defaults::behavior_sequence_min_samples(),
            rare_ratio: defaults::behavior_sequence_rare_ratio(),
            max_predecessors: defaults::behavior_sequence_max_predecessors(),
            session_gap: defaults::behavior_sequence_session_gap(),
        }
    }
}

/// Learned rate and error-ratio anomalies: each client's requests and 4xx answers per window
/// on a route, against the distribution learned from clean client windows of that route.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateAnomalyConfig {
    /// Run this model.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// One client's counting window, such as `1m`.
    #[serde(default = "defaults::behavior_rate_anomaly_window")]
    #[schemars(with = "String")]
    pub window: DurationSpec,
    /// Clean client windows a route needs before its clients are judged.
    #[serde(default = "defaults::behavior_rate_anomaly_min_windows")]
    #[schemars(range(min = 1))]
    pub min_windows: u64,
    /// Standard deviations above the learned mean (of the logarithm of requests per window,
    /// and of the 4xx ratio) a client must be.
    #[serde(default = "defaults::behavior_rate_anomaly_deviations")]
    #[schemars(range(min = 1.0))]
    pub deviations: f64,
    /// Never flag a client's rate below this many requests in a window.
    #[serde(default = "defaults::behavior_rate_anomaly_min_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: u32,
    /// Responses a window needs before its 4xx ratio is learned or judged.
    #[serde(default = "defaults::behavior_rate_anomaly_min_responses")]
    #[schemars(range(min = 1))]
    pub min_responses: u32,
    /// Never flag a client's 4xx ratio below this.
    #[serde(default = "defaults::behavior_rate_anomaly_min_error_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_error_ratio: f64,
}

impl Default for RateAnomalyConfig {
    fn default() -> Self {
        RateAnomalyConfig {
            enabled: true,
            window: defaults::behavior_rate_anomaly_window(),
            min_windows: defaults::behavior_rate_anomaly_min_windows(),
            deviations: defaults::behavior_rate_anomaly_deviations(),
            min_requests: defaults::behavior_rate_anomaly_min_requests(),
            min_responses: defaults::behavior_rate_anomaly_min_responses(),
            min_error_ratio: defaults::behavior_rate_anomaly_min_error_ratio(),
        }
    }
}

/// Authentication failures per account: each 401/403 answered to a request naming the
/// account pours one unit; while the bucket overflows, requests naming it are flagged.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// Run this model.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Failures an account's bucket holds before it overflows.
    #[serde(default = "defaults::behavior_accounts_capacity")]
    #[schemars(range(min = 1))]
    pub capacity: u32,
    /// Time for one failure to leak out, such as `30s`.
    #[serde(default = "defaults::behavior_accounts_leak")]
    #[schemars(with = "String")]
    pub leak: DurationSpec,
    /// The body field naming the account in a JSON or form login request, dotted for
    /// nested JSON (`username`, `user.email`). Set it on the login route: the body is then
    /// buffered for inspection. Without it, the authenticated identity is the account.
    #[serde(default)]
    pub field: Option<String>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            enabled: true,
            capacity: defaults::behavior_accounts_capacity(),
            leak: defaults::behavior_accounts_leak(),
            field: None,
        }
    }
}

impl Default for BehaviorConfig {
    fn default() -> Self {
        BehaviorConfig {
            mode: BehaviorMode::Learn,
            max_endpoints: defaults::behavior_max_endpoints(),
            max_clients: defaults::behavior_max_clients(),
            max_params: defaults::behavior_max_params(),
            persist_path: None,
            persist_interval: defaults::behavior_persist_interval(),
            shape: ShapeConfig::default(),
            enumeration: defaults::behavior_enumeration(),
            probing: defaults::behavior_probing(),
            crawling: defaults::behavior_crawling(),
            rate: defaults::behavior_rate(),
            auth_failures: defaults::behavior_auth_failures(),
            bot: BotConfig::default(),
            sequence: SequenceConfig::default(),
            rate_anomaly: RateAnomalyConfig::default(),
            accounts: AccountsConfig::default(),
            volume: VolumeConfig::default(),
        }
    }
}

/// The positive model of parameter values.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShapeConfig {
    /// Judge values against their learned shape.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Clean requests (no finding, answered below 400) an endpoint needs before its
    /// parameters are judged.
    #[serde(default = "defaults::behavior_min_samples")]
    #[schemars(range(min = 1))]
    pub min_samples: u64,
    /// A value longer than `max(longest seen × length_factor, longest seen + 8)` is overlong.
    #[serde(default = "defaults::behavior_length_factor")]
    #[schemars(range(min = 1.0))]
    pub length_factor: f64,
    /// A parameter with at most this many distinct (non-numeric) values, each seen five
    /// times on average, is an enumeration: an unseen value is a finding.
    #[serde(default = "defaults::behavior_enum_max_values")]
    #[schemars(range(min = 1, max = 256))]
    pub enum_max_values: usize,
}

impl Default for ShapeConfig {
    fn default() -> Self {
        ShapeConfig {
            enabled: true,
            min_samples: defaults::behavior_min_samples(),
            length_factor: defaults::behavior_length_factor(),
            enum_max_values: defaults::behavior_enum_max_values(),
        }
    }
}

/// A leaky bucket per client: each counted event pours one unit, one unit leaks every
/// `leak`, and while the level is above `capacity` the client's requests are flagged.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Run this model.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Units the bucket holds before it overflows.
    #[schemars(range(min = 1))]
    pub capacity: u32,
    /// Time for one unit to leak out, such as `1s` or `500ms`.
    #[schemars(with = "String")]
    pub leak: DurationSpec,
}

/// A route's changes to the top-level behaviour settings: a field given here replaces the
/// top-level one. Without a top-level `behavior:` section the defaults apply with mode `off`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteBehaviorConfig {
    /// Replaces `behavior.mode`.
    #[serde(default)]
    pub mode: Option<BehaviorMode>,
    /// Replaces `behavior.shape`.
    #[serde(default)]
    pub shape: Option<ShapeConfig>,
    /// Replaces `behavior.enumeration`.
    #[serde(default)]
    pub enumeration: Option<BucketConfig>,
    /// Replaces `behavior.probing`.
    #[serde(default)]
    pub probing: Option<BucketConfig>,
    /// Replaces `behavior.crawling`.
    #[serde(default)]
    pub crawling: Option<BucketConfig>,
    /// Replaces `behavior.rate`.
    #[serde(default)]
    pub rate: Option<BucketConfig>,
    /// Replaces `behavior.auth_failures`.
    #[serde(default)]
    pub auth_failures: Option<BucketConfig>,
    /// Replaces `behavior.bot`.
    #[serde(default)]
    pub bot: Option<BotConfig>,
    /// Replaces `behavior.sequence`.
    #[serde(default)]
    pub sequence: Option<SequenceConfig>,
    /// Replaces `behavior.rate_anomaly`.
    #[serde(default)]
    pub rate_anomaly: Option<RateAnomalyConfig>,
    /// Replaces `behavior.accounts` (set `field` here on the login route).
    #[serde(default)]
    pub accounts: Option<AccountsConfig>,
    /// Replaces `behavior.volume`.
    #[serde(default)]
    pub volume: Option<VolumeConfig>,
}

/// Parser bounds of the detection engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ParseLimitsConfig {
    /// Deepest JSON or XML nesting inspected.
    pub max_depth: usize,
    /// Most values (arguments, keys, headers, ...) inspected per request.
    pub max_targets: usize,
    /// Most multipart parts parsed.
    pub max_parts: usize,
    /// Longest single value inspected; a longer one is inspected up to this length.
    pub max_value_len: usize,
    /// Longest argument or key name; a longer one is a finding.
    pub max_name_len: usize,
    /// Most query plus form arguments; more is a finding.
    pub max_args: usize,
}

impl Default for ParseLimitsConfig {
    fn default() -> Self {
        ParseLimitsConfig {
            max_depth: 64,
            max_targets: 2048,
            max_parts: 128,
            max_value_len: 256 * 1024,
            max_name_len: 100,
            max_args: 255,
        }
    }
}

/// The connection to a hub (see docs/hub.md, "The gateway's side").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's base URL, such as `http://hub.internal:8700` (plain HTTP; put TLS in front
    /// of the hub with a local proxy for now).
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// A file holding this gateway's participant API key (as given by the hub's admin API).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub api_key_file: Option<Spanned<String>>,
    /// The API key inline (for tests and demos; prefer `api_key_file`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Report this gateway's blocking decisions to the hub.
    #[serde(default = "defaults::yes")]
    pub report: bool,
    /// Directory of the durable outbox: reports wait here while the hub is unreachable.
    #[serde(default = "defaults::outbox")]
    pub outbox: String,
    /// Reports kept in the outbox at most; past it the oldest are dropped (and counted).
    #[serde(default = "defaults::outbox_max")]
    pub outbox_max: usize,
    /// What to do with indicators other participants share.
    #[serde(default)]
    pub subscribe: SubscribeConfig,
}

/// The subscriber's local policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeConfig {
    /// `enforce` blocks shared addresses until the indicator expires; `monitor` logs them and
    /// lists them without blocking (authorisation policies read the list as the address's
    /// reputation); `off` does not fetch the feed.
    #[serde(default)]
    pub mode: SubscribeMode,
    /// Indicators with a lower confidence (0..100) are ignored.
    #[serde(default)]
    pub min_confidence: u8,
    /// Indicators with a lower trust score (0..100) are ignored.
    #[serde(default)]
    pub min_trust: u8,
    /// Attack classes to act on (`sqli`, `xss`, ...); empty means all.
    #[serde(default)]
    pub categories: Vec<String>,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        SubscribeConfig {
            mode: SubscribeMode::Enforce,
            min_confidence: 0,
            min_trust: 0,
            categories: Vec::new(),
        }
    }
}

/// How shared indicators are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscribeMode {
    #[default]
    Enforce,
    Monitor,
    Off,
}

/// Authentication providers and continuous verification (see docs/policy.md).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Providers by name; a route lists the ones it accepts under `auth.providers`.
    #[serde(default)]
    pub providers: BTreeMap<String, AuthProviderConfig>,
    /// Continuous verification of credentials: a token or key used from another network or
    /// country, or by requests that score high, is challenged or revoked. Off when absent.
    #[serde(default)]
    pub continuous: Option<ContinuousConfig>,
}

/// One authentication provider: exactly one of `jwt`, `api_keys` or `mtls`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AuthProviderConfig {
    /// Bearer JSON Web Tokens.
    Jwt(Box<JwtConfig>),
    /// API keys in a request header.
    ApiKeys(ApiKeysConfig),
    /// The client certificate verified by the listener (mTLS, `client_ca`).
    Mtls(MtlsConfig),
}

/// A JWT provider. Give exactly one key source: `jwks`, `public_key_file`, `secret` or
/// `secret_file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted issuers (`iss`). When given, a token without one of them is refused; when
    /// several JWT providers serve one route, each takes the tokens of its issuers.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted audiences (`aud`). When given, the token's `aud` must contain one of them.
    /// Set it: without it a token minted for another API is accepted.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted algorithms (`RS256`, `PS256`, `ES256`, `ES384`, `EdDSA`, `HS256`, ...).
    /// Default: every RS, PS, ES and EdDSA algorithm. HS algorithms need `secret` or
    /// `secret_file`, and only they may be used with one.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub algorithms: Vec<Spanned<String>>,
    /// Clock skew tolerated when checking `exp` and `nbf` (whole seconds).
    #[serde(default = "defaults::clock_skew")]
    #[schemars(with = "String")]
    pub clock_skew: DurationSpec,
    /// Verification keys from a JWKS URL (the identity provider's `jwks_uri`).
    #[serde(default)]
    pub jwks: Option<JwksConfig>,
    /// A PEM file with the public key (RSA, EC or Ed25519) that signs the tokens.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub public_key_file: Option<Spanned<String>>,
    /// A file holding the shared secret of HS algorithms (trailing newlines are ignored).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub secret_file: Option<Spanned<String>>,
    /// The shared secret of HS algorithms inline (for tests; prefer `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    /// The request header carrying the token. `authorization` (the default) expects
    /// `Bearer <token>`; another header carries the token alone.
    #[serde(default = "defaults::jwt_header")]
    pub header: String,
    /// The claim naming the identity's subject.
    #[serde(default = "defaults::subject_claim")]
    pub subject_claim: String,
}

/// Where a JWT provider fetches its keys.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The JWKS document's URL, `https://` (or `http://` on a trusted network). Redirects are
    /// not followed.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// Time between scheduled fetches. A token naming an unknown key id (`kid`) also
    /// triggers a fetch, at most once per `min_refresh_interval`.
    #[serde(default = "defaults::jwks_refresh")]
    #[schemars(with = "String")]
    pub refresh_interval: DurationSpec,
    /// Shortest time between two fetches triggered by unknown key ids.
    #[serde(default = "defaults::jwks_min_refresh")]
    #[schemars(with = "String")]
    pub min_refresh_interval: DurationSpec,
    /// Time allowed for one fetch.
    #[serde(default = "defaults::jwks_timeout")]
    #[schemars(with = "String")]
    pub timeout: DurationSpec,
    /// A PEM file of CA certificates trusted for the JWKS URL instead of the system's.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
}

/// An API key provider.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// The request header carrying the key.
    #[serde(default = "defaults::api_key_header")]
    pub header: String,
    /// The accepted keys.
    pub keys: Vec<ApiKeyConfig>,
}

/// One API key, stored as its SHA-256.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The identity's subject when this key is presented (unique within the provider).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The key's SHA-256 in hex (`printf %s "$KEY" | sha256sum`).
    #[schemars(with = "String")]
    pub sha256: Spanned<String>,
    /// Attributes of the identity (its claims, for authorisation).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A client certificate provider. The listener must verify client certificates
/// (`tls.client_ca`); without a certificate this provider finds no credential.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// Accepted certificate subjects, exact, as RFC 4514 strings (`CN=billing,O=Example`).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Accepted subject alternative names: `DNS:name`, `URI:spiffe://...`, `email:...`; a
    /// trailing `*` makes a prefix. With `subjects` also empty, any verified certificate is
    /// accepted.
    #[serde(default)]
    pub sans: Vec<String>,
}

/// Continuous verification (see docs/policy.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContinuousConfig {
    /// A CSV file mapping networks to countries, one `network,country` per line
    /// (`203.0.113.0/24,FR`). Without it, countries are not compared.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ip_database: Option<Spanned<String>>,
    /// IPv4 addresses sharing a prefix of this length are the same network.
    #[serde(default = "defaults::network_prefix_v4")]
    pub network_prefix_v4: u8,
    /// IPv6 addresses sharing a prefix of this length are the same network.
    #[serde(default = "defaults::network_prefix_v6")]
    pub network_prefix_v6: u8,
    /// What a credential used from another network does: `allow` (count it and follow the
    /// credential), `challenge` (401) or `revoke` (401, and refused for `revoke_for`).
    #[serde(default = "defaults::on_new_network")]
    pub on_new_network: ContextActionConfig,
    /// What a credential used from another country (per `ip_database`) does.
    #[serde(default = "defaults::on_new_country")]
    pub on_new_country: ContextActionConfig,
    /// A credential whose recent requests scored this much (anomaly score, decaying with
    /// `risk_half_life`) meets `on_risk`. 0 turns the risk check off.
    #[serde(default = "defaults::risk_threshold")]
    pub risk_threshold: u32,
    /// Time for a credential's risk to halve.
    #[serde(default = "defaults::risk_half_life")]
    #[schemars(with = "String")]
    pub risk_half_life: DurationSpec,
    /// What a credential at `risk_threshold` does.
    #[serde(default = "defaults::on_risk")]
    pub on_risk: ContextActionConfig,
    /// How long a revoked credential is refused.
    #[serde(default = "defaults::revoke_for")]
    #[schemars(with = "String")]
    pub revoke_for: DurationSpec,
    /// A credential unused this long is forgotten: its next use starts a new context.
    #[serde(default = "defaults::credential_idle_timeout")]
    #[schemars(with = "String")]
    pub idle_timeout: DurationSpec,
    /// Credentials tracked at most; past it, new credentials are not tracked until idle ones
    /// are forgotten.
    #[serde(default = "defaults::max_credentials")]
    pub max_credentials: usize,
}

/// What a context change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContextActionConfig {
    /// Let the request through, count it, and make the new context the credential's.
    Allow,
    /// Answer 401 with a step-up challenge; the credential keeps working from its context.
    Challenge,
    /// Answer 401 and refuse the credential everywhere for `revoke_for`.
    Revoke,
}

/// A route's authentication.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthConfig {
    /// Providers (keys of `auth.providers`) accepted on this route. The first one whose
    /// kind of credential the request carries decides.
    #[schemars(with = "Vec<String>")]
    pub providers: Vec<Spanned<String>>,
    /// Let requests that carry no credential at all through, anonymously. A credential that
    /// fails is refused either way.
    #[serde(default)]
    pub optional: bool,
    /// Apply `auth.continuous` on this route (when it is configured).
    #[serde(default = "defaults::yes")]
    pub continuous: bool,
}

/// Rate limiting (see docs/policy.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Cluster mode: share counters between gateway replicas through Redis. Limits are
    /// local to each replica when absent.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Limits of the routes that have no `rate_limit:` of their own.
    #[serde(default)]
    pub defaults: Vec<LimitConfig>,
    /// Add `RateLimit` and `RateLimit-Policy` headers to allowed responses too (a 429
    /// always has them).
    #[serde(default = "defaults::yes")]
    pub headers: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            redis: None,
            defaults: Vec::new(),
            headers: true,
        }
    }
}

/// Where replicas share their rate-limit counters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// How often each replica sends its counts and reads the cluster's. A client can get
    /// up to one interval's worth of extra requests through each replica.
    #[serde(default = "defaults::redis_sync_interval")]
    #[schemars(with = "String")]
    pub sync_interval: DurationSpec,
    /// Time allowed for one sync; past it, Redis counts as unreachable for that interval.
    #[serde(default = "defaults::redis_timeout")]
    #[schemars(with = "String")]
    pub timeout: DurationSpec,
    /// Prefix of the Redis keys, so that several fleets can share one Redis.
    #[serde(default = "defaults::redis_key_prefix")]
    pub key_prefix: String,
}

/// One rate limit: `rate` requests per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in the `RateLimit` headers, metrics and Redis keys (letters, digits,
    /// `-`, `_`, `.`; unique on a route). Defaults to the key.
    #[serde(default)]
    pub name: Option<String>,
    /// What is counted: `client` (address; IPv6 by /64), `api_key`, `identity` (any
    /// authenticated subject) or `route` (all requests of the route together).
    pub key: LimitKeyConfig,
    /// Requests allowed per `per`, sustained.
    pub rate: u32,
    /// The period of `rate`, such as `1s` or `1m`.
    #[schemars(with = "String")]
    pub per: DurationSpec,
    /// Requests allowed at once (a full bucket). Defaults to `rate`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Share this limit between replicas when `rate_limit.redis` is set.
    #[serde(default = "defaults::yes")]
    pub cluster: bool,
    /// Keys tracked at most; past it, new keys share one bucket until idle keys are
    /// forgotten.
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
}

/// What a limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKeyConfig {
    /// The client's address (IPv6 addresses by their /64).
    Client,
    /// The API key the request authenticated with; other requests are not counted.
    ApiKey,
    /// The authenticated subject, whatever the method; anonymous requests are not counted.
    Identity,
    /// All requests of the route together.
    Route,
}

/// Keys of HTTP message signatures and the replay cache (see docs/policy.md, "Request
/// signatures").
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Verification keys by key id (the `keyid` parameter of `Signature-Input`).
    #[serde(default)]
    pub keys: BTreeMap<String, SignatureKeyConfig>,
    /// Signatures (and nonces) remembered to refuse replays, at most. Each is kept for its
    /// route's `max_age` plus twice the `clock_skew`; when the cache is full the oldest are
    /// forgotten early (counted in `apiguard_signature_replay_evictions_total`). Read at
    /// start only.
    #[serde(default = "defaults::replay_cache_size")]
    #[schemars(range(min = 1))]
    pub replay_cache_size: usize,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        SignaturesConfig {
            keys: BTreeMap::new(),
            replay_cache_size: defaults::replay_cache_size(),
        }
    }
}

/// A signature algorithm of the RFC 9421 registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum SignatureAlgorithmConfig {
    /// EdDSA with Curve25519 (`ed25519`): a public key.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// HMAC with SHA-256 (`hmac-sha256`): a shared secret of at least 32 bytes.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

/// One signature key. Give exactly one of `public_key`, `public_key_file` (ed25519) or
/// `secret`, `secret_file` (hmac-sha256).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureKeyConfig {
    /// `ed25519` or `hmac-sha256`.
    pub algorithm: SignatureAlgorithmConfig,
    /// The Ed25519 public key inline: base64 of its 32 bytes (or of its DER
    /// SubjectPublicKeyInfo, the body of a PEM block).
    #[serde(default)]
    pub public_key: Option<String>,
    /// A file with the Ed25519 public key: PEM (`-----BEGIN PUBLIC KEY-----`) or base64 of
    /// its 32 bytes.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub public_key_file: Option<Spanned<String>>,
    /// The HMAC secret inline, base64 (for tests; prefer `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the HMAC secret as raw bytes (trailing newlines are ignored).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub secret_file: Option<Spanned<String>>,
    /// The identity's subject when this key signs a request. Defaults to the key id.
    #[serde(default)]
    pub subject: Option<String>,
    /// Attributes of the identity (its claims, for authorisation).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A route's integrity checks.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteIntegrityConfig {
    /// Verify HTTP message signatures (RFC 9421). Off when absent.
    #[serde(default)]
    pub signature: Option<RouteSignatureConfig>,
    /// Verify `Content-Digest` (RFC 9530) against the body. Off when absent (a signature
    /// covering `content-digest` still has it checked).
    #[serde(default)]
    pub content_digest: Option<ContentDigestConfig>,
}

/// What a route demands of signatures.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSignatureConfig {
    /// Refuse requests without a signature (401). With `false`, unsigned requests pass and
    /// signed ones must verify.
    #[serde(default = "defaults::yes")]
    pub required: bool,
    /// Key ids (keys of `signatures.keys`) accepted on this route. Default: every key.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub keys: Vec<Spanned<String>>,
    /// Components every signature must cover: derived components (`@method`,
    /// `@target-uri`, `@authority`, `@scheme`, `@request-target`, `@path`, `@query`) and
    /// lower-case header names (`content-digest`, `content-type`, ...). `@target-uri` counts
    /// as covering scheme, authority, path and query; `@request-target` path and query.
    #[serde(default = "defaults::signature_components")]
    pub components: Vec<String>,
    /// How old a signature's `created` may be.
    #[serde(default = "defaults::signature_max_age")]
    #[schemars(with = "String")]
    pub max_age: DurationSpec,
    /// Clock difference tolerated between signers and the gateway (whole seconds).
    #[serde(default = "defaults::signature_clock_skew")]
    #[schemars(with = "String")]
    pub clock_skew: DurationSpec,
    /// Verify only the signature with this label. Default: the first signature whose key id
    /// the route accepts.
    #[serde(default)]
    pub label: Option<String>,
    /// The `tag` parameter signatures must carry (an application-specific value).
    #[serde(default)]
    pub tag: Option<String>,
}

/// What a route demands of `Content-Digest`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentDigestConfig {
    /// Refuse requests without a digest of an accepted algorithm (400).
    #[serde(default = "defaults::yes")]
    pub required: bool,
    /// Accepted algorithms: `sha-256`, `sha-512`. Digests of other algorithms are ignored.
    #[serde(default = "defaults::digest_algorithms")]
    pub algorithms: Vec<String>,
}

/// What response inspection does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseInspectionMode {
    /// Do not inspect.
    Off,
    /// Report findings (security events, metrics); the response passes unchanged.
    #[default]
    Detect,
    /// Report findings and replace the data with `[REDACTED:<detector>]`.
    Mask,
}

/// Sensitive data in responses (see docs/policy.md, "Response inspection").
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseInspectionConfig {
    /// `off`, `detect` or `mask`.
    #[serde(default)]
    pub mode: ResponseInspectionMode,
    /// Detectors to run: `card_number`, `us_ssn`, `uk_nino`, `email`, `aws_access_key`,
    /// `private_key`, `jwt`, `api_key`, `stack_trace`. Default: all.
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
    /// Largest response body buffered and inspected, in bytes. A longer body (by its
    /// `Content-Length`, or as it arrives) passes unchecked and is counted.
    #[serde(default = "defaults::response_max_body_bytes")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: usize,
}

/// Access logs: one JSON line per request on standard output.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Write access logs.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig { enabled: true }
    }
}

/// Hot reload. SIGHUP always reloads; this adds watching the file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the file's content changes.
    #[serde(default = "defaults::yes")]
    pub watch: bool,
    /// How often the file is checked for changes.
    #[serde(default = "defaults::watch_interval")]
    #[schemars(with = "String")]
    pub watch_interval: DurationSpec,
    /// Applied configuration versions kept for inspection and rollback.
    #[serde(default = "defaults::keep_versions")]
    pub keep_versions: usize,
    /// Time given to in-flight requests to finish on shutdown (SIGTERM) before connections
    /// are closed.
    #[serde(default = "defaults::drain_timeout")]
    #[schemars(with = "String")]
    pub drain_timeout: DurationSpec,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            watch_interval: defaults::watch_interval(),
            keep_versions: defaults::keep_versions(),
            drain_timeout: defaults::drain_timeout(),
        }
    }
}

/// A duration written as a number with a unit: `250ms`, `10s`, `5m`, `1h`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

impl fmt::Debug for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl DurationSpec {
    pub const fn secs(s: u64) -> Self {
        DurationSpec(Duration::from_secs(s))
    }

    pub const fn millis(ms: u64) -> Self {
        DurationSpec(Duration::from_millis(ms))
    }

    /// Parses `250ms`, `10s`, `5m` or `1h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m or h)"))?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` does not start with a whole number"))?;
        let millis = match unit {
            "ms" => Some(number),
            "s" => number.checked_mul(1_000),
            "m" => number.checked_mul(60_000),
            "h" => number.checked_mul(3_600_000),
            _ => {
                return Err(format!(
                    "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
                ));
            }
        }
        .ok_or_else(|| format!("`{text}` is too long"))?;
        Ok(DurationSpec(Duration::from_millis(millis)))
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DurationSpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Default values, in one place so the docs and the code agree.
pub mod defaults {
    use super::{BucketConfig, DurationSpec};

    fn bucket(capacity: u32, leak: DurationSpec) -> BucketConfig {
        BucketConfig {
            enabled: true,
            capacity,
            leak,
        }
    }
    pub fn behavior_max_endpoints() -> usize {
        10_000
    }
    pub fn behavior_max_clients() -> usize {
        100_000
    }
    pub fn behavior_max_params() -> usize {
        64
    }
    pub fn behavior_persist_interval() -> DurationSpec {
        DurationSpec::secs(300)
    }
    pub fn behavior_min_samples() -> u64 {
        50
    }
    pub fn behavior_length_factor() -> f64 {
        2.0
    }
    pub fn behavior_enum_max_values() -> usize {
        16
    }
    pub fn behavior_enumeration() -> BucketConfig {
        bucket(30, DurationSpec::secs(1))
    }
    pub fn behavior_probing() -> BucketConfig {
        bucket(10, DurationSpec::secs(10))
    }
    pub fn behavior_crawling() -> BucketConfig {
        bucket(40, DurationSpec::millis(500))
    }
    pub fn behavior_rate() -> BucketConfig {
        bucket(600, DurationSpec::millis(10))
    }
    pub fn behavior_auth_failures() -> BucketConfig {
        bucket(10, DurationSpec::secs(10))
    }
    pub fn behavior_sequence_min_samples() -> u64 {
        500
    }
    pub fn behavior_sequence_rare_ratio() -> f64 {
        0.002
    }
    pub fn behavior_sequence_max_predecessors() -> usize {
        32
    }
    pub fn behavior_sequence_session_gap() -> DurationSpec {
        DurationSpec::secs(30 * 60)
    }
    pub fn behavior_rate_anomaly_window() -> DurationSpec {
        DurationSpec::secs(60)
    }
    pub fn behavior_rate_anomaly_min_windows() -> u64 {
        200
    }
    pub fn behavior_rate_anomaly_deviations() -> f64 {
        4.0
    }
    pub fn behavior_rate_anomaly_min_requests() -> u32 {
        30
    }
    pub fn behavior_rate_anomaly_min_responses() -> u32 {
        10
    }
    pub fn behavior_rate_anomaly_min_error_ratio() -> f64 {
        0.5
    }
    pub fn behavior_volume_min_samples() -> u64 {
        100
    }
    pub fn behavior_volume_deviations() -> f64 {
        6.0
    }
    pub fn behavior_volume_factor() -> f64 {
        3.0
    }
    pub fn behavior_volume_min_payload_bytes() -> u64 {
        1024
    }
    pub fn behavior_volume_latency_floor() -> DurationSpec {
        DurationSpec::millis(100)
    }
    pub fn behavior_accounts_capacity() -> u32 {
        20
    }
    pub fn behavior_accounts_leak() -> DurationSpec {
        DurationSpec::secs(30)
    }

    pub fn yes() -> bool {
        true
    }
    pub fn outbox() -> String {
        "apiguard-outbox".into()
    }
    pub fn outbox_max() -> usize {
        100_000
    }
    pub fn paranoia() -> u8 {
        1
    }
    pub fn threshold() -> u32 {
        5
    }
    pub fn max_body_inspect() -> usize {
        1024 * 1024
    }
    pub fn header_read_timeout() -> DurationSpec {
        DurationSpec::secs(10)
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_concurrent_streams() -> u32 {
        256
    }
    pub fn connect_timeout() -> DurationSpec {
        DurationSpec::secs(2)
    }
    pub fn request_timeout() -> DurationSpec {
        DurationSpec::secs(30)
    }
    pub fn upstream_idle_timeout() -> DurationSpec {
        DurationSpec::secs(90)
    }
    pub fn max_idle_per_target() -> usize {
        256
    }
    pub fn retries() -> u32 {
        1
    }
    pub fn health_interval() -> DurationSpec {
        DurationSpec::secs(5)
    }
    pub fn health_timeout() -> DurationSpec {
        DurationSpec::secs(1)
    }
    pub fn unhealthy_threshold() -> u32 {
        3
    }
    pub fn healthy_threshold() -> u32 {
        2
    }
    pub fn consecutive_5xx() -> u32 {
        5
    }
    pub fn consecutive_gateway_failures() -> u32 {
        3
    }
    pub fn base_ejection_time() -> DurationSpec {
        DurationSpec::secs(30)
    }
    pub fn max_ejection_time() -> DurationSpec {
        DurationSpec::secs(300)
    }
    pub fn max_ejection_percent() -> u8 {
        50
    }
    pub fn max_body_bytes() -> u64 {
        10 * 1024 * 1024
    }
    pub fn max_header_count() -> usize {
        100
    }
    pub fn max_header_bytes() -> usize {
        32 * 1024
    }
    pub fn watch_interval() -> DurationSpec {
        DurationSpec::secs(1)
    }
    pub fn keep_versions() -> usize {
        10
    }
    pub fn drain_timeout() -> DurationSpec {
        DurationSpec::secs(15)
    }
    pub fn clock_skew() -> DurationSpec {
        DurationSpec::secs(60)
    }
    pub fn jwt_header() -> String {
        "authorization".into()
    }
    pub fn subject_claim() -> String {
        "sub".into()
    }
    pub fn jwks_refresh() -> DurationSpec {
        DurationSpec::secs(300)
    }
    pub fn jwks_min_refresh() -> DurationSpec {
        DurationSpec::secs(10)
    }
    pub fn jwks_timeout() -> DurationSpec {
        DurationSpec::secs(5)
    }
    pub fn api_key_header() -> String {
        "x-api-key".into()
    }
    pub fn network_prefix_v4() -> u8 {
        24
    }
    pub fn network_prefix_v6() -> u8 {
        48
    }
    pub fn on_new_network() -> super::ContextActionConfig {
        super::ContextActionConfig::Allow
    }
    pub fn on_new_country() -> super::ContextActionConfig {
        super::ContextActionConfig::Challenge
    }
    pub fn on_risk() -> super::ContextActionConfig {
        super::ContextActionConfig::Challenge
    }
    pub fn risk_threshold() -> u32 {
        20
    }
    pub fn risk_half_life() -> DurationSpec {
        DurationSpec::secs(600)
    }
    pub fn revoke_for() -> DurationSpec {
        DurationSpec::secs(3600)
    }
    pub fn credential_idle_timeout() -> DurationSpec {
        DurationSpec::secs(24 * 3600)
    }
    pub fn max_credentials() -> usize {
        100_000
    }
    pub fn redis_sync_interval() -> DurationSpec {
        DurationSpec::millis(100)
    }
    pub fn redis_timeout() -> DurationSpec {
        DurationSpec::millis(500)
    }
    pub fn redis_key_prefix() -> String {
        "apiguard:rl".into()
    }
    pub fn max_keys() -> usize {
        100_000
    }
    pub fn max_grant_ttl() -> DurationSpec {
        DurationSpec::secs(24 * 3600)
    }
    pub fn response_mode() -> super::OpenApiModeConfig {
        super::OpenApiModeConfig::Monitor
    }
    pub fn max_response_validation_bytes() -> usize {
        1024 * 1024
    }
    pub fn replay_cache_size() -> usize {
        100_000
    }
    pub fn signature_components() -> Vec<String> {
        vec!["@method".into(), "@target-uri".into()]
    }
    pub fn signature_max_age() -> DurationSpec {
        DurationSpec::secs(300)
    }
    pub fn signature_clock_skew() -> DurationSpec {
        DurationSpec::secs(30)
    }
    pub fn digest_algorithms() -> Vec<String> {
        vec!["sha-256".into(), "sha-512".into()]
    }
    pub fn response_max_body_bytes() -> usize {
        1024 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(
            DurationSpec::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            DurationSpec::parse("10s").unwrap().0,
            Duration::from_secs(10)
        );
        assert_eq!(
            DurationSpec::parse("5m").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            DurationSpec::parse("1h").unwrap().0,
            Duration::from_secs(3600)
        );
        assert!(DurationSpec::parse("10").unwrap_err().contains("no unit"));
        assert!(
            DurationSpec::parse("10d")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(DurationSpec::parse("s").is_err());
    }
}
