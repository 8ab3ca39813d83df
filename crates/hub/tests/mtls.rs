//! Participant credentials over a TLS listener with client certificate verification (mTLS):
//! real TLS clients (rustls) present certificates from a test CA; participants are
//! registered by the admin API with an API key, a certificate (fingerprint or subject), or
//! both.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_hub::Hub;
use apiguard_testkit::{ALPN_H2, ALPN_HTTP11, ClientIdentity, PemFiles, TestPki};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use sha2::Digest;

fn tls_yaml(pem: &PemFiles, extra: &str) -> String {
    format!(
        "tls:\n  cert: {}\n  key: {}\n  client_ca: {}\n{extra}",
        pem.server_cert.display(),
        pem.server_key.display(),
        pem.ca_cert.display()
    )
}

/// One request over TLS (HTTP/2 or HTTP/1.1, as ALPN decides): status and body, or the
/// connection's error.
async fn call(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .header("content-type", "application/json");
    if !h2 {
        request = request.header("host", format!("localhost:{}", addr.port()));
    }
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Reports an attack from `ip` with these credentials.
async fn ingest(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    key: Option<&str>,
    ip: &str,
) -> Result<(u16, String), String> {
    let report = json!({"attack": "sqli", "source_ip": ip});
    call(
        addr,
        config.clone(),
        "POST",
        "/v1/reports",
        key,
        Some(report),
    )
    .await
}

/// A tonic connector over rustls (h2), so gRPC calls present the config's certificate.
#[derive(Clone)]
struct GrpcTls(Arc<rustls::ClientConfig>, SocketAddr);

impl tonic::codegen::Service<tonic::codegen::http::Uri> for GrpcTls {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let GrpcTls(config, addr) = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// One unary gRPC report over TLS with `config`'s certificate and no API key.
async fn grpc_report(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), tonic::Code> {
    use apiguard_hub::grpc::proto::threat_ingest_client::ThreatIngestClient;
    use apiguard_hub::grpc::proto::{Address, ThreatReport};
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(GrpcTls(config, addr))
        .await
        .unwrap();
    let message = ThreatReport {
        attack: "sqli".into(),
        source: Some(Address {
            ip: vec![203, 0, 113, 20],
            prefix_len: None,
        }),
        ..ThreatReport::default()
    };
    ThreatIngestClient::new(channel)
        .report(message)
        .await
        .map(|_| ())
        .map_err(|status| status.code())
}

/// Registers over TLS through the admin API (anonymous TLS, admin token); answers the JSON.
async fn register(addr: SocketAddr, pki: &TestPki, body: Value) -> Value {
    let (status, text) = call(
        addr,
        pki.client_config(ClientIdentity::Anonymous, &[ALPN_HTTP11]),
        "POST",
        "/admin/participants",
        Some(common::ADMIN_TOKEN),
        Some(body),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn participants_authenticate_by_key_certificate_or_both() {
    let pki = TestPki::new();
    let pem = pki.write_pem_files().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&tls_yaml(&pem, &common::admin_line()));
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let addr = hub.local_addr();

    let both_cert = pki.issue_client("gw-both");
    let pinned_cert = pki.issue_client("gw-pinned");
    let stranger_cert = pki.issue_client("gw-stranger");
    let http11 = &[ALPN_HTTP11][..];
    let anonymous = pki.client_config(ClientIdentity::Anonymous, &[ALPN_H2, ALPN_HTTP11]);
    let by_cert = pki.client_config(ClientIdentity::Trusted, &[ALPN_H2, ALPN_HTTP11]);
    let by_both_cert = pki.client_config_with(&both_cert, http11);
    let by_pinned_cert = pki.client_config_with(&pinned_cert, http11);
    let by_stranger_cert = pki.client_config_with(&stranger_cert, http11);

    // Certificate only, pinned by the PEM the admin sends.
    let cert_only = register(
        addr,
        &pki,
        json!({"name": "gw-cert", "organisation": "Cert Org", "auth": "certificate",
               "cert_pem": [pki.client().cert_pem()]}),
    )
    .await;
    assert!(cert_only.get("api_key").is_none(), "{cert_only}");
    // Key and certificate (by subject).
    let both = register(
        addr,
        &pki,
        json!({"name": "gw-both", "organisation": "Both Org", "auth": "both",
               "cert_subject": ["CN = gw-both, O = apiguard tests"]}),
    )
    .await;
    let both_key = both["api_key"].as_str().unwrap().to_owned();
    // Certificate only, by a fingerprint written as openssl prints it.
    let fingerprint = sha2::Sha256::digest(pinned_cert.cert_der().as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    register(
        addr,
        &pki,
        json!({"name": "gw-pinned", "organisation": "Pinned Org", "auth": "certificate",
               "cert_sha256": [fingerprint]}),
    )
    .await;
    // Key only.
    let key_only = register(
        addr,
        &pki,
        json!({"name": "gw-key", "organisation": "Key Org"}),
    )
    .await;
    let key = key_only["api_key"].as_str().unwrap().to_owned();

    // A certificate alone authenticates its participant, over HTTP/2 and HTTP/1.1.
    let (status, text) = ingest(addr, &by_cert, None, "203.0.113.1").await.unwrap();
    assert_eq!(status, 202, "{text}");
    let (status, _) = ingest(addr, &by_pinned_cert, None, "203.0.113.2")
        .await
        .unwrap();
    assert_eq!(status, 202);
    let (status, text) = ingest(addr, &anonymous, None, "203.0.113.3").await.unwrap();
    assert_eq!(status, 401, "{text}");

    // Key only: the key, with or without some other certificate of no participant.
    assert_eq!(
        ingest(addr, &anonymous, Some(&key), "203.0.113.4")
            .await
            .unwrap()
            .0,
        202
    );
    let (status, _) = ingest(addr, &by_stranger_cert, Some(&key), "203.0.113.5")
        .await
        .unwrap();
    assert_eq!(status, 202);
    let (status, text) = ingest(addr, &by_stranger_cert, None, "203.0.113.6")
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(text.contains("not registered"), "{text}");
    // A key and a certificate of two different participants: refused.
    let (status, text) = ingest(addr, &by_cert, Some(&key), "203.0.113.7")
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(text.contains("different participants"), "{text}");

    // Both: key and certificate, each alone refused.
    assert_eq!(
        ingest(addr, &by_both_cert, Some(&both_key), "203.0.113.8")
            .await
            .unwrap()
            .0,
        202
    );
    let (status, text) = ingest(addr, &anonymous, Some(&both_key), "203.0.113.9")
        .await
        .unwrap();
    assert_eq!(status, 401, "{text}");
    assert_eq!(
        ingest(addr, &by_both_cert, None, "203.0.113.10")
            .await
            .unwrap()
            .0,
        401
    );
    // A certificate from another CA does not even get through the handshake.
    let rogue = pki.client_config(ClientIdentity::Untrusted, &[ALPN_HTTP11]);
    assert!(
        ingest(addr, &rogue, Some(&key), "203.0.113.11")
            .await
            .is_err()
    );

    // The feed is authenticated the same way: the key-only participant pulls what the
    // certificate-only participants reported, as canonical reports.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ips = loop {
        let (status, text) = call(
            addr,
            anonymous.clone(),
            "GET",
            "/v1/reports",
            Some(&key),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        let ips: Vec<String> = page["reports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["indicators"]["ip"].as_str().unwrap().to_owned())
            .collect();
        if ips.len() >= 5 {
            break ips;
        }
        assert!(Instant::now() < deadline, "only {ips:?} arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "203.0.113.1",
            "203.0.113.2",
            "203.0.113.4",
            "203.0.113.5",
            "203.0.113.8"
        ],
        "exactly the accepted reports"
    );
    let (status, text) = call(addr, by_cert.clone(), "GET", "/taxii2/", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"https://localhost:"), "{text}");

    // gRPC over TLS: the certificate alone authenticates too.
    assert_eq!(
        grpc_report(addr, pki.client_config(ClientIdentity::Trusted, &[ALPN_H2])).await,
        Ok(())
    );
    assert_eq!(
        grpc_report(
            addr,
            pki.client_config(ClientIdentity::Anonymous, &[ALPN_H2])
        )
        .await,
        Err(tonic::Code::Unauthenticated)
    );

    // The admin listing shows every participant's credentials, never a key.
    let (status, text) = call(
        addr,
        anonymous.clone(),
        "GET",
        "/admin/participants",
        Some(common::ADMIN_TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let listing: Value = serde_json::from_str(&text).unwrap();
    let modes: Vec<(&str, &str)> = listing["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["auth"].as_str().unwrap()))
        .collect();
    assert_eq!(
        modes,
        [
            ("gw-cert", "certificate"),
            ("gw-both", "both"),
            ("gw-pinned", "certificate"),
            ("gw-key", "api_key")
        ]
    );
    assert!(!text.contains(&key) && !text.contains(&both_key));
    assert!(text.contains("CN=gw-both, O=apiguard tests"));

    // A certificate registered once cannot be registered to another participant.
    let (status, text) = call(
        addr,
        anonymous.clone(),
        "POST",
        "/admin/participants",
        Some(common::ADMIN_TOKEN),
        Some(
            json!({"name": "gw-copy", "organisation": "Copy", "auth": "certificate",
                    "cert_pem": [pki.client().cert_pem()]}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(status, 409, "{text}");
    let (status, text) = call(
        addr,
        anonymous.clone(),
        "POST",
        "/admin/participants",
        Some(common::ADMIN_TOKEN),
        Some(json!({"name": "gw-nocert", "organisation": "X", "auth": "both"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{text}");
    hub.shutdown().await;
}

#[tokio::test]
async fn required_client_certificates_and_bad_tls_configs() {
    let pki = TestPki::new();
    let pem = pki.write_pem_files().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&tls_yaml(&pem, "  client_auth: required\n"));
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let addr = hub.local_addr();
    // Without a certificate the handshake (or the first read, in TLS 1.3) fails.
    let anonymous = pki.client_config(ClientIdentity::Anonymous, &[ALPN_HTTP11]);
    assert!(
        call(addr, anonymous, "GET", "/healthz", None, None)
            .await
            .is_err()
    );
    let trusted = pki.client_config(ClientIdentity::Trusted, &[ALPN_HTTP11]);
    assert_eq!(
        call(addr, trusted, "GET", "/healthz", None, None)
            .await
            .unwrap()
            .0,
        200
    );
    hub.shutdown().await;

    let refused = |yaml: String| {
        apiguard_hub::HubConfig::parse(&format!(
            "listen: 127.0.0.1:0\nsecret: test-secret-0123456789abcdef0123456789\n{yaml}"
        ))
        .and_then(|c| c.settings())
        .unwrap_err()
        .to_string()
    };
    let error = refused(format!(
        "tls:\n  cert: /nonexistent/cert.pem\n  key: {}\n",
        pem.server_key.display()
    ));
    assert!(
        error.contains("tls.cert") && error.contains("/nonexistent/cert.pem"),
        "{error}"
    );
    let error = refused(format!(
        "tls:\n  cert: {}\n  key: {}\n  client_auth: required\n",
        pem.server_cert.display(),
        pem.server_key.display()
    ));
    assert!(error.contains("tls.client_auth"), "{error}");
    let error = refused(format!(
        "tls:\n  cert: {}\n  key: {}\n",
        pem.server_cert.display(),
        pem.client_key.display()
    ));
    assert!(error.contains("does not fit"), "{error}");
    let error = refused("tls:\n  cert: a\n  key: b\n  clientca: c\n".into());
    assert!(error.contains("clientca"), "{error}");
}
