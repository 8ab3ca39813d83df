//! Shared by the gateway's integration tests: start a gateway from YAML on free ports, and
//! real HTTP/1.1 and HTTP/2 clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiguard_gateway::Gateway;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub struct Harness {
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.gateway.admin_addr().expect("admin configured"),
            path
        )
    }

    /// Rewrites the configuration file (for reload tests).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, yaml).expect("write config");
    }
}

/// Starts a gateway whose listener and admin bind port 0 (`{listen}` and `{admin}` in the
/// YAML are replaced by `127.0.0.1:0`).
pub async fn start(yaml: &str) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("apiguard.yaml");
    std::fs::write(&config_path, yaml).expect("write config");
    let gateway = Gateway::start(&config_path)
        .await
        .unwrap_or_else(|e| panic!("gateway start: {e}"));
    let addr = gateway.listen_addrs()[0];
    Harness {
        gateway,
        addr,
        config_path,
        _dir: dir,
    }
}

/// Shuts `harness`'s gateway down and starts another on the same configuration file (a
/// restart); state files named in it are kept.
pub async fn restart(harness: Harness) -> Harness {
    let Harness {
        gateway,
        config_path,
        _dir,
        ..
    } = harness;
    gateway.shutdown().await;
    drop(gateway);
    let gateway = Gateway::start(&config_path)
        .await
        .unwrap_or_else(|e| panic!("gateway restart: {e}"));
    Harness {
        addr: gateway.listen_addrs()[0],
        gateway,
        config_path,
        _dir,
    }
}

/// A minimal config: one catch-all route to `upstream`, with `extra` appended to the upstream.
pub fn simple_config(upstream: SocketAddr, upstream_extra: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
{upstream_extra}
routes:
  - id: all
    upstream: backend
access_log:
  enabled: false
reload:
  watch: false
"#
    )
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn h1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub async fn send(client: &TestClient, request: Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .expect("response within 20 s")
        .expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(client: &TestClient, url: &str) -> Reply {
    send(client, Request::get(url).body(Full::default()).unwrap()).await
}

/// The value of a metric line (exact label text) in the admin's Prometheus output.
pub async fn metric(harness: &Harness, line_prefix: &str) -> Option<f64> {
    let text = get(&h1_client(), &harness.admin_url("/metrics")).await.body;
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An HTTP/1.1 client for streamed request bodies.
pub fn stream_client<B>()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}
