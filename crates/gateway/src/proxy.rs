//! The request path: route, inspect, forward, answer. Everything a request needs is read
//! from one snapshot loaded at its start, so a reload never changes a request halfway.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use apiguard_model::event::now_ms;
use apiguard_model::{Action, ClientInfo, EventKind, RequestView, SecurityEvent};
use apiguard_policy::{AuthnRuntime, IntegrityRuntime, RateLimits};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;

use crate::body::{BodyTooLarge, BytesSent, ReadAhead, RequestBody, ResponseBody};
use crate::config::UpstreamProtocol;
use crate::enforcement::Enforcement;
use crate::headers::{self, TRACEPARENT, X_REQUEST_ID};
use crate::metrics::Metrics;
use crate::metrics::RouteMetrics;
use crate::pipeline::Decision;
use crate::problem::{problem, problem_with_params};
use crate::protocols::GrpcBody;
use crate::router::{normalize_path, request_host};
use crate::snapshot::{RouteRuntime, Snapshot};
use crate::upstream::AttemptResult;

/// State shared by every connection: the current snapshot, metrics and the event stream.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub events: broadcast::Sender<Arc<SecurityEvent>>,
    /// Requests no route matched, counted under the route label `-`.
    pub unrouted: RouteMetrics,
    /// Block rules; they outlive configuration reloads.
    pub enforcement: Arc<Enforcement>,
    /// Learned behaviour; it outlives configuration reloads.
    pub behavior: Arc<apiguard_behavior::Behavior>,
    /// JWKS key sets and continuous verification state; they outlive reloads.
    pub authn: Arc<AuthnRuntime>,
    /// Rate limiters and the Redis sync; they outlive reloads.
    pub rate_limits: Arc<RateLimits>,
    /// Just-in-time authorisation grants; they outlive configuration reloads too.
    pub grants: Arc<apiguard_policy::authz::Grants>,
    /// Self-healing's circuits and client ledger; they outlive reloads.
    pub heal: Arc<crate::heal::HealState>,
    /// The signature replay cache and integrity metrics; they outlive reloads.
    pub integrity: Arc<IntegrityRuntime>,
}

/// What a connection knows about its client.
pub struct Connection {
    pub client: ClientInfo,
    pub listener: Arc<str>,
    pub forwarding: headers::ClientForwarding,
}

pub async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let trace = headers::trace_context(request.headers());
    let host = request_host(request.uri(), request.headers()).to_owned();
    let routed_path = match normalize_path(request.uri().path()) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(path) => Some(path),
    };
    let path = routed_path.as_deref().unwrap_or(request.uri().path());
    let found = snapshot
        .router
        .find(request.method(), &host, path, request.headers());
    let Some(route) = found.map(|i| &snapshot.routes[i]) else {
        let response = problem(
            StatusCode::NOT_FOUND,
            "no route matches this request",
            &trace.request_id,
        );
        shared.unrouted.observe(
            &shared.metrics,
            request.method(),
            404,
            "allow",
            started.elapsed().as_secs_f64(),
        );
        log_local(
            &snapshot,
            &connection,
            &request,
            &trace.request_id,
            &response,
            started,
            "-",
        );
        return Ok(response);
    };
    let response = forward(
        &shared,
        &snapshot,
        route,
        &connection,
        request,
        &trace,
        &host,
        routed_path,
        started,
    )
    .await;
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: &Shared,
    snapshot: &Snapshot,
    route: &RouteRuntime,
    connection: &Connection,
    mut request: Request<Incoming>,
    trace: &headers::TraceContext,
    host: &str,
    routed_path: Option<String>,
    started: Instant,
) -> Response<ResponseBody> {
    let request_id = trace.request_id.as_str();
    let is_upgrade = request.version() <= Version::HTTP_11 && wants_upgrade(request.headers());
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, incoming) = request.into_parts();
    let local = LocalAnswer {
        shared,
        snapshot,
        route,
        connection,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        request_id,
        started,
    };

    // Stages that need the body see up to the route's inspection limit of it; the rest (if
    // any) streams upstream after the inspected part. Chunked bodies, which declare no
    // length, are read the same way, so leaving out Content-Length hides nothing.
    let declared_length = content_length(&parts.headers);
    let mut incoming = Some(incoming);
    let mut buffered: Option<Bytes> = None;
    let mut inspected: Option<Bytes> = None;
    let mut trailers: Option<http::HeaderMap> = None;
    // A declared length over the route's limit is refused by the limits stage without
    // reading anything.
    let body_may_follow = declared_length.is_none_or(|n| n > 0 && n <= route.limits.max_body_bytes)
        && incoming
            .as_ref()
            .is_some_and(|b| !http_body::Body::is_end_stream(b));
    if route.pipeline.needs_body() && !is_upgrade && body_may_follow && !is_grpc(&parts.headers) {
        let body = incoming.as_mut().expect("the body is still here");
        let read = tokio::time::timeout(
            route.request_timeout,
            read_prefix(body, route.pipeline.body_limit()),
        )
        .await;
        match read {
            Ok(Ok(prefix)) => {
                if prefix.complete {
                    incoming = None;
                    trailers = prefix.trailers;
                    inspected = Some(prefix.data.clone());
                    buffered = Some(prefix.data);
                } else {
                    inspected = Some(prefix.data);
                }
            }
            Ok(Err(_)) => {
                return local.problem(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                    Action::Allow,
                );
            }
            Err(_elapsed) => {
                return local.problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                    Action::Allow,
                );
            }
        }
    }

    let view = RequestView {
        method: &parts.method,
        uri: &parts.uri,
        version: parts.version,
        headers: &parts.headers,
        client: &connection.client,
        route: &route.id,
        request_id,
        body: inspected.as_ref(),
    };
    let mut decision = route.pipeline.run(&view);
    // Self-healing groups offenders and sizes fingerprint rules by it; computed from the
    // headers as the client sent them, before any is changed for the upstream.
    let fingerprint = shared
        .heal
        .ledger
        .is_enabled()
        .then(|| apiguard_behavior::bot::client_fingerprint(parts.version, &parts.headers));
    // Stage 7 on gRPC bodies (protocols.rs): a unary request is read and inspected here; a
    // client stream is inspected message by message as it flows upstream.
    let mut grpc_guard = None;
    if let Some(grpc) = &route.protocols.grpc
        && crate::protocols::is_grpc(&parts.headers)
    {
        let report = || crate::protocols::StreamReport {
            events: shared.events.clone(),
            metrics: shared.metrics.clone(),
            route: route.id.clone(),
            client_ip: connection.client.peer.ip(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            request_id: request_id.to_owned(),
            threshold: route.pipeline.threshold,
        };
        let inspected_body = grpc
            .inspect_body(
                parts.uri.path(),
                &mut incoming,
                route.request_timeout,
                route.limits.max_body_bytes,
                &mut decision,
                request_id,
                report,
            )
            .await;
        match inspected_body {
            GrpcBody::Untouched => {}
            GrpcBody::Buffered { data, trailers: t } => {
                buffered = Some(data);
                trailers = t;
            }
            GrpcBody::Guarded(guard) => grpc_guard = Some(guard),
            GrpcBody::Answer(response) => return local.finish(*response, Action::Allow),
        }
    }
    let grpc_stopped = grpc_guard.as_ref().map(|g| g.violation());
    route.metrics.observe_score(decision.score);
    if let (Some(continuous), Some(identity)) = (&route.continuous, &decision.identity) {
        continuous.observe(identity, decision.score);
    }
    let answer_headers = std::mem::take(&mut decision.headers);
    if !decision.findings.is_empty() {
        report(
            shared,
            route,
            connection,
            &parts.method,
            parts.uri.path(),
            request_id,
            &decision,
            fingerprint,
        );
    }
    if matches!(decision.action, Action::Block | Action::Challenge) {
        let status = StatusCode::from_u16(decision.status).unwrap_or(StatusCode::FORBIDDEN);
        let class = decision.findings.last().map(|f| f.class.as_ref());
        if class == Some("openapi") {
            // Schema validation names the fields, in the specification's words.
            let invalid: Vec<(&str, &str)> = decision
                .findings
                .iter()
                .filter(|f| f.class == "openapi")
                .map(|f| (f.target.as_str(), f.evidence.as_str()))
                .collect();
            let mut response = problem_with_params(
                status,
                "the request does not match the API specification",
                request_id,
                &invalid,
            );
            add_headers(response.headers_mut(), &answer_headers);
            return local.finish(response, decision.action);
        }
        let detail = match status.as_u16() {
            413 => "the request body is larger than this route allows",
            431 => "the request headers are larger than this route allows",
            401 => "authentication is required",
            429 => "too many requests: retry after the time in Retry-After",
            503 => "the gateway cannot verify credentials right now",
            403 if class == Some("authz") => "the request is not authorised",
            _ => "the request was refused by policy",
        };
        let detail = decision.problem_detail.as_deref().unwrap_or(detail);
        let mut response = route
            .protocols
            .refusal(&decision, &parts.headers, request_id)
            .unwrap_or_else(|| problem(status, detail, request_id));
        add_headers(response.headers_mut(), &answer_headers);
        return local.finish(response, decision.action);
    }

    // The head sent upstream, with the path as it was routed.
    if let Some(path) = routed_path {
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        if let Ok(pq) = http::uri::PathAndQuery::try_from(path_and_query) {
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(uri_parts) {
                parts.uri = uri;
            }
        }
    }
    // A circuit self-healing opened holds requests back from a failing upstream: they go to
    // its fallback pool, or are answered 503 at once.
    let mut pool = &route.pool;
    if let Some((circuit, crate::circuit::Passage::Held)) =
        shared.heal.circuits.check(&route.id, &pool.name)
    {
        match circuit
            .fallback
            .as_ref()
            .and_then(|f| snapshot.pools.get(f))
        {
            Some(fallback) => {
                circuit
                    .rerouted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                pool = fallback;
            }
            None => {
                shared.heal.circuits.count_rejected(&circuit, &route.id);
                let mut response = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the upstream service is failing; requests are held back for a while",
                    request_id,
                );
                if let apiguard_heal::CircuitPhase::Open { until_ms } = circuit.phase {
                    let seconds = until_ms.saturating_sub(now_ms()).div_ceil(1000).max(1);
                    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                }
                return local.finish(response, decision.action);
            }
        }
    }
    let h2 = pool.settings.protocol == UpstreamProtocol::H2c;
    headers::remove_hop_by_hop(&mut parts.headers, is_upgrade);
    headers::add_forwarding(&mut parts.headers, &connection.forwarding, host);
    if let Some(graphql) = &route.protocols.graphql {
        graphql.forward_headers(&mut parts.headers);
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        parts.headers.insert(X_REQUEST_ID, id);
    }
    parts.headers.insert(TRACEPARENT, trace.traceparent.clone());
    if h2 {
        // HTTP/2 carries the authority in the request line; a Host header would conflict.
        parts.headers.remove(header::HOST);
    } else if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    let has_body = buffered.as_ref().is_some_and(|b| !b.is_empty())
        || trailers.is_some()
        || inspected.is_some()
        || declared_length.is_some_and(|n| n > 0)
        || (declared_length.is_none()
            && incoming
                .as_ref()
                .is_some_and(|b| !http_body::Body::is_end_stream(b)));
    let retryable = !has_body && !is_upgrade && is_idempotent(&parts.method);
    // A retry goes to another target; with one target there is none (and no header copy
    // needs keeping for it).
    let max_attempts = if retryable && pool.targets.len() > 1 {
        1 + pool.settings.retries
    } else {
        1
    };

    let mut avoid = None;
    let mut attempt_no = 0;
    // One hop to a fallback pool at most (fallbacks may name each other).
    let mut fallback_hops = 1u8;
    let (response, target) = loop {
        attempt_no += 1;
        let Some(attempt) = pool.pick(avoid.as_ref()) else {
            // No target of the pool can take traffic: its fallback pool, if it has one.
            if let Some(fallback) = pool
                .settings
                .fallback
                .as_ref()
                .and_then(|f| snapshot.pools.get(f))
                .filter(|f| fallback_hops > 0 && !Arc::ptr_eq(f, pool))
            {
                fallback_hops -= 1;
                pool = fallback;
                avoid = None;
                continue;
            }
            return local.problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream target is available",
                decision.action,
            );
        };
        let last_try = attempt_no >= max_attempts;
        let mut upstream_request = Request::new(match (buffered.take(), incoming.take()) {
            (Some(bytes), _) => RequestBody::full(bytes, trailers.take()),
            (None, Some(body)) if has_body || is_upgrade => match grpc_guard.take() {
                Some(guard) => RequestBody::guarded(body, guard, route.limits.max_body_bytes),
                None => RequestBody::streaming(inspected.take(), body, route.limits.max_body_bytes),
            },
            _ => RequestBody::Empty,
        });
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = parts
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        *upstream_request.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *upstream_request.headers_mut() = if last_try {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let result = tokio::time::timeout(
            route.request_timeout,
            pool.send(&attempt.target, upstream_request),
        )
        .await;
        match result {
            Ok(Ok(response)) => {
                pool.record(
                    &attempt.target,
                    AttemptResult::Status(response.status().as_u16()),
                );
                break (response, attempt.target.clone());
            }
            Ok(Err(error)) => {
                if let Some(violation) = grpc_stopped.as_ref().and_then(|v| v.get()) {
                    return local.finish(
                        crate::protocols::stopped_stream_response(violation, request_id),
                        Action::Block,
                    );
                }
                if is_body_too_large(&error) {
                    return local.problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the request body is larger than this route allows",
                        decision.action,
                    );
                }
                pool.record(&attempt.target, AttemptResult::GatewayFailure);
                let kind = if error.is_connect() {
                    "connect"
                } else {
                    "protocol"
                };
                shared
                    .metrics
                    .upstream_failures
                    .with_label_values(&[&pool.name, kind])
                    .inc();
                tracing::debug!(request_id, target = %attempt.target.address, %error, "upstream attempt failed");
                if !last_try && error.is_connect() {
                    avoid = Some(attempt.target.clone());
                    continue;
                }
                return local.problem(
                    StatusCode::BAD_GATEWAY,
                    "the upstream service could not be reached or failed to answer",
                    decision.action,
                );
            }
            Err(_elapsed) => {
                pool.record(&attempt.target, AttemptResult::GatewayFailure);
                shared
                    .metrics
                    .upstream_failures
                    .with_label_values(&[&pool.name, "timeout"])
                    .inc();
                return local.problem(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream service did not answer in time",
                    decision.action,
                );
            }
        }
    };

    let mut response = response;
    let upstream_upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS
        && client_upgrade.is_some())
    .then(|| hyper::upgrade::on(&mut response));
    let (mut head, mut body) = response.into_parts();
    // Answer in the client's protocol version, whatever the upstream spoke.
    head.version = parts.version;
    let mut read_ahead = ReadAhead::default();
    if let Some(validation) = route.responses.as_deref()
        && upstream_upgrade.is_none()
        && let Some(op) = validation.operation(parts.method.as_str(), parts.uri.path())
    {
        let content_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let buffer = parts.method != Method::HEAD
            && validation.wants_body(content_type.as_deref())
            && content_length(&head.headers).is_none_or(|n| n <= validation.max_body_bytes as u64);
        let mut complete = None;
        if buffer {
            let read = tokio::time::timeout(
                route.request_timeout,
                read_prefix(&mut body, validation.max_body_bytes),
            )
            .await;
            match read {
                Ok(Ok(prefix)) => {
                    if prefix.complete {
                        complete = Some(prefix.data.clone());
                    }
                    read_ahead.complete = prefix.complete;
                    read_ahead.trailers = prefix.trailers;
                    read_ahead.prefix = Some(prefix.data);
                }
                _ => {
                    return local.problem(
                        StatusCode::BAD_GATEWAY,
                        "the upstream service could not be reached or failed to answer",
                        decision.action,
                    );
                }
            }
        }
        let violations = validation.check(
            op,
            head.status.as_u16(),
            content_type.as_deref(),
            complete.as_deref(),
        );
        if !violations.is_empty() {
            let enforce = validation.mode == apiguard_policy::openapi::OpenApiMode::Enforce;
            let checked = Decision {
                action: if enforce {
                    Action::Block
                } else {
                    Action::LogOnly
                },
                status: if enforce { 502 } else { 0 },
                score: 0,
                findings: violations
                    .iter()
                    .map(|v| apiguard_policy::openapi::finding(v, 0))
                    .collect(),
                headers: http::HeaderMap::new(),
                identity: decision.identity.clone(),
                problem_detail: None,
            };
            report(
                shared,
                route,
                connection,
                &parts.method,
                parts.uri.path(),
                request_id,
                &checked,
                fingerprint,
            );
            if enforce {
                // The response's data never reaches the client.
                return local.problem(
                    StatusCode::BAD_GATEWAY,
                    "the upstream response does not match the API specification",
                    Action::Block,
                );
            }
        }
    }
    let upgraded = upstream_upgrade.is_some();
    match (client_upgrade, upstream_upgrade) {
        (Some(client), Some(upstream)) => {
            tokio::spawn(tunnel(client, upstream));
        }
        _ => headers::remove_hop_by_hop(&mut head.headers, false),
    }
    let crate::masking::Inspected { findings, masked } = match &route.response {
        Some(inspection) if !upgraded => {
            let read = crate::masking::inspect(
                inspection,
                &parts.method,
                &mut head,
                &mut body,
                &mut read_ahead,
                route.request_timeout,
                shared,
                &route.id,
            )
            .await;
            match read {
                Ok(inspected) => inspected,
                Err(error) => {
                    tracing::debug!(request_id, %error, "the upstream body failed while it was inspected");
                    return local.problem(
                        StatusCode::BAD_GATEWAY,
                        "the upstream service failed while sending its answer",
                        decision.action,
                    );
                }
            }
        }
        _ => crate::masking::Inspected::default(),
    };
    if let Ok(id) = HeaderValue::from_str(request_id) {
        head.headers.insert(X_REQUEST_ID, id);
    }
    add_headers(&mut head.headers, &answer_headers);
    let status = head.status.as_u16();
    let latency = started.elapsed();
    let seconds = latency.as_secs_f64();
    if let Some(behavior) = &route.behavior {
        behavior.observe(&apiguard_behavior::Observation {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            client: connection.client.peer.ip(),
            identity: decision.identity.as_ref().map(|i| i.subject.as_str()),
            status,
            latency,
            request_bytes: declared_length,
            response_bytes: content_length(&head.headers),
            flagged: !decision.findings.is_empty(),
        });
    }
    shared.heal.ledger.observe(
        connection.client.peer.ip(),
        decision.identity.as_ref().map(|i| i.subject.as_str()),
        fingerprint,
        status,
        decision.score > 0,
    );
    route.metrics.observe(
        &shared.metrics,
        &parts.method,
        status,
        decision.action.as_str(),
        seconds,
    );
    let on_end = snapshot.access_log.then(|| {
        let line = AccessLine {
            request_id: request_id.to_owned(),
            route: route.id.clone(),
            upstream: target.address.clone(),
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            status,
            client: connection.client.peer.ip(),
            listener: connection.listener.clone(),
            decision: decision.action,
        };
        BytesSent::new(move |bytes| line.write(started, bytes))
    });
    if !findings.is_empty() {
        crate::masking::report(
            shared,
            &route.id,
            connection.client.peer.ip(),
            &parts.method,
            parts.uri.path(),
            request_id,
            status,
            masked,
            findings,
        );
    }
    let body = ResponseBody::Upstream {
        prefix: read_ahead.prefix,
        trailers: read_ahead.trailers,
        inner: body,
        on_end,
        on_error: grpc_stopped.map(crate::protocols::trailers_on_stop),
    };
    let body = match &route.protocols.graphql {
        Some(graphql) => {
            graphql
                .filter_response(&mut head, body, route.request_timeout)
                .await
        }
        None => body,
    };
    Response::from_parts(head, body)
}

/// Copies bytes both ways between an upgraded client connection and the upstream's.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        tracing::debug!("an upgrade did not complete on one side");
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Adds the pipeline's answer headers (they never replace the upstream's).
fn add_headers(headers: &mut http::HeaderMap, extra: &http::HeaderMap) {
    for (name, value) in extra {
        headers.append(name.clone(), value.clone());
    }
}

fn wants_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The start of a request body, read for inspection.
struct BodyPrefix {
    data: Bytes,
    /// The body ended within the limit (`data` is all of it).
    complete: bool,
    trailers: Option<http::HeaderMap>,
}

/// Reads `body` until it ends or more than `limit` bytes have arrived. An incomplete prefix
/// is longer than `limit` (by at most one frame), which tells the detection engine that it
/// only saw part of the body.
async fn read_prefix<B>(body: &mut B, limit: usize) -> Result<BodyPrefix, B::Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let mut trailers = None;
    let complete = loop {
        if len > limit {
            break false;
        }
        match body.frame().await {
            None => break true,
            Some(frame) => match frame?.into_data() {
                Ok(data) => {
                    len += data.len();
                    chunks.push(data);
                }
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    break true;
                }
            },
        }
    };
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut joined = bytes::BytesMut::with_capacity(len);
            chunks.iter().for_each(|c| joined.extend_from_slice(c));
            joined.freeze()
        }
    };
    Ok(BodyPrefix {
        data,
        complete,
        trailers,
    })
}

/// gRPC bodies are streams of length-prefixed protobuf messages: buffering one would stall
/// a bidirectional stream, and the bytes are not text. Their heads are still inspected.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Publishes a request's findings on the event stream and counts them.
#[allow(clippy::too_many_arguments)]
fn report(
    shared: &Shared,
    route: &RouteRuntime,
    connection: &Connection,
    method: &Method,
    path: &str,
    request_id: &str,
    decision: &Decision,
    fingerprint: Option<u64>,
) {
    for finding in &decision.findings {
        shared
            .metrics
            .findings
            .with_label_values(&[&finding.rule_id, &finding.class])
            .inc();
    }
    let event = SecurityEvent {
        at_ms: now_ms(),
        request_id: Some(request_id.to_owned()),
        client_ip: Some(connection.client.peer.ip().to_canonical()),
        identity: decision.identity.as_ref().map(|i| i.subject.clone()),
        fingerprint: fingerprint.map(apiguard_heal::fingerprint_text),
        route: Some(route.id.clone()),
        method: Some(method.to_string()),
        path: Some(path.to_owned()),
        kind: EventKind::RequestInspected {
            action: decision.action,
            score: decision.score,
            threshold: route.pipeline.threshold,
            findings: decision.findings.clone(),
        },
    };
    tracing::warn!(target: "apiguard::security", event = %serde_json::to_string(&event).unwrap_or_default(), "security event");
    let _ = shared.events.send(Arc::new(event));
}

/// What a response made here (not by the upstream) needs for its metrics and access log.
struct LocalAnswer<'a> {
    shared: &'a Shared,
    snapshot: &'a Snapshot,
    route: &'a RouteRuntime,
    connection: &'a Connection,
    method: Method,
    /// The request target as the client sent it.
    uri: http::Uri,
    request_id: &'a str,
    started: Instant,
}

impl LocalAnswer<'_> {
    /// Answers with a problem+json error made here.
    fn problem(
        &self,
        status: StatusCode,
        detail: &str,
        decision: Action,
    ) -> Response<ResponseBody> {
        self.finish(problem(status, detail, self.request_id), decision)
    }

    fn finish(&self, response: Response<ResponseBody>, decision: Action) -> Response<ResponseBody> {
        let status = response.status().as_u16();
        self.route.metrics.observe(
            &self.shared.metrics,
            &self.method,
            status,
            decision.as_str(),
            self.started.elapsed().as_secs_f64(),
        );
        if self.snapshot.access_log {
            let bytes = http_body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0);
            AccessLine {
                request_id: self.request_id.to_owned(),
                route: self.route.id.clone(),
                upstream: "-".to_owned(),
                method: self.method.clone(),
                path: self.uri.path().to_owned(),
                status,
                client: self.connection.client.peer.ip(),
                listener: self.connection.listener.clone(),
                decision,
            }
            .write(self.started, bytes);
        }
        response
    }
}

fn log_local(
    snapshot: &Snapshot,
    connection: &Connection,
    request: &Request<Incoming>,
    request_id: &str,
    response: &Response<ResponseBody>,
    started: Instant,
    route: &str,
) {
    if snapshot.access_log {
        let bytes = http_body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        AccessLine {
            request_id: request_id.to_owned(),
            route: route.to_owned(),
            upstream: "-".to_owned(),
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            status: response.status().as_u16(),
            client: connection.client.peer.ip(),
            listener: connection.listener.clone(),
            decision: Action::Allow,
        }
        .write(started, bytes);
    }
}

/// One access log line.
struct AccessLine {
    request_id: String,
    route: String,
    upstream: String,
    method: Method,
    path: String,
    status: u16,
    client: IpAddr,
    listener: Arc<str>,
    decision: Action,
}

impl AccessLine {
    fn write(&self, started: Instant, bytes: u64) {
        tracing::info!(
            target: "apiguard::access",
            request_id = %self.request_id,
            listener = %self.listener,
            client = %self.client.to_canonical(),
            method = %self.method,
            path = %self.path,
            route = %self.route,
            upstream = %self.upstream,
            status = self.status,
            decision = %self.decision,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            bytes_sent = bytes,
            "access"
        );
    }
}
