//! How the test upstream answers each request. Every answer carries `x-upstream: <name>`
//! so that load-balancing tests can tell which target served them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, TRAILER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::{self, CHECKSUM_TRAILER, UpstreamBody};
use super::record::RecordedRequest;
use super::{Shared, UpstreamMode, websocket};

/// Longest `/sleep/{ms}` honoured, so a typo cannot hang a test run.
const MAX_SLEEP: Duration = Duration::from_secs(120);

pub(crate) async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Result<Response<UpstreamBody>, std::convert::Infallible> {
    shared.recorder.record(RecordedRequest {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers: request.headers().clone(),
        version: request.version(),
        peer,
    });

    let mut response = if shared.mode() == UpstreamMode::Failing {
        json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": "this upstream is failing on purpose" }),
        )
    } else {
        route(request, &shared, peer).await
    };
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        response.headers_mut().insert("x-upstream", name);
    }
    Ok(response)
}

async fn route(
    request: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<UpstreamBody> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    match segments.as_slice() {
        ["echo"] | ["echo", _] => echo(request, shared, peer).await,
        ["healthz"] => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        ["status", code] => status(code),
        ["sleep", ms] => sleep(ms).await,
        ["bytes", n] => bytes(n, request.uri().query()),
        ["upload"] => upload(request).await,
        ["trailers"] => trailers(),
        ["ws"] => websocket::upgrade(request),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no test route for {path}") }),
        ),
    }
}

/// Describes the request as received, consuming its body without keeping it.
async fn echo(
    request: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<UpstreamBody> {
    let (head, body) = request.into_parts();
    let (body_len, trailers) = match drain(body).await {
        Ok(drained) => drained,
        Err(err) => return bad_body(&err),
    };
    let mut description = json!({
        "method": head.method.as_str(),
        "path": head.uri.path(),
        "query": head.uri.query(),
        "headers": headers_json(&head.headers),
        "body_len": body_len,
        "version": version_name(head.version),
        "upstream": shared.name,
        "peer": peer.to_string(),
    });
    if let Some(trailers) = trailers {
        description["trailers"] = headers_json(&trailers);
    }
    json_response(StatusCode::OK, &description)
}

fn status(code: &str) -> Response<UpstreamBody> {
    // 1xx cannot be a final status, so only 200..=999 are accepted.
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .filter(|code| *code >= 200)
        .and_then(|code| StatusCode::from_u16(code).ok())
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("bad status code {code:?}") }),
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut response = Response::new(body::empty());
        *response.status_mut() = status;
        return response;
    }
    json_response(status, &json!({ "status": status.as_u16() }))
}

async fn sleep(ms: &str) -> Response<UpstreamBody> {
    let Ok(ms) = ms.parse::<u64>() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("bad duration {ms:?}") }),
        );
    };
    tokio::time::sleep(Duration::from_millis(ms).min(MAX_SLEEP)).await;
    json_response(StatusCode::OK, &json!({ "slept_ms": ms }))
}

/// `/bytes/{n}`: `n` bytes, with content-length unless the query has `chunked`.
fn bytes(n: &str, query: Option<&str>) -> Response<UpstreamBody> {
    let Ok(len) = n.parse::<u64>() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("bad length {n:?}") }),
        );
    };
    let chunked = query.is_some_and(|q| q.split('&').any(|pair| pair.starts_with("chunked")));
    let mut response = Response::new(body::repeated(len, !chunked));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

async fn upload(request: Request<Incoming>) -> Response<UpstreamBody> {
    match drain(request.into_body()).await {
        Ok((received, _)) => json_response(StatusCode::OK, &json!({ "received": received })),
        Err(err) => bad_body(&err),
    }
}

fn trailers() -> Response<UpstreamBody> {
    let mut response = Response::new(body::with_trailers());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    // HTTP/1.1 only sends trailers that were announced here, and only when the request
    // said `te: trailers`; HTTP/2 sends them regardless.
    headers.insert(TRAILER, HeaderValue::from_static(CHECKSUM_TRAILER));
    response
}

/// Reads a body to its end frame by frame, so memory stays bounded whatever its size.
async fn drain(mut body: Incoming) -> Result<(u64, Option<HeaderMap>), hyper::Error> {
    let mut len = 0_u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
        } else if let Ok(received) = frame.into_trailers() {
            trailers = Some(received);
        }
    }
    Ok((len, trailers))
}

fn bad_body(err: &hyper::Error) -> Response<UpstreamBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": format!("could not read the request body: {err}") }),
    )
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<UpstreamBody> {
    let mut response = Response::new(body::json(value));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{name: [values]}`, lower-case names in order; values that are not UTF-8 are shown lossily.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut map: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.as_str())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    json!(map)
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}
