//! The gRPC front door (proto/hub.proto): `apiguard.hub.v1.ThreatIngest`, unary and client
//! streaming, served on the REST port (HTTP/2 with prior knowledge). Messages are mapped to a
//! [`RawReport`] and take the same path as REST; errors map to gRPC codes.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::HubState;
use crate::auth::hex;
use crate::error::HubError;
use crate::normalise::RawReport;

/// Code generated from proto/hub.proto.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("apiguard.hub.v1");
}

use proto::threat_ingest_server::{ThreatIngest, ThreatIngestServer};
use proto::{Action, ReportAck, ReportResult, ReportStreamAck, Severity, ThreatReport};

impl From<HubError> for Status {
    fn from(error: HubError) -> Self {
        let code = match &error {
            HubError::Invalid(_) | HubError::Config(_) => Code::InvalidArgument,
            HubError::Unauthenticated(_) => Code::Unauthenticated,
            HubError::Forbidden(_) => Code::PermissionDenied,
            HubError::NotFound(_) => Code::NotFound,
            HubError::Conflict(_) => Code::AlreadyExists,
            HubError::CursorExpired { .. } => Code::OutOfRange,
            HubError::Overloaded(_) => Code::ResourceExhausted,
            HubError::BrokerUnavailable(_) => Code::Unavailable,
            HubError::Store(_) | HubError::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

/// The `ThreatIngest` service.
pub struct IngestService {
    state: Arc<HubState>,
}

/// The gRPC routes, to merge into the REST router.
pub fn router(state: Arc<HubState>) -> axum::Router {
    let limit = state.settings.limits.max_body_bytes;
    let service = ThreatIngestServer::new(IngestService { state }).max_decoding_message_size(limit);
    tonic::service::Routes::new(service).into_axum_router()
}

fn api_key<T>(request: &Request<T>) -> Option<&str> {
    let metadata = request.metadata();
    if let Some(token) = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
    {
        return Some(token);
    }
    metadata
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The TLS client certificate of the call's connection, if any.
fn client_cert<T>(request: &Request<T>) -> Option<Arc<crate::tls::ClientCert>> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::tls::Peer>>()
        .and_then(|info| info.0.cert.clone())
}

async fn authenticate<T>(
    state: &HubState,
    request: &Request<T>,
) -> Result<Arc<crate::pipeline::ParticipantEntry>, HubError> {
    let cert = client_cert(request);
    crate::credentials::authenticate(state, api_key(request), cert.as_deref()).await
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn time(field: &str, unix_ms: i64) -> Result<Option<DateTime<Utc>>, HubError> {
    if unix_ms == 0 {
        return Ok(None);
    }
    DateTime::from_timestamp_millis(unix_ms)
        .map(Some)
        .ok_or_else(|| HubError::Invalid(format!("{field}: {unix_ms} is out of range")))
}

/// Maps a gRPC message to the raw report every front door produces.
pub fn raw_report(message: ThreatReport) -> Result<RawReport, HubError> {
    let invalid = |m: String| HubError::Invalid(m);
    let id = match message.id.as_str() {
        "" => None,
        text => Some(
            Uuid::parse_str(text).map_err(|_| invalid(format!("id: `{text}` is not a UUID")))?,
        ),
    };
    let severity = match Severity::try_from(message.severity) {
        Ok(Severity::Unspecified) => None,
        Ok(Severity::Low) => Some("low"),
        Ok(Severity::Medium) => Some("medium"),
        Ok(Severity::High) => Some("high"),
        Ok(Severity::Critical) => Some("critical"),
        Err(_) => {
            return Err(invalid(format!(
                "severity: unknown value {}",
                message.severity
            )));
        }
    };
    let action = match Action::try_from(message.action) {
        Ok(Action::Unspecified) => None,
        Ok(Action::Blocked) => Some("blocked"),
        Ok(Action::Challenged) => Some("challenged"),
        Ok(Action::RateLimited) => Some("rate_limited"),
        Ok(Action::Monitored) => Some("monitored"),
        Err(_) => return Err(invalid(format!("action: unknown value {}", message.action))),
    };
    let confidence = match message.confidence {
        None => None,
        Some(c) => Some(
            u8::try_from(c)
                .ok()
                .filter(|c| *c <= 100)
                .ok_or_else(|| invalid(format!("confidence is 0 to 100, not {c}")))?,
        ),
    };
    let source_ip = match message.source {
        None => None,
        Some(address) => {
            let ip = match address.ip.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(address.ip.as_slice()).expect("4 bytes")),
                16 => IpAddr::from(<[u8; 16]>::try_from(address.ip.as_slice()).expect("16 bytes")),
                n => {
                    return Err(invalid(format!(
                        "source.ip: {n} bytes; an address has 4 or 16"
                    )));
                }
            };
            Some(match address.prefix_len {
                Some(len) => format!("{ip}/{len}"),
                None => ip.to_string(),
            })
        }
    };
    let payload_sha256 = match (message.payload_sha256.len(), message.payload.is_empty()) {
        (32, _) => Some(hex(&message.payload_sha256)),
        (0, false) => Some(hex(&Sha256::digest(&message.payload))),
        (0, true) => None,
        (n, _) => {
            return Err(invalid(format!(
                "payload_sha256: {n} bytes; SHA-256 has 32"
            )));
        }
    };
    Ok(RawReport {
        id,
        attack: message.attack,
        severity: severity.map(str::to_owned),
        confidence,
        source_ip,
        method: non_empty(message.method),
        path: non_empty(message.path),
        route: non_empty(message.route),
        host: non_empty(message.host),
        user_agent: non_empty(message.user_agent),
        headers: (!message.headers.is_empty()).then(|| message.headers.into_iter().collect()),
        payload: None,
        payload_sha256,
        tls_ja3: non_empty(message.tls_ja3),
        tls_ja4: non_empty(message.tls_ja4),
        action: action.map(str::to_owned),
        first_seen: time("first_seen_unix_ms", message.first_seen_unix_ms)?,
        last_seen: time("last_seen_unix_ms", message.last_seen_unix_ms)?,
        count: (message.count != 0).then_some(message.count),
        ttl_seconds: (message.ttl_seconds != 0).then_some(message.ttl_seconds),
        description: non_empty(message.description),
    })
}

#[tonic::async_trait]
impl ThreatIngest for IngestService {
    async fn report(&self, request: Request<ThreatReport>) -> Result<Response<ReportAck>, Status> {
        let entry = authenticate(&self.state, &request).await?;
        let raw = raw_report(request.into_inner())?;
        let id = crate::ingest::ingest(&self.state, &entry, raw, "grpc").await?;
        Ok(Response::new(ReportAck { id: id.to_string() }))
    }

    async fn report_stream(
        &self,
        request: Request<Streaming<ThreatReport>>,
    ) -> Result<Response<ReportStreamAck>, Status> {
        let entry = authenticate(&self.state, &request).await?;
        let max = self.state.settings.limits.max_batch;
        let mut stream = request.into_inner();
        let mut raws = Vec::new();
        while let Some(message) = stream.message().await? {
            if raws.len() == max {
                return Err(HubError::Invalid(format!(
                    "the stream has more than {max} reports, the limit"
                ))
                .into());
            }
            let index = raws.len();
            raws.push(
                raw_report(message)
                    .map_err(|e| HubError::Invalid(format!("reports[{index}]: {e}")))?,
            );
        }
        let mut results = crate::ingest::ingest_batch(&self.state, &entry, raws, "grpc").await?;
        let accepted = results.iter().filter(|(_, r)| r.is_ok()).count();
        if accepted == 0 {
            // Nothing was queued: answer like the unary call would (RESOURCE_EXHAUSTED...).
            if let Some((_, Err(error))) = results.drain(..).next() {
                return Err(error.into());
            }
        }
        let results = results
            .into_iter()
            .map(|(id, result)| match result {
                Ok(()) => ReportResult {
                    id: id.to_string(),
                    code: 0,
                    error: String::new(),
                },
                Err(error) => {
                    let status = Status::from(error);
                    ReportResult {
                        id: id.to_string(),
                        code: status.code() as i32,
                        error: status.message().to_owned(),
                    }
                }
            })
            .collect();
        Ok(Response::new(ReportStreamAck {
            results,
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        }))
    }
}
