//! Authentication end to end: a gateway with JWT (keys from a real JWKS server), API key and
//! mTLS providers, real clients, and every failure a client can meet.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_testkit::jwt::{JwksServer, TestSigner, jwks, now_secs};
use apiguard_testkit::{ALPN_HTTP11, ClientIdentity, TestPki, TestUpstream};
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::json;

const ISS: &str = "https://idp.test/";
const AUD: &str = "orders-api";
/// `printf %s billing-key-0123456789 | sha256sum`
const BILLING_KEY: &str = "billing-key-0123456789";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(upstream: SocketAddr, jwks_url: &str, extra_route: &str, extra_top: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
auth:
  providers:
    idp:
      jwt:
        issuers: ["{ISS}"]
        audiences: ["{AUD}"]
        clock_skew: 5s
        jwks:
          url: {jwks_url}
          min_refresh_interval: 100ms
    partners:
      api_keys:
        keys:
          - name: billing
            sha256: {hash}
            attributes: {{team: billing}}
{extra_top}
routes:
  - id: api
    match: {{path: {{prefix: /echo}}}}
    upstream: backend
    auth:
      providers: [idp, partners]
{extra_route}
  - id: open
    upstream: backend
access_log:
  enabled: false
reload:
  watch: false
"#,
        hash = sha256_hex(BILLING_KEY),
    )
}

async fn get_with(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(client, request.body(Full::default()).unwrap()).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Polls until a request with this token passes (the JWKS is fetched in the background).
async fn until_ok(client: &TestClient, url: &str, token: &str) -> Reply {
    let started = Instant::now();
    loop {
        let reply = get_with(client, url, &[("authorization", &bearer(token))]).await;
        if reply.status == StatusCode::OK {
            return reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still {} after 20 s: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn challenge(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn jwt_and_api_keys_authenticate_and_every_failure_is_a_401_with_a_challenge() {
    let upstream = TestUpstream::start().await.unwrap();
    let signer = TestSigner::es256("key-1");
    let idp = JwksServer::start(jwks(&[&signer])).await;
    let gw = start(&config(upstream.addr(), &idp.url(), "", "")).await;
    let client = h1_client();
    let url = gw.url("/echo/orders");

    let token = signer.token("alice", ISS, AUD, 300);
    let reply = until_ok(&client, &url, &token).await;
    assert_eq!(
        reply.json()["headers"]["authorization"][0],
        bearer(&token),
        "the token still reaches the upstream"
    );

    // No credentials: 401, problem+json, a challenge per provider.
    let reply = get(&client, &url).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(
        challenge(&reply),
        [
            "Bearer realm=\"apiguard\"",
            "ApiKey realm=\"apiguard\", header=\"x-api-key\""
        ]
    );
    // The route without auth is open.
    assert_eq!(
        get(&client, &gw.url("/healthz")).await.status,
        StatusCode::OK
    );

    let now = now_secs();
    let cases = [
        (
            "expired",
            signer.sign(&json!({"sub": "alice", "iss": ISS, "aud": AUD, "exp": now - 60})),
            "expired",
        ),
        (
            "not yet valid",
            signer.sign(&json!({"sub": "alice", "iss": ISS, "aud": AUD, "nbf": now + 120, "exp": now + 300})),
            "not valid yet",
        ),
        (
            "wrong audience",
            signer.token("alice", ISS, "billing-api", 300),
            "audience",
        ),
        (
            "wrong issuer",
            signer.token("alice", "https://evil.test/", AUD, 300),
            "issuer",
        ),
        (
            "bad signature",
            TestSigner::es256("key-1").token("alice", ISS, AUD, 300),
            "signature",
        ),
        (
            "unknown key",
            TestSigner::es256("key-9").token("alice", ISS, AUD, 300),
            "unknown key",
        ),
        ("malformed", "not.a.jwt".to_owned(), "malformed"),
    ];
    for (case, token, description) in cases {
        let reply = get_with(&client, &url, &[("authorization", &bearer(&token))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
        let challenge = challenge(&reply);
        assert_eq!(challenge.len(), 1, "{case}: {challenge:?}");
        assert!(
            challenge[0].starts_with("Bearer realm=\"apiguard\", error="),
            "{case}: {challenge:?}"
        );
        assert!(challenge[0].contains(description), "{case}: {challenge:?}");
        assert_eq!(reply.json()["status"], 401, "{case}");
    }

    // API keys.
    let reply = get_with(&client, &url, &[("x-api-key", BILLING_KEY)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = get_with(&client, &url, &[("x-api-key", "billing-key-0123456780")]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&reply)[0]
            .starts_with("ApiKey realm=\"apiguard\", header=\"x-api-key\", error=\"invalid_key\"")
    );

    for (reason, count) in [
        ("missing", 1.0),
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("wrong_audience", 1.0),
        ("wrong_issuer", 1.0),
        ("bad_signature", 1.0),
        ("unknown_key", 1.0),
        ("malformed", 1.0),
        ("unknown_api_key", 1.0),
    ] {
        let line = format!("apiguard_auth_failures_total{{reason=\"{reason}\",route=\"api\"}}");
        assert_eq!(metric(&gw, &line).await, Some(count), "{line}");
    }
}

#[tokio::test]
async fn a_rotated_jwks_key_is_picked_up_without_a_restart() {
    let upstream = TestUpstream::start().await.unwrap();
    let old = TestSigner::es256("2024");
    let idp = JwksServer::start(jwks(&[&old])).await;
    let gw = start(&config(upstream.addr(), &idp.url(), "", "")).await;
    let client = h1_client();
    let url = gw.url("/echo/orders");
    let old_token = old.token("alice", ISS, AUD, 300);
    until_ok(&client, &url, &old_token).await;

    // The identity provider publishes a new key and drops the old one.
    let new = TestSigner::eddsa("2025");
    idp.set(Some(jwks(&[&new])));
    let new_token = new.token("bob", ISS, AUD, 300);
    let reply = until_ok(&client, &url, &new_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = get_with(&client, &url, &[("authorization", &bearer(&old_token))]).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "the dropped key no longer verifies"
    );
    assert!(challenge(&reply)[0].contains("unknown key"));
    assert!(
        metric(
            &gw,
            "apiguard_jwks_refreshes_total{provider=\"idp\",result=\"ok\"}"
        )
        .await
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        metric(&gw, "apiguard_jwks_keys{provider=\"idp\"}").await,
        Some(1.0)
    );
    // A reload keeps the key set: a new source would answer 503 until its first fetch.
    gw.gateway.reload("test").unwrap();
    let reply = get_with(&client, &url, &[("authorization", &bearer(&new_token))]).await;
    assert_eq!(reply.status, StatusCode::OK, "right after the reload");
}

#[tokio::test]
async fn a_detect_only_route_still_requires_authentication() {
    let upstream = TestUpstream::start().await.unwrap();
    let signer = TestSigner::es256("k");
    let idp = JwksServer::start(jwks(&[&signer])).await;
    let gw = start(&config(
        upstream.addr(),
        &idp.url(),
        "    detect: {mode: detect_only}",
        "",
    ))
    .await;
    let client = h1_client();
    let reply = get(&client, &gw.url("/echo/orders")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// A client whose connections come from `local` (127.0.0.x: loopback accepts them all).
fn client_from(local: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(local.parse::<IpAddr>().unwrap()));
    Client::builder(TokioExecutor::new()).build(connector)
}

#[tokio::test]
async fn continuous_verification_challenges_a_key_from_another_country_and_revokes_a_risky_one() {
    let upstream = TestUpstream::start().await.unwrap();
    let signer = TestSigner::es256("k");
    let idp = JwksServer::start(jwks(&[&signer])).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("countries.csv");
    std::fs::write(
        &db,
        "network,country\n127.0.0.1/32,FR\n127.0.0.2/32,DE\n127.0.0.3/32,FR\n",
    )
    .unwrap();
    let top = format!(
        r#"  continuous:
    ip_database: {}
    network_prefix_v4: 32
    on_new_network: allow
    on_new_country: challenge
    risk_threshold: 5
    on_risk: revoke
    revoke_for: 1h"#,
        db.display()
    );
    let gw = start(&config(upstream.addr(), &idp.url(), "", &top)).await;
    let url = gw.url("/echo/orders");
    let key = [("x-api-key", BILLING_KEY)];
    let france = client_from("127.0.0.1");
    let germany = client_from("127.0.0.2");
    let france_again = client_from("127.0.0.3");

    assert_eq!(get_with(&france, &url, &key).await.status, StatusCode::OK);
    let reply = get_with(&germany, &url, &key).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "another country");
    assert!(
        challenge(&reply)[0].contains("new country"),
        "{:?}",
        challenge(&reply)
    );
    assert_eq!(
        get_with(&france, &url, &key).await.status,
        StatusCode::OK,
        "a challenge leaves the key usable where it was"
    );
    assert_eq!(
        get_with(&france_again, &url, &key).await.status,
        StatusCode::OK,
        "another network in the same country is allowed (and followed)"
    );

    // A request that detection blocks raises the key's risk; the next use revokes it.
    let attack = format!("{url}?id=1%27%20OR%20%271%27%3D%271");
    assert_eq!(
        get_with(&france, &attack, &key).await.status,
        StatusCode::FORBIDDEN
    );
    let reply = get_with(&france, &url, &key).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "risk");
    let reply = get_with(&france, &url, &key).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "revoked");
    assert!(
        challenge(&reply)[0].contains("revoked"),
        "{:?}",
        challenge(&reply)
    );
    // A JWT of another identity is unaffected.
    let token = signer.token("alice", ISS, AUD, 300);
    until_ok(&france, &url, &token).await;
    // Networks: to 127.0.0.3, then back to 127.0.0.1 with the attack.
    for (change, action, count) in [
        ("new_country", "challenge", 1.0),
        ("new_network", "allow", 2.0),
        ("risk", "revoke", 1.0),
    ] {
        let line = format!(
            "apiguard_auth_context_changes_total{{action=\"{action}\",change=\"{change}\"}}"
        );
        assert_eq!(metric(&gw, &line).await, Some(count), "{line}");
    }
}

/// Sends one GET over TLS with `identity`'s certificate; the status, or the handshake error.
async fn tls_status(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<StatusCode, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get("https://localhost/echo/x")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn mtls_identities_are_accepted_by_san_and_refused_otherwise() {
    let upstream = TestUpstream::start().await.unwrap();
    let pki = TestPki::new();
    let pem = pki.write_pem_files().unwrap();
    let yaml = |sans: &str| {
        format!(
            r#"
listeners:
  - address: 127.0.0.1:0
    tls:
      cert: {cert}
      key: {key}
      client_ca: {ca}
      client_auth: optional
upstreams:
  backend: {{targets: ["{upstream}"]}}
auth:
  providers:
    internal:
      mtls:
        sans: [{sans}]
routes:
  - id: api
    upstream: backend
    auth: {{providers: [internal]}}
access_log: {{enabled: false}}
reload: {{watch: false}}
"#,
            cert = pem.server_cert.display(),
            key = pem.server_key.display(),
            ca = pem.ca_cert.display(),
            upstream = upstream.addr(),
        )
    };
    let gw = start(&yaml(&format!(
        "\"DNS:{}\"",
        apiguard_testkit::CLIENT_DNS_NAME
    )))
    .await;
    let trusted = pki.client_config(ClientIdentity::Trusted, &[ALPN_HTTP11]);
    let anonymous = pki.client_config(ClientIdentity::Anonymous, &[ALPN_HTTP11]);
    assert_eq!(
        tls_status(gw.addr, trusted.clone()).await,
        Ok(StatusCode::OK)
    );
    assert_eq!(
        tls_status(gw.addr, anonymous).await,
        Ok(StatusCode::UNAUTHORIZED),
        "no certificate: no identity"
    );
    let other = start(&yaml("\"DNS:billing.apiguard.test\"")).await;
    assert_eq!(
        tls_status(other.addr, trusted).await,
        Ok(StatusCode::UNAUTHORIZED),
        "a valid certificate with a SAN the provider does not accept"
    );
}

#[tokio::test]
async fn bad_auth_settings_are_rejected_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"listeners: [{address: "127.0.0.1:0"}]
upstreams: {backend: {targets: ["127.0.0.1:9"]}}
auth:
  providers:
    idp:
      jwt:
        algorithms: [HS256]
        jwks: {url: "https://idp.test/jwks.json"}
    keys:
      api_keys:
        keys: [{name: a, sha256: "abc"}]
routes:
  - id: api
    upstream: backend
    auth: {providers: [idp, nobody]}
    rate_limit: [{key: api_key, rate: 0, per: 1s}]
"#,
    )
    .unwrap();
    let error = apiguard_gateway::validate_file(&path)
        .unwrap_err()
        .to_string();
    for expected in [
        "auth.providers.idp.jwt: HS algorithms need `secret`",
        "auth.providers.keys.api_keys: key `a`: `abc` is not a SHA-256",
        "bad.yaml:15:29: route `api` names auth provider `nobody`, which is not defined",
        "rate_limit[0] (`api_key`): rate must be at least 1",
        "counts by API key, but the route accepts no `api_keys` provider",
    ] {
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
}
