//! TLS listeners: ALPN h2 and http/1.1, and client certificate verification (mTLS).

mod common;

use std::sync::Arc;

use apiguard_testkit::{ALPN_H2, ALPN_HTTP11, ClientIdentity, TestPki, TestUpstream};
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;

fn tls_config(
    upstream: std::net::SocketAddr,
    pem: &apiguard_testkit::PemFiles,
    mtls: bool,
) -> String {
    let client_ca = if mtls {
        format!("\n      client_ca: {}", pem.ca_cert.display())
    } else {
        String::new()
    };
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
    tls:
      cert: {}
      key: {}{client_ca}
upstreams:
  backend: {{targets: ["{upstream}"]}}
routes: [{{id: all, upstream: backend}}]
access_log: {{enabled: false}}
reload: {{watch: false}}
"#,
        pem.server_cert.display(),
        pem.server_key.display()
    )
}

/// Connects over TLS and sends one GET; returns the negotiated version and the echo.
async fn tls_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(Version, serde_json::Value), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let io = TokioIo::new(tls);
    let request = Request::get("https://localhost/echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
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
        let mut request = request;
        request
            .headers_mut()
            .insert("host", "localhost".parse().unwrap());
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    };
    let version = response.version();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((version, serde_json::from_slice(&body).unwrap()))
}

#[tokio::test]
async fn tls_listeners_negotiate_h2_or_http1_by_alpn() {
    let upstream = TestUpstream::start().await.unwrap();
    let pki = TestPki::new();
    let pem = pki.write_pem_files().unwrap();
    let gw = start(&tls_config(upstream.addr(), &pem, false)).await;
    let (version, echo) = tls_get(
        gw.addr,
        pki.client_config(ClientIdentity::Anonymous, &[ALPN_H2, ALPN_HTTP11]),
    )
    .await
    .unwrap();
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
    let (version, _) = tls_get(
        gw.addr,
        pki.client_config(ClientIdentity::Anonymous, &[ALPN_HTTP11]),
    )
    .await
    .unwrap();
    assert_eq!(version, Version::HTTP_11);
}

#[tokio::test]
async fn mtls_requires_a_certificate_signed_by_the_configured_ca() {
    let upstream = TestUpstream::start().await.unwrap();
    let pki = TestPki::new();
    let pem = pki.write_pem_files().unwrap();
    let gw = start(&tls_config(upstream.addr(), &pem, true)).await;
    let trusted = tls_get(
        gw.addr,
        pki.client_config(ClientIdentity::Trusted, &[ALPN_H2]),
    )
    .await;
    assert!(trusted.is_ok(), "{trusted:?}");
    let anonymous = tls_get(
        gw.addr,
        pki.client_config(ClientIdentity::Anonymous, &[ALPN_H2]),
    )
    .await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate is refused"
    );
    let untrusted = tls_get(
        gw.addr,
        pki.client_config(ClientIdentity::Untrusted, &[ALPN_H2]),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown CA is refused"
    );
}
