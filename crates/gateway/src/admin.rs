//! The admin endpoint: metrics, liveness, readiness, configuration versions and reload.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::ResponseBody;
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
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            gateway.metrics().render(),
        ),
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
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({
                "error": "unknown admin path",
                "paths": ["GET /metrics", "GET /healthz", "GET /readyz", "GET /config/versions", "POST /config/reload"],
            }),
        ),
    };
    Ok(response)
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
