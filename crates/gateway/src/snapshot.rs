//! Compiling a configuration into the immutable snapshot the data plane reads. Every problem
//! is collected (not just the first) so `apiguard validate` can list them all.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apiguard_behavior::{Behavior, BehaviorStage};
use apiguard_detect::DetectStage;
use apiguard_model::{SecurityEvent, Stage};
use apiguard_policy::authn::{Continuous, ContinuousSettings};
use apiguard_policy::authz::Grants;
use apiguard_policy::openapi::ResponseValidation;
use apiguard_policy::ratelimit::ClusterSettings;
use apiguard_policy::{AuthnRuntime, IntegrityRuntime, RateLimits};
use http::{HeaderName, HeaderValue, Method};
use rustls::ServerConfig;
use tokio::sync::broadcast;

use crate::authn::compile_auth;
use crate::authz::compile_authz;
use crate::behavior::compile_behavior;
use crate::config::{Config, LimitsConfig, PathMatch, ReloadConfig, RouteConfig, Spanned};
use crate::detection::compile_detection;
use crate::enforcement::{Enforcement, EnforcementStage, IdentityEnforcementStage};
use crate::heal::config::{HealSettings, compile_heal};
use crate::load::{ConfigError, Problem};
use crate::masking::{ResponseInspection, compile_response_inspection};
use crate::metrics::{Metrics, RouteMetrics};
use crate::openapi::compile_openapi;
use crate::pipeline::{LimitsStage, Pipeline};
use crate::protocols::{RouteProtocols, compile_protocols};
use crate::ratelimit::compile_rate_limits;
use crate::router::{HeaderCondition, HostMatch, PathMatcher, RouteMatcher, Router};
use crate::sharing::HubSettings;
use crate::signatures::compile_integrity;
use crate::upstream::{Pool, PoolSettings};

/// A listener's compiled settings.
pub struct ListenerSettings {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<Arc<ServerConfig>>,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
}

/// A route ready to serve.
pub struct RouteRuntime {
    pub id: String,
    pub pool: Arc<Pool>,
    pub limits: LimitsConfig,
    pub request_timeout: Duration,
    pub pipeline: Pipeline,
    pub metrics: RouteMetrics,
    /// The behaviour stage (also in `pipeline`), told about every response; `None` when
    /// behaviour is off for the route.
    pub behavior: Option<Arc<BehaviorStage>>,
    /// Continuous verification, fed each authenticated request's final score.
    pub continuous: Option<Arc<Continuous>>,
    /// Response validation against the upstream's OpenAPI specification, when configured.
    pub responses: Option<Arc<ResponseValidation>>,
    /// GraphQL or gRPC inspection (its stage is also in `pipeline`): protocol-shaped
    /// refusals, gRPC bodies, GraphQL responses.
    pub protocols: RouteProtocols,
    /// Response inspection (sensitive data leaving the API); `None` when off.
    pub response: Option<Arc<ResponseInspection>>,
}

/// Everything the data plane reads for one configuration version.
pub struct Snapshot {
    pub version: u64,
    pub hash: String,
    pub router: Router,
    pub routes: Vec<RouteRuntime>,
    pub pools: BTreeMap<String, Arc<Pool>>,
    pub listeners: Vec<Arc<ListenerSettings>>,
    pub admin: Option<SocketAddr>,
    pub access_log: bool,
    pub reload: ReloadConfig,
    /// Threat sharing with a hub, resolved.
    pub hub: Option<HubSettings>,
    /// Rate-limit cluster mode (`rate_limit.redis`), resolved.
    pub rate_limit_cluster: Option<ClusterSettings>,
    /// Continuous verification (`auth.continuous`), resolved.
    pub continuous: Option<ContinuousSettings>,
    /// The longest just-in-time grant, when authorisation is configured (grants are refused
    /// otherwise: nothing would read them).
    pub max_grant_ttl: Option<Duration>,
    /// Self-healing (`heal:`), compiled.
    pub heal: Arc<HealSettings>,
}

/// What compiling needs from the running gateway.
pub struct CompileEnv<'a> {
    pub events: broadcast::Sender<Arc<SecurityEvent>>,
    pub metrics: Arc<Metrics>,
    /// Worker threads serving traffic (one upstream client each).
    pub workers: usize,
    /// The snapshot in effect, whose pools are kept when their settings did not change.
    pub previous: Option<&'a Snapshot>,
    /// The block table every route's first stage reads.
    pub enforcement: Arc<Enforcement>,
    /// The learned behaviour state, kept across reloads.
    pub behavior: Arc<Behavior>,
    /// JWKS key sets and continuous verification state, kept across reloads.
    pub authn: Arc<AuthnRuntime>,
    /// Rate limiters (and their counts), kept across reloads, and the Redis sync.
    pub rate_limits: Arc<RateLimits>,
    /// Just-in-time grants, which the authorisation stages read.
    pub grants: Arc<Grants>,
    /// The signature replay cache, kept across reloads.
    pub integrity: Arc<IntegrityRuntime>,
}

fn parse_addr(spanned: &Spanned<String>, problems: &mut Vec<Problem>) -> Option<SocketAddr> {
    spanned
        .value
        .parse::<SocketAddr>()
        .map_err(|_| {
            problems.push(Problem::at(
                spanned,
                format!(
                    "`{}` is not a valid IP:port address (such as 127.0.0.1:8080 or [::1]:8080)",
                    spanned.value
                ),
            ))
        })
        .ok()
}

/// Checks a configuration without starting anything: every problem, with its position.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let _ = compile_listeners(config, &mut problems);
    let _ = compile_matchers(config, &mut problems);
    check_upstreams(config, &mut problems);
    let detection = compile_detection(config, &mut problems);
    let _ = compile_protocols(config, &detection, None, &mut problems);
    let _ = compile_auth(config, None, &mut problems);
    let _ = compile_rate_limits(config, None, &mut problems);
    let _ = compile_integrity(config, &mut problems);
    let _ = compile_response_inspection(config, &mut problems);
    let _ = compile_behavior(config, &mut problems);
    check_workers(config, &mut problems);
    let _ = compile_authz(config, &mut problems);
    let _ = compile_openapi(config, &mut problems);
    if let Some(hub) = &config.hub {
        let _ = HubSettings::resolve(hub, &mut problems);
    }
    let _ = compile_heal(config.heal.as_ref(), &mut problems);
    problems
}

fn check_workers(config: &Config, problems: &mut Vec<Problem>) {
    if let Some(workers) = config.workers
        && !(1..=1024).contains(&workers)
    {
        problems.push(Problem::general(format!(
            "workers: {workers} is not a worker count (1 to 1024)"
        )));
    }
}

fn compile_listeners(config: &Config, problems: &mut Vec<Problem>) -> Vec<Arc<ListenerSettings>> {
    if config.listeners.is_empty() {
        problems.push(Problem::general(
            "`listeners` is empty: the gateway needs at least one",
        ));
    }
    let mut seen = HashSet::new();
    let mut listeners = Vec::new();
    for listener in &config.listeners {
        let address = parse_addr(&listener.address, problems);
        if let Some(address) = address
            && address.port() != 0
            && !seen.insert(address)
        {
            problems.push(Problem::at(
                &listener.address,
                format!("address {address} is used by another listener"),
            ));
        }
        let tls = listener.tls.as_ref().and_then(|tls| {
            crate::tls::server_config(tls)
                .map_err(|mut p| problems.append(&mut p))
                .ok()
        });
        if listener.max_connections == 0 {
            problems.push(Problem::at(
                &listener.address,
                "max_connections must be at least 1",
            ));
        }
        if listener.max_concurrent_streams == 0 {
            problems.push(Problem::at(
                &listener.address,
                "max_concurrent_streams must be at least 1",
            ));
        }
        if let Some(address) = address {
            listeners.push(Arc::new(ListenerSettings {
                name: listener.name.clone().unwrap_or_else(|| address.to_string()),
                address,
                tls,
                header_read_timeout: listener.header_read_timeout.0,
                max_connections: listener.max_connections,
                max_concurrent_streams: listener.max_concurrent_streams,
            }));
        }
    }
    if let Some(admin) = &config.admin
        && let Some(address) = parse_addr(&admin.address, problems)
        && address.port() != 0
        && seen.contains(&address)
    {
        problems.push(Problem::at(
            &admin.address,
            format!("the admin address {address} is also a traffic listener"),
        ));
    }
    listeners
}

fn check_upstreams(config: &Config, problems: &mut Vec<Problem>) {
    for (name, upstream) in &config.upstreams {
        if upstream.targets.is_empty() {
            problems.push(Problem::general(format!(
                "upstream `{name}` has no targets"
            )));
        }
        for target in &upstream.targets {
            let value = &target.value;
            let valid = value
                .parse::<http::uri::Authority>()
                .ok()
                .filter(|a| a.port_u16().is_some() && !value.contains('@'));
            if valid.is_none() {
                problems.push(Problem::at(
                    target,
                    format!("upstream `{name}`: target `{value}` must be host:port"),
                ));
            }
        }
        if let Some(health) = &upstream.health_check
            && !health.path.starts_with('/')
        {
            problems.push(Problem::general(format!(
                "upstream `{name}`: health_check.path `{}` must start with `/`",
                health.path
            )));
        }
        for (what, duration) in [
            ("connect_timeout", upstream.connect_timeout),
            ("request_timeout", upstream.request_timeout),
        ] {
            if duration.0.is_zero() {
                problems.push(Problem::general(format!(
                    "upstream `{name}`: {what} must be longer than 0"
                )));
            }
        }
        if upstream
            .health_check
            .as_ref()
            .is_some_and(|h| h.interval.0.is_zero() || h.timeout.0.is_zero())
        {
            problems.push(Problem::general(format!(
                "upstream `{name}`: health_check interval and timeout must be longer than 0"
            )));
        }
        if let Some(fallback) = &upstream.fallback
            && (fallback == name || !config.upstreams.contains_key(fallback))
        {
            problems.push(Problem::general(format!(
                "upstream `{name}`: fallback `{fallback}` must name another upstream"
            )));
        }
        if upstream.outlier_detection.max_ejection_percent > 100 {
            problems.push(Problem::general(format!(
                "upstream `{name}`: max_ejection_percent is a percentage (0 to 100)"
            )));
        }
    }
}

fn compile_route_matcher(route: &RouteConfig, problems: &mut Vec<Problem>) -> Option<RouteMatcher> {
    let at =
        |message: String| Problem::at(&route.id, format!("route `{}`: {message}", route.id.value));
    let m = &route.matcher;
    let host = HostMatch::parse(m.host.as_deref())
        .map_err(|e| problems.push(at(e)))
        .ok();
    let path = match &m.path {
        None => Ok(PathMatcher::Any),
        Some(PathMatch::Exact(p)) => PathMatcher::exact(p),
        Some(PathMatch::Prefix(p)) => PathMatcher::prefix(p),
        Some(PathMatch::Template(p)) => PathMatcher::template(p),
    }
    .map_err(|e| problems.push(at(e)))
    .ok();
    let mut methods = Vec::new();
    for method in &m.methods {
        match Method::from_bytes(method.as_bytes()) {
            Ok(parsed) if method.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(parsed),
            _ => problems.push(at(format!(
                "`{method}` is not an HTTP method in upper case"
            ))),
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &m.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            problems.push(at(format!("`{name}` is not a valid header name")));
            continue;
        };
        let value = if value == "*" {
            None
        } else {
            match HeaderValue::from_str(value) {
                Ok(v) => Some(v),
                Err(_) => {
                    problems.push(at(format!(
                        "header `{name}`: `{value}` is not a valid header value"
                    )));
                    continue;
                }
            }
        };
        headers.push(HeaderCondition { name, value });
    }
    Some(RouteMatcher {
        host: host?,
        path: path?,
        methods,
        headers,
    })
}

fn compile_matchers(config: &Config, problems: &mut Vec<Problem>) -> Vec<RouteMatcher> {
    if config.routes.is_empty() {
        problems.push(Problem::general(
            "`routes` is empty: no request could be served",
        ));
    }
    if config.reload.watch_interval.0 < std::time::Duration::from_millis(100) {
        problems.push(Problem::general(
            "reload.watch_interval must be at least 100ms",
        ));
    }
    let mut ids = HashSet::new();
    let mut matchers = Vec::new();
    for route in &config.routes {
        if !ids.insert(route.id.value.as_str()) {
            problems.push(Problem::at(
                &route.id,
                format!("route id `{}` is used twice", route.id.value),
            ));
        }
        if !config.upstreams.contains_key(&route.upstream.value) {
            let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
            problems.push(Problem::at(
                &route.upstream,
                format!(
                    "route `{}` names upstream `{}`, which is not defined (defined: {})",
                    route.id.value,
                    route.upstream.value,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if route.limits.request_timeout.is_some_and(|t| t.0.is_zero()) {
            problems.push(Problem::at(
                &route.id,
                format!(
                    "route `{}`: limits.request_timeout must be longer than 0",
                    route.id.value
                ),
            ));
        }
        if let Some(m) = compile_route_matcher(route, problems) {
            matchers.push(m);
        }
    }
    matchers
}

/// Compiles a configuration into a snapshot, starting (or keeping) upstream pools.
pub fn compile(
    config: &Config,
    file: &str,
    text: &str,
    version: u64,
    env: &CompileEnv<'_>,
) -> Result<Snapshot, ConfigError> {
    let mut problems = Vec::new();
    let listeners = compile_listeners(config, &mut problems);
    let matchers = compile_matchers(config, &mut problems);
    check_upstreams(config, &mut problems);
    let detection = compile_detection(config, &mut problems);
    let protocols = compile_protocols(config, &detection, env.previous, &mut problems);
    let auth = compile_auth(config, Some(&env.authn), &mut problems);
    let limits = compile_rate_limits(config, Some(&env.rate_limits), &mut problems);
    let mut integrity = compile_integrity(config, &mut problems).into_iter();
    let mut responses = compile_response_inspection(config, &mut problems).into_iter();
    let behavior = compile_behavior(config, &mut problems);
    check_workers(config, &mut problems);
    let authz = compile_authz(config, &mut problems);
    let specs = compile_openapi(config, &mut problems);
    let hub = config
        .hub
        .as_ref()
        .and_then(|h| HubSettings::resolve(h, &mut problems));
    let heal = compile_heal(config.heal.as_ref(), &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError {
            file: file.to_owned(),
            problems,
        });
    }
    let mut pools = BTreeMap::new();
    for (name, upstream) in &config.upstreams {
        let settings = PoolSettings::from_config(upstream);
        let kept = env
            .previous
            .and_then(|p| p.pools.get(name))
            .filter(|p| p.settings == settings)
            .cloned();
        let pool = match kept {
            Some(pool) => pool,
            None => Pool::start(
                name,
                settings,
                env.workers,
                env.events.clone(),
                env.metrics.clone(),
            )
            .map_err(|e| {
                ConfigError::single(file, Problem::general(format!("upstream `{name}`: {e}")))
            })?,
        };
        pools.insert(name.clone(), pool);
    }
    let rate_limit_cluster = limits.cluster;
    let mut protocols = protocols.into_iter();
    let routes = config
        .routes
        .iter()
        .zip(detection)
        .zip(behavior)
        .zip(auth.routes)
        .zip(limits.routes)
        .map(|((((route, detection), behavior), authn), rate_limits)| {
            let protocols = protocols.next().unwrap_or_default();
            // Integrity and response inspection come in route order like the others (taken
            // here rather than zipped, to keep this closure's shape).
            let integrity = integrity.next().flatten();
            let response = responses.next().flatten();
            let pool = pools[&route.upstream.value].clone();
            let body_limit = detection
                .max_body_inspect
                .max(protocols.body_limit().unwrap_or(0))
                .min(usize::try_from(route.limits.max_body_bytes).unwrap_or(usize::MAX));
            // The architecture's order: enforcement, limits, rate limiting, authentication
            // (with the limits that count by identity right after it), ..., detection.
            let mut stages: Vec<Arc<dyn Stage>> = vec![
                Arc::new(EnforcementStage {
                    enforcement: env.enforcement.clone(),
                }),
                Arc::new(LimitsStage {
                    limits: route.limits.clone(),
                }),
            ];
            if let Some(stage) = rate_limits.before_auth {
                stages.push(stage);
            }
            let continuous = authn.as_ref().and_then(|a| a.continuous().cloned());
            let proves_identity = authn.is_some() || integrity.is_some();
            if let Some(stage) = authn {
                stages.push(stage);
            }
            // Signatures right after authentication (before the limits that count an
            // identity): a verified key id is an identity too.
            if let Some(integrity) = integrity {
                stages.push(integrity.stage(body_limit, env.integrity.clone()));
            }
            // Block rules on identities, as soon as the identity is known.
            if proves_identity {
                stages.push(Arc::new(IdentityEnforcementStage {
                    enforcement: env.enforcement.clone(),
                }));
            }
            if let Some(stage) = rate_limits.after_auth {
                stages.push(stage);
            }
            // Stage 5: authorisation; stage 6: OpenAPI validation; stage 7: protocol
            // inspection; then detection (8) (ARCHITECTURE.md).
            if let Some(stage) =
                crate::authz::route_stage(authz.as_ref(), route, &env.grants, &env.enforcement)
            {
                stages.push(Arc::new(stage));
            }
            if let Some(stage) = crate::openapi::route_stage(&specs, route, body_limit.max(1)) {
                stages.push(Arc::new(stage));
            }
            stages.extend(protocols.stages());
            if let Some(engine) = detection.engine {
                stages.push(Arc::new(DetectStage(engine)));
            }
            let behavior = behavior.map(|settings| {
                Arc::new(BehaviorStage {
                    route: route.id.value.as_str().into(),
                    settings,
                    engine: env.behavior.clone(),
                })
            });
            if let Some(stage) = &behavior {
                stages.push(stage.clone());
            }
            RouteRuntime {
                id: route.id.value.clone(),
                request_timeout: route
                    .limits
                    .request_timeout
                    .map_or(pool.settings.request_timeout, |t| t.0),
                pool,
                limits: route.limits.clone(),
                pipeline: Pipeline::new(stages, detection.threshold, detection.enforce)
                    .with_body_limit(body_limit),
                metrics: RouteMetrics::new(&env.metrics, &route.id.value),
                behavior,
                continuous,
                responses: crate::openapi::route_responses(&specs, route),
                protocols,
                response,
            }
        })
        .collect();
    let admin = config
        .admin
        .as_ref()
        .and_then(|a| a.address.value.parse().ok());
    let max_grant_ttl = authz.as_ref().map(|a| a.max_grant_ttl);
    Ok(Snapshot {
        version,
        hash: content_hash(text),
        router: Router::new(matchers),
        routes,
        pools,
        listeners,
        admin,
        access_log: config.access_log.enabled,
        reload: config.reload.clone(),
        hub,
        rate_limit_cluster,
        continuous: auth.continuous,
        max_grant_ttl,
        heal: Arc::new(heal.unwrap_or_default()),
    })
}

/// The SHA-256 of the configuration text, hex encoded.
pub fn content_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
