//! Turns `rate_limit:` and each route's `rate_limit:` into rate-limit stages (crates/policy):
//! one before authentication (client and route limits) and one right after it (API key and
//! identity limits, which need the identity).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use apiguard_policy::ratelimit::{ClusterSettings, KeyKind, LimitSpec};
use apiguard_policy::{RateLimitStage, RateLimits};

use crate::config::{AuthProviderConfig, Config, LimitConfig, LimitKeyConfig, RouteConfig};
use crate::load::Problem;

/// A route's rate-limit stages.
#[derive(Default)]
pub struct RouteLimits {
    /// Client and route limits: before authentication.
    pub before_auth: Option<Arc<RateLimitStage>>,
    /// API key and identity limits: right after authentication.
    pub after_auth: Option<Arc<RateLimitStage>>,
}

/// Rate limiting, compiled.
pub struct CompiledLimits {
    pub routes: Vec<RouteLimits>,
    pub cluster: Option<ClusterSettings>,
}

fn spec(config: &LimitConfig) -> LimitSpec {
    let key = match config.key {
        LimitKeyConfig::Client => KeyKind::Client,
        LimitKeyConfig::ApiKey => KeyKind::ApiKey,
        LimitKeyConfig::Identity => KeyKind::Identity,
        LimitKeyConfig::Route => KeyKind::Route,
    };
    LimitSpec {
        name: config
            .name
            .clone()
            .unwrap_or_else(|| key.as_str().to_owned()),
        key,
        rate: config.rate,
        per: config.per.0,
        burst: config.burst.unwrap_or(config.rate),
        cluster: config.cluster,
        max_keys: config.max_keys,
    }
}

fn check_route(
    config: &Config,
    route: &RouteConfig,
    limits: &[LimitConfig],
    from_defaults: bool,
    problems: &mut Vec<Problem>,
) -> Vec<LimitSpec> {
    let id = &route.id.value;
    let at = |i: usize, name: &str, message: &str| {
        let place = if from_defaults {
            format!("rate_limit.defaults[{i}] (`{name}`, for route `{id}`)")
        } else {
            format!("route `{id}`: rate_limit[{i}] (`{name}`)")
        };
        Problem::at(&route.id, format!("{place}: {message}"))
    };
    let mut names = HashSet::new();
    let mut specs = Vec::new();
    for (i, limit) in limits.iter().enumerate() {
        let spec = spec(limit);
        let before = problems.len();
        if let Err(e) = spec.quota() {
            problems.push(at(i, &spec.name, &e));
        }
        if !names.insert(spec.name.clone()) {
            problems.push(at(
                i,
                &spec.name,
                "another limit of the route has this name (set `name`)",
            ));
        }
        if spec.key.needs_identity() {
            let signed = route
                .integrity
                .as_ref()
                .is_some_and(|i| i.signature.is_some());
            match &route.auth {
                // A verified signature's key id is an identity too.
                None if signed && spec.key == KeyKind::Identity => {}
                None => problems.push(at(
                    i,
                    &spec.name,
                    "counts by identity, but the route has no `auth:` (nor `integrity.signature`)",
                )),
                Some(auth) if spec.key == KeyKind::ApiKey => {
                    let has_keys = auth.providers.iter().any(|p| {
                        matches!(
                            config.auth.providers.get(&p.value),
                            Some(AuthProviderConfig::ApiKeys(_))
                        )
                    });
                    if !has_keys {
                        problems.push(at(
                            i,
                            &spec.name,
                            "counts by API key, but the route accepts no `api_keys` provider",
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        if problems.len() == before {
            specs.push(spec);
        }
    }
    specs
}

fn cluster_settings(config: &Config, problems: &mut Vec<Problem>) -> Option<ClusterSettings> {
    let redis = config.rate_limit.redis.as_ref()?;
    let before = problems.len();
    let url = &redis.url.value;
    if url.starts_with("rediss://") {
        problems.push(Problem::at(
            &redis.url,
            "rate_limit.redis.url: TLS to Redis (rediss://) is not supported; use redis:// on a private network",
        ));
    } else if !url.starts_with("redis://") || url.len() <= "redis://".len() {
        problems.push(Problem::at(
            &redis.url,
            format!("rate_limit.redis.url `{url}` must be redis://[user:password@]host:port[/db]"),
        ));
    }
    if redis.sync_interval.0 < Duration::from_millis(10) {
        problems.push(Problem::at(
            &redis.url,
            "rate_limit.redis.sync_interval must be at least 10ms",
        ));
    }
    if redis.timeout.0.is_zero() {
        problems.push(Problem::at(
            &redis.url,
            "rate_limit.redis.timeout must be longer than 0",
        ));
    }
    if redis.key_prefix.is_empty() || redis.key_prefix.contains(char::is_whitespace) {
        problems.push(Problem::at(
            &redis.url,
            "rate_limit.redis.key_prefix must be non-empty and without spaces",
        ));
    }
    (problems.len() == before).then(|| ClusterSettings {
        url: url.clone(),
        sync_interval: redis.sync_interval.0,
        timeout: redis.timeout.0,
        key_prefix: redis.key_prefix.clone(),
    })
}

/// Checks the rate-limit settings; with a runtime, builds the stages (keeping the limiters,
/// and their counts, of limits that did not change).
pub fn compile_rate_limits(
    config: &Config,
    runtime: Option<&RateLimits>,
    problems: &mut Vec<Problem>,
) -> CompiledLimits {
    let cluster = cluster_settings(config, problems);
    let headers = config.rate_limit.headers;
    let mut routes = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let (limits, from_defaults) = match &route.rate_limit {
            Some(limits) => (limits.as_slice(), false),
            None => (config.rate_limit.defaults.as_slice(), true),
        };
        let specs = check_route(config, route, limits, from_defaults, problems);
        let Some(runtime) = runtime else {
            routes.push(RouteLimits::default());
            continue;
        };
        let mut before_auth = Vec::new();
        let mut after_auth = Vec::new();
        for spec in &specs {
            match runtime.limiter(&route.id.value, spec) {
                Ok(limiter) if spec.key.needs_identity() => after_auth.push(limiter),
                Ok(limiter) => before_auth.push(limiter),
                Err(e) => problems.push(Problem::at(
                    &route.id,
                    format!(
                        "route `{}`: rate limit `{}`: {e}",
                        route.id.value, spec.name
                    ),
                )),
            }
        }
        let stage = |limits: Vec<_>| {
            (!limits.is_empty()).then(|| Arc::new(RateLimitStage::new(limits, headers)))
        };
        routes.push(RouteLimits {
            before_auth: stage(before_auth),
            after_auth: stage(after_auth),
        });
    }
    CompiledLimits { routes, cluster }
}
