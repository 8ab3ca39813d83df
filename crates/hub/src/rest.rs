//! The REST front door (axum): ingest (single and batch), the participant feed, and the admin
//! API. Errors are JSON `{"error": "..."}` with the status of the [`HubError`] variant.
//!
//! | method and path | who | what |
//! | --- | --- | --- |
//! | `POST /v1/reports` | participant | one report; 202 `{"id"}` once the broker confirmed it |
//! | `POST /v1/reports/batch` | participant | `{"reports": [...]}` or `[...]`; all validated first |
//! | `GET /v1/feed?max=N&wait_ms=M&ack=TOKEN` | participant | reports from the participant's queue, delivered again unless confirmed |
//! | `POST /v1/feed/ack` | participant | confirms a feed answer by its token |
//! | `POST /admin/participants` | admin | register (API key, certificate or both); answers the API key, shown once |
//! | `POST /admin/participants/{id}/keys` | admin | another API key |
//! | `GET`, `PUT /admin/participants/{id}/subscription` | admin | read or change what a participant receives |
//! | `POST /admin/withdrawals` | admin | withdraw a published indicator as a false positive |
//! | `POST /graphql` | participant | GraphQL: `report`, `reportBatch`, `feed` (see `graphql`) |
//! | `GET /graphql` | participant | GraphQL over WebSocket: the `feed` subscription (see `ws`) |
//! | `GET /healthz` | anyone | `ok` |

use std::sync::Arc;
use std::time::Duration;

use apiguard_model::threat::IpPrefix;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::HubState;
use crate::auth::{generate_api_key, hash_api_key, token_matches};
use crate::bus::Confirm;
use crate::credentials::{AuthMode, Caller, CertMatch, NewCredentials};
use crate::error::HubError;
use crate::normalise::RawReport;
use crate::pipeline::ParticipantEntry;
use crate::store::NewParticipant;
use crate::subscription::Subscription;

/// The longest a feed call waits for a first report.
const MAX_FEED_WAIT: Duration = Duration::from_secs(30);

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        if let HubError::CursorExpired {
            message,
            pruned_through,
        } = &self
        {
            return cursor_expired(status, message, *pruned_through);
        }
        let mut response =
            (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// An expired feed cursor as an RFC 9457 problem: a client must tell it from a transient
/// failure (retrying the same cursor can never work) by a stable `code`. `error` repeats
/// `detail` for clients that read every other error's `{"error"}`.
fn cursor_expired(status: StatusCode, message: &str, pruned_through: i64) -> Response {
    let body = json!({
        "type": "urn:apiguard:problem:feed-cursor-expired",
        "title": "The feed cursor is older than the feed log kept",
        "status": status.as_u16(),
        "detail": message,
        "code": crate::error::FEED_CURSOR_EXPIRED,
        "pruned_through": pruned_through,
        "restart": "0",
        "error": message,
    });
    let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The REST router.
pub fn router(state: Arc<HubState>) -> Router {
    let limit = state.settings.limits.max_body_bytes;
    let schema = crate::graphql::schema(state.clone());
    Router::new()
        .route("/v1/reports", post(ingest_one))
        .route("/v1/reports/batch", post(ingest_batch))
        .route("/v1/feed", get(feed))
        .route("/v1/feed/ack", post(feed_ack))
        .route("/admin/participants", post(register))
        .route("/admin/participants/{id}/keys", post(add_key))
        .route(
            "/admin/participants/{id}/subscription",
            get(subscription).put(change_subscription),
        )
        .route("/admin/withdrawals", post(withdraw))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/graphql",
            post({
                let schema = schema.clone();
                move |State(state): State<Arc<HubState>>, caller: Caller, body: Bytes| {
                    let schema = schema.clone();
                    async move { crate::graphql::handle(state, schema, caller, body).await }
                }
            })
            .get(
                move |State(state): State<Arc<HubState>>, request: axum::extract::Request| {
                    let schema = schema.clone();
                    async move { crate::ws::upgrade(state, schema, request).await }
                },
            ),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
    {
        return Some(token);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The participant behind the request's API key (without the connection's certificate:
/// handlers take a [`Caller`] for that).
pub async fn authenticate(
    state: &HubState,
    headers: &HeaderMap,
) -> Result<Arc<ParticipantEntry>, HubError> {
    Caller::from_parts(headers, &Default::default())
        .authenticate(state)
        .await
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HubError> {
    serde_json::from_slice(body).map_err(|e| HubError::Invalid(format!("invalid JSON: {e}")))
}

async fn ingest_one(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, HubError> {
    let entry = caller.authenticate(&state).await?;
    let raw: RawReport = parse_json(&body)?;
    let id = crate::ingest::ingest(&state, &entry, raw, "rest").await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Batch {
    Wrapped { reports: Vec<Value> },
    Bare(Vec<Value>),
}

async fn ingest_batch(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, HubError> {
    let entry = caller.authenticate(&state).await?;
    let batch: Batch = parse_json(&body)?;
    let items = match batch {
        Batch::Wrapped { reports } | Batch::Bare(reports) => reports,
    };
    crate::ingest::check_batch_size(&state, items.len())?;
    let mut raws = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        raws.push(
            serde_json::from_value::<RawReport>(item)
                .map_err(|e| HubError::Invalid(format!("reports[{index}]: {e}")))?,
        );
    }
    let results = crate::ingest::ingest_batch(&state, &entry, raws, "rest").await?;
    let mut status = StatusCode::ACCEPTED;
    let mut answers = Vec::with_capacity(results.len());
    for (id, result) in results {
        match result {
            Ok(()) => answers.push(json!({ "id": id, "status": "accepted" })),
            Err(error) => {
                let code =
                    StatusCode::from_u16(error.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                if code == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::ACCEPTED {
                    status = code;
                }
                answers.push(json!({ "id": id, "status": "refused", "error": error.to_string() }));
            }
        }
    }
    let mut response = (status, axum::Json(json!({ "reports": answers }))).into_response();
    if status != StatusCode::ACCEPTED {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Ok(response)
}

#[derive(Deserialize)]
struct FeedQuery {
    max: Option<usize>,
    wait_ms: Option<u64>,
    /// The token of the previous answer, to confirm it. Present (even empty): the caller
    /// confirms every answer explicitly.
    ack: Option<String>,
}

/// A feed token as a caller sends it back: the hub makes them as 32 hex digits.
fn feed_token(text: &str) -> Result<&str, HubError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(HubError::Invalid(format!(
            "ack: `{}` is not a feed token; pass back the `ack` of a previous answer",
            text.chars().take(64).collect::<String>()
        )));
    }
    Ok(text)
}

/// `GET /v1/feed`: the next items of the participant's queue. They stay on the queue until
/// the answer is confirmed (`ack=TOKEN` on the next call, or `POST /v1/feed/ack`); a call
/// without `ack` confirms the caller's earlier answers to calls without `ack`. Unconfirmed
/// within `limits.feed_lease`, they are delivered again.
async fn feed(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Query(query): Query<FeedQuery>,
) -> Result<Response, HubError> {
    let entry = caller.authenticate(&state).await?;
    let max = query
        .max
        .unwrap_or(100)
        .clamp(1, state.settings.limits.max_feed);
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_FEED_WAIT);
    let confirm = match query.ack.as_deref() {
        None => Confirm::Implicit,
        Some(text) if text.trim().is_empty() => Confirm::Explicit(None),
        Some(text) => Confirm::Explicit(Some(feed_token(text)?.to_owned())),
    };
    let answer = state
        .bus
        .fetch(&entry.participant, max, wait, &confirm)
        .await?;
    Ok(feed_answer(&answer))
}

/// `{"reports": [...], "ack", "confirmed"}`, the items written as they came (each one JSON
/// value, checked by the bus) rather than parsed into trees only to be written out again.
fn feed_answer(answer: &crate::bus::FeedAnswer) -> Response {
    let size = answer.items.iter().map(|i| i.len() + 1).sum::<usize>() + 128;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"reports\":[");
    for (index, item) in answer.items.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.push(b']');
    if let Some(ack) = &answer.ack {
        body.extend_from_slice(b",\"ack\":");
        serde_json::to_writer(&mut body, ack).expect("a string serialises");
    }
    if let Some(confirmed) = answer.confirmed {
        body.extend_from_slice(b",\"confirmed\":");
        body.extend_from_slice(if confirmed {
            b"true".as_slice()
        } else {
            b"false".as_slice()
        });
    }
    body.push(b'}');
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedAck {
    ack: String,
}

/// `POST /v1/feed/ack` `{"ack": TOKEN}`: confirms a feed answer without asking for more.
/// `{"confirmed": false}` when its lease had ended (its items come again).
async fn feed_ack(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, HubError> {
    let entry = caller.authenticate(&state).await?;
    let request: FeedAck = parse_json(&body)?;
    let token = feed_token(&request.ack)?;
    let confirmed = state.bus.confirm_feed(&entry.participant.id, token).await;
    Ok(axum::Json(json!({ "confirmed": confirmed })).into_response())
}

pub(crate) fn require_admin(state: &HubState, headers: &HeaderMap) -> Result<(), HubError> {
    let Some(expected) = &state.settings.admin_token_sha256 else {
        return Err(HubError::Forbidden(
            "the admin API is off: set admin_token_sha256 in the hub config".into(),
        ));
    };
    match bearer(headers) {
        Some(token) if token_matches(token, expected) => Ok(()),
        Some(_) => Err(HubError::Unauthenticated("wrong admin token".into())),
        None => Err(HubError::Unauthenticated(
            "send the admin token as `Authorization: Bearer TOKEN`".into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    name: String,
    organisation: String,
    #[serde(default)]
    own_networks: Vec<String>,
    #[serde(default)]
    own_hosts: Vec<String>,
    #[serde(default)]
    subscription: Subscription,
    /// `api_key` (default), `certificate` or `both`.
    #[serde(default)]
    auth: AuthMode,
    /// Client certificates (PEM) identifying the participant, pinned by their SHA-256.
    #[serde(default)]
    cert_pem: Vec<String>,
    /// Client certificate fingerprints (SHA-256 of the DER, hex).
    #[serde(default)]
    cert_sha256: Vec<String>,
    /// Client certificate subjects, such as `CN=gw-1, O=Example`.
    #[serde(default)]
    cert_subject: Vec<String>,
}

async fn register(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    require_admin(&state, &headers)?;
    let request: RegisterRequest = parse_json(&body)?;
    let own_networks = request
        .own_networks
        .iter()
        .map(|n| {
            n.parse::<IpPrefix>()
                .map_err(|e| HubError::Invalid(format!("own_networks: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut certs = Vec::new();
    for (index, pem) in request.cert_pem.iter().enumerate() {
        let cert = crate::tls::client_cert_from_pem(pem.as_bytes())
            .map_err(|e| HubError::Invalid(format!("cert_pem[{index}]: {e}")))?;
        certs.push(CertMatch::Sha256(cert.sha256));
    }
    for (index, hex) in request.cert_sha256.iter().enumerate() {
        certs.push(
            CertMatch::sha256(hex)
                .map_err(|e| HubError::Invalid(format!("cert_sha256[{index}]: {e}")))?,
        );
    }
    for (index, subject) in request.cert_subject.iter().enumerate() {
        certs.push(
            CertMatch::subject(subject)
                .map_err(|e| HubError::Invalid(format!("cert_subject[{index}]: {e}")))?,
        );
    }
    let (participant, key) = crate::credentials::register(
        &state,
        NewParticipant {
            name: request.name,
            organisation: request.organisation,
            own_networks,
            own_hosts: request.own_hosts,
            subscription: request.subscription,
        },
        NewCredentials {
            mode: request.auth,
            certs,
        },
    )
    .await?;
    let mut answer =
        json!({ "id": participant.id, "name": participant.name, "auth": request.auth.as_str() });
    if let Some(key) = key {
        answer["api_key"] = json!(key);
    }
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// `GET /admin/participants/{id}/subscription`: what the participant receives.
async fn subscription(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HubError> {
    require_admin(&state, &headers)?;
    let Some(participant) = state.pipeline.store.participant(&id).await? else {
        return Err(HubError::NotFound(format!("no participant `{id}`")));
    };
    Ok(axum::Json(subscription_answer(&participant)).into_response())
}

/// `PUT /admin/participants/{id}/subscription` with a subscription (`classes`,
/// `min_severity`, `address_kinds`; what is left out means "all"): the participant's queue
/// is rebound at once, new bindings before old ones go, and the change is stored.
async fn change_subscription(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HubError> {
    require_admin(&state, &headers)?;
    let subscription: Subscription = parse_json(&body)?;
    let participant = crate::change_subscription(&state, &id, &subscription).await?;
    Ok(axum::Json(subscription_answer(&participant)).into_response())
}

fn subscription_answer(participant: &crate::store::Participant) -> Value {
    json!({
        "id": participant.id,
        "name": participant.name,
        "subscription": participant.subscription,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawRequest {
    /// The published address or prefix.
    indicator: String,
}

/// Withdraws a published indicator as a false positive: every participant that received it
/// gets a withdrawal (their gateways lift the block now), its reporters are contradicted,
/// and it is not published again within the trust window.
async fn withdraw(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    require_admin(&state, &headers)?;
    let request: WithdrawRequest = parse_json(&body)?;
    let indicator = request
        .indicator
        .parse::<IpPrefix>()
        .map_err(|e| HubError::Invalid(format!("indicator: {e}")))?
        .to_string();
    let pipeline = &state.pipeline;
    let rows = pipeline
        .store
        .withdraw_indicator(
            &indicator,
            apiguard_model::feed::WithdrawalReason::FalsePositive,
            &pipeline.settings.trust,
            chrono::Utc::now(),
        )
        .await?;
    pipeline.feed_appended(&rows);
    // Committed: if the broker is down now, the sweep publishes it later.
    if let Err(error) = crate::feed::publish_rows(pipeline, &state.bus, &rows).await {
        tracing::warn!(%error, "a withdrawal could not be published now; the sweep retries");
    }
    let withdrawals: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    Ok((
        StatusCode::OK,
        axum::Json(json!({ "indicator": indicator, "withdrawals": withdrawals })),
    )
        .into_response())
}

async fn add_key(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HubError> {
    require_admin(&state, &headers)?;
    if state.pipeline.store.participant(&id).await?.is_none() {
        return Err(HubError::NotFound(format!("no participant `{id}`")));
    }
    let key = generate_api_key()?;
    state
        .pipeline
        .store
        .add_api_key(&id, &hash_api_key(&key))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "api_key": key }))).into_response())
}
