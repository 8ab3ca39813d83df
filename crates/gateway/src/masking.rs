//! Response inspection on the way back to the client: a text or JSON response is buffered up
//! to the route's bound, scanned for sensitive data (crates/policy `response`), reported, and
//! in mask mode sent with the data replaced and `Content-Length` fixed. Anything the scan does
//! not change is sent byte for byte; a body above the bound, a compressed body or one slower
//! than the route's timeout passes unchecked and is counted.

use std::sync::Arc;
use std::time::Duration;

use apiguard_model::event::now_ms;
use apiguard_model::{EventKind, Finding, SecurityEvent, Severity};
use apiguard_policy::response::{
    BodyKind, Detector, DetectorFinding, DetectorSet, ResponseMode, ResponseScanner, body_kind,
};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use crate::body::ReadAhead;
use crate::config::{Config, ResponseInspectionMode};
use crate::connpool::PooledBody;
use crate::load::Problem;
use crate::proxy::Shared;

/// A route's response inspection, compiled.
pub struct ResponseInspection {
    mode: ResponseMode,
    scanner: ResponseScanner,
    max_body_bytes: usize,
}

/// Checks each route's `response_inspection:`; `None` for routes without it (or `off`).
pub fn compile_response_inspection(
    config: &Config,
    problems: &mut Vec<Problem>,
) -> Vec<Option<Arc<ResponseInspection>>> {
    config
        .routes
        .iter()
        .map(|route| {
            let inspection = route.response_inspection.as_ref()?;
            let mode = match inspection.mode {
                ResponseInspectionMode::Off => return None,
                ResponseInspectionMode::Detect => ResponseMode::Detect,
                ResponseInspectionMode::Mask => ResponseMode::Mask,
            };
            let before = problems.len();
            let detectors = match &inspection.detectors {
                None => DetectorSet::all(),
                Some(names) => {
                    let mut set = DetectorSet::default();
                    for name in names {
                        match Detector::parse(name) {
                            Some(detector) => set.insert(detector),
                            None => problems.push(Problem::at(
                                &route.id,
                                format!(
                                    "route `{}`: response_inspection: unknown detector `{name}` (known: {})",
                                    route.id.value,
                                    Detector::ALL.map(Detector::as_str).join(", ")
                                ),
                            )),
                        }
                    }
                    if set.is_empty() && problems.len() == before {
                        problems.push(Problem::at(
                            &route.id,
                            format!(
                                "route `{}`: response_inspection.detectors is empty (use mode: off)",
                                route.id.value
                            ),
                        ));
                    }
                    set
                }
            };
            if inspection.max_body_bytes == 0 {
                problems.push(Problem::at(
                    &route.id,
                    format!(
                        "route `{}`: response_inspection.max_body_bytes must be at least 1",
                        route.id.value
                    ),
                ));
            }
            if problems.len() > before {
                return None;
            }
            Some(Arc::new(ResponseInspection {
                mode,
                scanner: ResponseScanner::new(detectors),
                max_body_bytes: inspection.max_body_bytes,
            }))
        })
        .collect()
}

/// What inspecting a response found.
#[derive(Default)]
pub struct Inspected {
    pub findings: Vec<Finding>,
    /// The body in `read_ahead` was replaced by its masked form.
    pub masked: bool,
}

/// Inspects a response whose head is `head`. The body's start may already have been read
/// (for OpenAPI response validation): inspection goes on from `read_ahead` and leaves what it
/// read there, masked when the mode says so, to be sent before the rest of `body`. Errors are
/// the upstream's body failing while it is read (the head is not sent yet: the caller answers
/// 502).
#[allow(clippy::too_many_arguments)]
pub async fn inspect(
    inspection: &ResponseInspection,
    request_method: &Method,
    head: &mut http::response::Parts,
    body: &mut PooledBody,
    read_ahead: &mut ReadAhead,
    timeout: Duration,
    shared: &Shared,
    route: &str,
) -> Result<Inspected, hyper::Error> {
    let status = head.status;
    if *request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        // A range of a body: masking would shift the offsets the client asked for.
        || status == StatusCode::PARTIAL_CONTENT
        || (read_ahead.prefix.is_none() && http_body::Body::is_end_stream(&*body))
    {
        return Ok(Inspected::default());
    }
    let Some(kind) = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| body_kind(v.as_bytes()))
    else {
        return Ok(Inspected::default());
    };
    let skipped = |reason: &str| {
        shared
            .integrity
            .metrics
            .response_skipped
            .with_label_values(&[route, reason])
            .inc();
    };
    if head
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        skipped("encoded");
        return Ok(Inspected::default());
    }
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > inspection.max_body_bytes as u64) {
        skipped("too_large");
        return Ok(Inspected::default());
    }

    // Read until the end, the bound, or the deadline. Each frame is awaited on its own (a
    // frame future dropped at the deadline loses nothing), so what was read still goes out.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunks: Vec<Bytes> = read_ahead.prefix.take().into_iter().collect();
    let mut len = chunks.iter().map(Bytes::len).sum::<usize>();
    let complete = read_ahead.complete
        || loop {
            if len > inspection.max_body_bytes {
                skipped("too_large");
                break false;
            }
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_elapsed) => {
                    skipped("timeout");
                    break false;
                }
                Ok(None) => break true,
                Ok(Some(frame)) => match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => {
                            len += data.len();
                            chunks.push(data);
                        }
                        Err(frame) => {
                            read_ahead.trailers = frame.into_trailers().ok();
                            break true;
                        }
                    },
                    Err(error) => {
                        read_ahead.prefix = Some(join(chunks, len));
                        return Err(error);
                    }
                },
            }
        };
    let data = join(chunks, len);
    read_ahead.complete = complete;
    if !complete || len > inspection.max_body_bytes {
        if complete {
            skipped("too_large");
        }
        read_ahead.prefix = Some(data);
        return Ok(Inspected::default());
    }
    let scan = inspection
        .scanner
        .scan(&data, kind, inspection.mode == ResponseMode::Mask);
    let findings: Vec<Finding> = scan.findings.iter().map(|f| finding(f, kind)).collect();
    let action = if scan.masked.is_some() {
        "masked"
    } else {
        "detected"
    };
    for found in &scan.findings {
        shared
            .integrity
            .metrics
            .response_findings
            .with_label_values(&[route, found.detector.as_str(), action])
            .inc_by(found.count as u64);
    }
    let masked = scan.masked.is_some();
    read_ahead.prefix = Some(match scan.masked {
        Some(masked) => {
            let headers = &mut head.headers;
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
            // Validators and digests of the original body would now lie.
            for name in [
                header::ETAG,
                header::HeaderName::from_static("content-md5"),
                header::HeaderName::from_static("content-digest"),
                header::HeaderName::from_static("repr-digest"),
            ] {
                headers.remove(name);
            }
            Bytes::from(masked)
        }
        None => data,
    });
    Ok(Inspected { findings, masked })
}

fn join(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(len);
            chunks.iter().for_each(|c| joined.extend_from_slice(c));
            joined.freeze()
        }
    }
}

/// Secrets and identifiers are errors; a stack trace a warning (it helps an attacker, it is
/// not data of anyone); an address a notice (many APIs return them on purpose).
fn severity(detector: Detector) -> Severity {
    match detector {
        Detector::Email => Severity::Notice,
        Detector::StackTrace => Severity::Warning,
        _ => Severity::Error,
    }
}

fn finding(found: &DetectorFinding, kind: BodyKind) -> Finding {
    let severity = severity(found.detector);
    Finding {
        rule_id: format!("response.{}", found.detector.as_str()).into(),
        class: "response".into(),
        severity,
        score: severity.score(),
        target: match kind {
            BodyKind::Json => "response:json".into(),
            BodyKind::Text => "response:text".into(),
        },
        evidence: format!("{} × {}", found.count, found.evidence)
            .chars()
            .take(200)
            .collect(),
    }
}

/// Publishes a response's findings on the event stream and counts them with the other
/// findings (`apiguard_findings_total`).
#[allow(clippy::too_many_arguments)]
pub fn report(
    shared: &Shared,
    route: &str,
    client: std::net::IpAddr,
    method: &Method,
    path: &str,
    request_id: &str,
    status: u16,
    masked: bool,
    findings: Vec<Finding>,
) {
    for finding in &findings {
        shared
            .metrics
            .findings
            .with_label_values(&[&finding.rule_id, &finding.class])
            .inc();
    }
    let event = SecurityEvent {
        at_ms: now_ms(),
        request_id: Some(request_id.to_owned()),
        client_ip: Some(client.to_canonical()),
        identity: None,
        fingerprint: None,
        route: Some(route.to_owned()),
        method: Some(method.to_string()),
        path: Some(path.to_owned()),
        kind: EventKind::ResponseInspected {
            status,
            masked,
            findings,
        },
    };
    tracing::warn!(target: "apiguard::security", event = %serde_json::to_string(&event).unwrap_or_default(), "security event");
    let _ = shared.events.send(Arc::new(event));
}
