//! The admin endpoint: metrics, liveness, readiness, configuration versions, reload and
//! rollback, the block rules of the enforcement state, just-in-time authorisation grants
//! with their audit trail, and self-healing's incidents and actions.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use apiguard_model::event::now_ms;
use http_body_util::{BodyExt, Limited};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use apiguard_policy::authz::{GrantError, GrantPrincipal, GrantRequest, IpPrefix};

use crate::body::ResponseBody;
use crate::config::DurationSpec;
use crate::enforcement::{BlockRule, BlockTarget};
use crate::runtime::Gateway;

/// Serves until the process exits: during a drain, /readyz answers 503 so load balancers
/// stop sending traffic.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| answer(gateway.clone(), request));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ResponseBody> {
    reply(status, "application/json", value.to_string())
}

async fn answer(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let behavior = gateway.behavior();
            let metrics = gateway.metrics();
            metrics
                .behavior_endpoints
                .set(behavior.endpoint_count() as i64);
            metrics.behavior_clients.set(behavior.client_count() as i64);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics.render(),
            )
        }
        (&Method::GET, "/behavior/baselines") => behavior_baselines(&gateway),
        (&Method::GET, path) if path.starts_with("/behavior/clients/") => {
            behavior_client(&gateway, &path["/behavior/clients/".len()..])
        }
        (&Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readiness(&gateway),
        (&Method::GET, "/config/versions") => {
            let snapshot = gateway.snapshot();
            json(
                StatusCode::OK,
                serde_json::json!({
                    "current": snapshot.version,
                    "versions": gateway.versions(),
                }),
            )
        }
        (&Method::POST, "/config/reload") => match gateway.reload("admin") {
            Ok(version) => json(StatusCode::OK, serde_json::json!({"applied": version})),
            Err(error) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({
                    "error": "configuration rejected; the previous one keeps serving",
                    "problems": error.to_string().lines().collect::<Vec<_>>(),
                }),
            ),
        },
        (&Method::POST, "/config/rollback") => rollback(&gateway, &request),
        (&Method::GET, "/heal") => json(
            StatusCode::OK,
            crate::heal::admin::status(
                gateway.heal(),
                serde_json::json!(
                    gateway
                        .enforcement()
                        .throttles
                        .list()
                        .iter()
                        .map(|t| t.as_ref())
                        .collect::<Vec<_>>()
                ),
            ),
        ),
        (&Method::GET, "/heal/incidents") => json(
            StatusCode::OK,
            crate::heal::admin::incidents(gateway.heal(), request.uri().query()),
        ),
        (&Method::GET, "/heal/actions") => {
            json(StatusCode::OK, crate::heal::admin::actions(gateway.heal()))
        }
        (&Method::GET, path) if path.starts_with("/heal/incidents/") => {
            let id = &path["/heal/incidents/".len()..];
            match id
                .parse::<u64>()
                .ok()
                .and_then(|id| crate::heal::admin::incident(gateway.heal(), id))
            {
                Some(view) => json(StatusCode::OK, view),
                None => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": format!("no incident `{id}`")}),
                ),
            }
        }
        (&Method::GET, "/enforcement/blocks") => json(
            StatusCode::OK,
            serde_json::json!({
                "rules": gateway
                    .enforcement()
                    .rules()
                    .iter()
                    .map(|r| r.as_ref().clone())
                    .collect::<Vec<BlockRule>>(),
                "watched": gateway
                    .enforcement()
                    .watched()
                    .iter()
                    .map(|r| r.as_ref().clone())
                    .collect::<Vec<BlockRule>>(),
            }),
        ),
        (&Method::GET, "/authz/grants") => json(
            StatusCode::OK,
            serde_json::json!({"grants": gateway.grants().list()}),
        ),
        (&Method::POST, "/authz/grants") => add_grant(&gateway, request).await,
        (&Method::GET, "/authz/audit") => json(
            StatusCode::OK,
            serde_json::json!({"entries": gateway.grants().audit_trail()}),
        ),
        (&Method::DELETE, path) if path.starts_with("/authz/grants/") => {
            revoke_grant(&gateway, &request)
        }
        (&Method::POST, "/enforcement/blocks") => add_block(&gateway, request).await,
        (&Method::DELETE, "/enforcement/blocks") => remove_block(&gateway, &request),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({
                "error": "unknown admin path",
                "paths": [
                    "GET /metrics", "GET /healthz", "GET /readyz", "GET /config/versions",
                    "POST /config/reload", "POST /config/rollback?version=N",
                    "GET /enforcement/blocks",
                    "POST /enforcement/blocks", "DELETE /enforcement/blocks?target=...",
                    "GET /behavior/baselines", "GET /behavior/clients/{address or user:subject}",
                    "GET /authz/grants", "POST /authz/grants", "DELETE /authz/grants/{id}",
                    "GET /authz/audit",
                    "GET /heal", "GET /heal/incidents", "GET /heal/incidents/{id}",
                    "GET /heal/actions",
                ],
            }),
        ),
    };
    Ok(response)
}

fn bad_request(message: impl Into<String>) -> Response<ResponseBody> {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": message.into()}),
    )
}

/// The body of `POST /enforcement/blocks`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBlock {
    /// An address or a prefix.
    target: String,
    /// How long, such as `10m`.
    ttl: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The longest block an operator can set in one call.
const MAX_BLOCK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

async fn add_block(gateway: &Gateway, request: Request<Incoming>) -> Response<ResponseBody> {
    let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return bad_request("the body could not be read or is over 64 KiB"),
    };
    let new: NewBlock = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"target\": \"203.0.113.7, 10.0.0.0/8, identity:<subject> or fingerprint:<16 hex digits>\", \"ttl\": \"10m\", \"reason\": \"...\"}}: {e}"
            ));
        }
    };
    let target: BlockTarget = match new.target.parse() {
        Ok(target) => target,
        Err(e) => return bad_request(e),
    };
    let ttl = match DurationSpec::parse(&new.ttl) {
        Ok(ttl) if !ttl.0.is_zero() && ttl.0 <= MAX_BLOCK_TTL => ttl.0,
        Ok(_) => return bad_request("ttl must be longer than 0 and at most 30 days"),
        Err(e) => return bad_request(e),
    };
    let now = now_ms();
    let rule = gateway.enforcement().insert(BlockRule {
        target,
        until_ms: now.saturating_add(ttl.as_millis() as u64),
        source: "admin".into(),
        reason: new
            .reason
            .unwrap_or_else(|| "blocked by an operator".into()),
        indicator: None,
        created_ms: now,
        canary_percent: None,
    });
    tracing::info!(target: "apiguard::security", rule = %rule.target, until_ms = rule.until_ms, "block rule added by an operator");
    json(StatusCode::CREATED, serde_json::json!({"rule": *rule}))
}

/// The body of `POST /authz/grants`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    /// `ApiGuard::Identity::"alice"`, `ApiGuard::Anonymous::"anonymous"`, or
    /// `{"type": ..., "id": ...}`.
    principal: serde_json::Value,
    /// Route ids, or `["*"]`.
    routes: Vec<String>,
    /// HTTP methods, or `["*"]`.
    actions: Vec<String>,
    /// Only from this address or prefix.
    #[serde(default)]
    client: Option<String>,
    /// How long, such as `15m`.
    ttl: String,
    reason: String,
    /// Who asked for it.
    #[serde(default)]
    granted_by: Option<String>,
}

async fn add_grant(gateway: &Gateway, request: Request<Incoming>) -> Response<ResponseBody> {
    let snapshot = gateway.snapshot();
    let Some(max_ttl) = snapshot.max_grant_ttl else {
        return json(
            StatusCode::CONFLICT,
            serde_json::json!({"error": "authorisation is not configured (no `authz:` section): a grant would change nothing"}),
        );
    };
    let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return bad_request("the body could not be read or is over 64 KiB"),
    };
    let new: NewGrant = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"principal\": \"ApiGuard::Identity::\\\"alice\\\"\", \"routes\": [\"admin\"], \"actions\": [\"GET\"], \"ttl\": \"15m\", \"reason\": \"...\", \"client\": \"10.0.0.0/8\" (optional)}}: {e}"
            ));
        }
    };
    let principal = match GrantPrincipal::from_json(&new.principal) {
        Ok(principal) => principal,
        Err(e) => return bad_request(format!("principal: {e}")),
    };
    let client = match new
        .client
        .as_deref()
        .map(str::parse::<IpPrefix>)
        .transpose()
    {
        Ok(client) => client,
        Err(e) => return bad_request(format!("client: {e}")),
    };
    let ttl = match DurationSpec::parse(&new.ttl) {
        Ok(ttl) => ttl.0,
        Err(e) => return bad_request(format!("ttl: {e}")),
    };
    if new.reason.trim().is_empty() {
        return bad_request("reason: say why (a ticket or an incident), for the audit trail");
    }
    let routes: Vec<&str> = snapshot.routes.iter().map(|r| r.id.as_str()).collect();
    let grant = gateway.grants().grant(
        GrantRequest {
            principal,
            routes: new.routes,
            actions: new.actions,
            client,
            ttl,
            reason: new.reason,
            granted_by: new.granted_by.unwrap_or_else(|| "admin".into()),
        },
        &routes,
        max_ttl,
    );
    match grant {
        Ok(grant) => json(StatusCode::CREATED, serde_json::json!({"grant": *grant})),
        Err(e @ GrantError::TooMany(_)) => json(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"error": e.to_string()}),
        ),
        Err(e) => bad_request(e.to_string()),
    }
}

fn revoke_grant(gateway: &Gateway, request: &Request<Incoming>) -> Response<ResponseBody> {
    let id = request
        .uri()
        .path()
        .trim_start_matches("/authz/grants/")
        .to_owned();
    let by = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("by="))
        .map(|b| apiguard_policy::openapi::percent_decode(b, true).into_owned())
        .unwrap_or_else(|| "admin".into());
    match gateway.grants().revoke(&id, &by) {
        Some(grant) => json(StatusCode::OK, serde_json::json!({"revoked": *grant})),
        None => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no active grant `{id}`")}),
        ),
    }
}

fn remove_block(gateway: &Gateway, request: &Request<Incoming>) -> Response<ResponseBody> {
    let target = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("target="))
        .map(|t| {
            t.replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%3A", ":")
                .replace("%3a", ":")
        });
    let Some(target) = target else {
        return bad_request("name the rule: DELETE /enforcement/blocks?target=10.0.0.0/8");
    };
    match target.parse::<BlockTarget>() {
        Ok(parsed) if gateway.enforcement().remove(&parsed) => {
            tracing::info!(target: "apiguard::security", rule = %parsed, "block rule removed by an operator");
            json(StatusCode::OK, serde_json::json!({"removed": parsed}))
        }
        Ok(parsed) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no block rule on {parsed}")}),
        ),
        Err(e) => bad_request(e),
    }
}

/// `POST /config/rollback?version=N`: re-applies a kept version (the newest known good
/// one when `version` is absent).
fn rollback(gateway: &Gateway, request: &Request<Incoming>) -> Response<ResponseBody> {
    let asked = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("version="));
    let version = match asked {
        Some(v) => match v.parse::<u64>() {
            Ok(v) => v,
            Err(_) => return bad_request(format!("`{v}` is not a version number")),
        },
        None => match gateway.last_known_good() {
            Some(v) => v,
            None => {
                return bad_request(
                    "no version is known good yet: name one with ?version=N (see GET /config/versions)",
                );
            }
        },
    };
    match gateway.rollback_to(version, "admin") {
        Ok(applied) => json(
            StatusCode::OK,
            serde_json::json!({"rolled_back_to": version, "applied": applied}),
        ),
        Err(error) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"error": error}),
        ),
    }
}

/// The settings behaviour summaries are read with: the first route's that has behaviour on
/// (bucket levels depend on leak rates), else the defaults.
fn summary_settings(gateway: &Gateway) -> apiguard_behavior::Settings {
    gateway
        .snapshot()
        .routes
        .iter()
        .find_map(|r| r.behavior.as_ref().map(|b| b.settings.clone()))
        .unwrap_or_default()
}

fn behavior_baselines(gateway: &Gateway) -> Response<ResponseBody> {
    let behavior = gateway.behavior();
    let settings = summary_settings(gateway);
    json(
        StatusCode::OK,
        serde_json::json!({
            "endpoints": behavior.baselines(&settings, behavior.now_ms()),
            "endpoints_not_learned": behavior.endpoints_dropped(),
            "tracked_clients": behavior.client_count(),
            "limits": {
                "max_endpoints": behavior.limits().max_endpoints,
                "max_clients": behavior.limits().max_clients,
                "max_params": behavior.limits().max_params,
            },
        }),
    )
}

fn behavior_client(gateway: &Gateway, raw: &str) -> Response<ResponseBody> {
    let decoded = apiguard_behavior::shape::decode(raw, false, 1024);
    // An address is looked up in its canonical form; anything else (`user:alice`) as given.
    let key = match decoded.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) if decoded.starts_with("user:") => decoded,
        Err(_) => {
            return bad_request(format!(
                "`{decoded}` is neither an IP address nor `user:<subject>`"
            ));
        }
    };
    let behavior = gateway.behavior();
    let settings = summary_settings(gateway);
    match behavior.client(&key, &settings, behavior.now_ms()) {
        Some(summary) => {
            let mut view = serde_json::json!(summary);
            view["enforcement"] = client_enforcement(gateway, &key);
            json(StatusCode::OK, view)
        }
        None => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("client `{key}` is not tracked")}),
        ),
    }
}

/// What the enforcement state does to a client now: the block rules that refuse it (on its
/// address or a prefix, its identity, or the fingerprint of its last request), the rule
/// listing it without blocking, and the self-healing throttles covering it.
fn client_enforcement(gateway: &Gateway, key: &str) -> serde_json::Value {
    let enforcement = gateway.enforcement();
    let mut blocks = Vec::new();
    let mut watched = None;
    let mut fingerprint = None;
    let mut throttles = Vec::new();
    if let Some(subject) = key.strip_prefix("user:") {
        blocks.extend(enforcement.blocking_identity(subject));
        throttles = enforcement
            .throttles
            .list()
            .into_iter()
            .filter(
                |t| matches!(&t.scope, crate::throttle::ThrottleScope::Identity(s) if s == subject),
            )
            .collect();
    } else if let Ok(ip) = key.parse::<std::net::IpAddr>() {
        blocks.extend(enforcement.blocking(ip));
        watched = enforcement.watching(ip);
        fingerprint = gateway.heal().state.ledger.fingerprint_of(ip);
        if let Some(fp) = fingerprint {
            blocks.extend(enforcement.blocking_fingerprint(fp));
        }
        throttles = enforcement
            .throttles
            .list()
            .into_iter()
            .filter(|t| {
                matches!(&t.scope, crate::throttle::ThrottleScope::Client(net) if net.contains(ip))
            })
            .collect();
    }
    serde_json::json!({
        "fingerprint": fingerprint.map(apiguard_heal::fingerprint_text),
        "blocks": blocks.iter().map(|r| r.as_ref()).collect::<Vec<&BlockRule>>(),
        "watched": watched.as_deref(),
        "throttles": throttles.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
    })
}

/// Ready while serving and not draining; the body lists pools with no available target.
fn readiness(gateway: &Gateway) -> Response<ResponseBody> {
    if gateway.is_draining() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"}),
        );
    }
    let snapshot = gateway.snapshot();
    let unavailable: Vec<&str> = snapshot
        .pools
        .values()
        .filter(|p| !p.has_available_target())
        .map(|p| p.name.as_str())
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "status": "ready",
            "config_version": snapshot.version,
            "pools_without_available_target": unavailable,
        }),
    )
}
