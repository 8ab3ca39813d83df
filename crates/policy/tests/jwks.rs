//! A JWKS source against a real HTTP server: first load, rotation triggered by an unknown key
//! id, the rate limit on such refetches, and a failing server keeping the last good keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_policy::authn::{
    AuthnMetrics, DEFAULT_ALGORITHMS, Failure, JwksSettings, JwksSource, JwtProvider, JwtSettings,
    KeySource,
};
use apiguard_testkit::jwt::{JwksServer, TestSigner, jwks};

const DEADLINE: Duration = Duration::from_secs(20);

fn settings(url: String, min_refresh: Duration) -> JwksSettings {
    JwksSettings {
        url,
        refresh: Duration::from_secs(300),
        min_refresh,
        timeout: Duration::from_secs(5),
        ca_pem: None,
    }
}

fn provider(source: Arc<JwksSource>) -> JwtProvider {
    JwtProvider::new(JwtSettings {
        name: "idp".into(),
        issuers: vec!["https://idp.test/".into()],
        audiences: vec!["orders".into()],
        algorithms: DEFAULT_ALGORITHMS.to_vec(),
        leeway: Duration::from_secs(5),
        header: http::header::AUTHORIZATION,
        subject_claim: "sub".into(),
        keys: KeySource::Jwks(source),
    })
}

/// Polls `check` every 20 ms until it holds or the deadline passes.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_load_rotate_on_an_unknown_kid_and_old_keys_stop_working() {
    let old = TestSigner::es256("2024-old");
    let new = TestSigner::rs256("2025-new");
    let server = JwksServer::start(jwks(&[&old])).await;
    let source = JwksSource::start(
        "idp",
        settings(server.url(), Duration::from_millis(200)),
        AuthnMetrics::new(),
    )
    .unwrap();
    let jwt = provider(source.clone());
    let old_token = old.token("alice", "https://idp.test/", "orders", 300);
    eventually("the first key set loads", || jwt.verify(&old_token).is_ok()).await;

    // The identity provider rotates: new key only.
    server.set(Some(jwks(&[&new])));
    let new_token = new.token("bob", "https://idp.test/", "orders", 300);
    assert_eq!(
        jwt.verify(&new_token).unwrap_err(),
        Failure::UnknownKey,
        "the new key is unknown until the refetch it triggers"
    );
    eventually("the new key verifies without a restart", || {
        jwt.verify(&new_token).is_ok_and(|i| i.subject == "bob")
    })
    .await;
    assert_eq!(jwt.verify(&old_token).unwrap_err(), Failure::UnknownKey);
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_min_refresh() {
    let signer = TestSigner::es256("k1");
    let server = JwksServer::start(jwks(&[&signer])).await;
    let source = JwksSource::start(
        "idp",
        settings(server.url(), Duration::from_secs(3600)),
        AuthnMetrics::new(),
    )
    .unwrap();
    let jwt = provider(source.clone());
    eventually("loaded", || source.keys().loaded).await;
    let stranger = TestSigner::es256("unknown");
    let token = stranger.token("eve", "https://idp.test/", "orders", 300);
    for _ in 0..200 {
        assert_eq!(jwt.verify(&token).unwrap_err(), Failure::UnknownKey);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.hits(),
        1,
        "a flood of unknown key ids must not turn into a flood of fetches"
    );
}

#[tokio::test]
async fn a_failing_server_keeps_the_last_good_keys() {
    let signer = TestSigner::eddsa("k1");
    let server = JwksServer::start(jwks(&[&signer])).await;
    let source = JwksSource::start(
        "idp",
        settings(server.url(), Duration::from_millis(50)),
        AuthnMetrics::new(),
    )
    .unwrap();
    let jwt = provider(source.clone());
    let token = signer.token("alice", "https://idp.test/", "orders", 300);
    eventually("loaded", || jwt.verify(&token).is_ok()).await;
    server.set(None);
    // An unknown kid asks for a refetch; it fails, the keys stay.
    let stranger = TestSigner::es256("other").token("eve", "https://idp.test/", "orders", 300);
    let _ = jwt.verify(&stranger);
    eventually("the refetch happened", || server.hits() >= 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(jwt.verify(&token).is_ok(), "the last good key set is kept");
}

#[tokio::test]
async fn until_a_key_set_is_loaded_tokens_get_keys_unavailable() {
    let signer = TestSigner::es256("k1");
    // Nothing listens here.
    let url = format!(
        "http://127.0.0.1:{}/jwks.json",
        apiguard_testkit::free_port()
    );
    let source = JwksSource::start(
        "idp",
        settings(url, Duration::from_millis(50)),
        AuthnMetrics::new(),
    )
    .unwrap();
    let jwt = provider(source);
    let token = signer.token("alice", "https://idp.test/", "orders", 300);
    assert_eq!(jwt.verify(&token).unwrap_err(), Failure::KeysUnavailable);
    assert_eq!(Failure::KeysUnavailable.status(), 503);
}

#[tokio::test]
async fn oversized_or_invalid_documents_are_refused() {
    let signer = TestSigner::es256("k1");
    let mut huge = jwks(&[&signer]);
    huge["padding"] = "x".repeat(2 * 1024 * 1024).into();
    let server = JwksServer::start(huge).await;
    let source = JwksSource::start(
        "idp",
        settings(server.url(), Duration::from_millis(50)),
        AuthnMetrics::new(),
    )
    .unwrap();
    eventually("fetched once", || server.hits() >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!source.keys().loaded, "a 2 MiB document is not loaded");
    server.set(Some(serde_json::json!({"not": "a jwks"})));
    source.request_refresh();
    eventually("fetched again", || server.hits() >= 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!source.keys().loaded);
}

#[tokio::test]
async fn https_jwks_urls_are_verified_against_the_ca_file() {
    use apiguard_testkit::{ALPN_HTTP11, ClientCertPolicy, TestPki};
    let pki = TestPki::new();
    let signer = TestSigner::es256("k1");
    let server = JwksServer::start_tls(
        jwks(&[&signer]),
        pki.server_config(ClientCertPolicy::NotRequested, &[ALPN_HTTP11]),
    )
    .await;
    let mut trusted = settings(server.url(), Duration::from_millis(50));
    trusted.ca_pem = Some(pki.ca_cert_pem().as_bytes().to_vec());
    let jwt = provider(JwksSource::start("idp", trusted, AuthnMetrics::new()).unwrap());
    let token = signer.token("alice", "https://idp.test/", "orders", 300);
    eventually("the key set loads over TLS", || jwt.verify(&token).is_ok()).await;

    // The same server, but another CA is trusted: the handshake fails, nothing loads.
    let metrics = AuthnMetrics::new();
    let mut untrusted = settings(server.url(), Duration::from_millis(50));
    untrusted.ca_pem = Some(TestPki::new().ca_cert_pem().as_bytes().to_vec());
    let source = JwksSource::start("other", untrusted, metrics.clone()).unwrap();
    let errors = metrics
        .jwks_refreshes
        .with_label_values(&["other", "error"]);
    eventually("the failed handshake is counted", || errors.get() >= 1).await;
    assert!(!source.keys().loaded);
    assert_eq!(
        server.hits(),
        1,
        "only the trusted fetch reached the server"
    );
}
