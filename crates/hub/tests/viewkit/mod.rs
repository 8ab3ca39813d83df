//! A hub with two participants and a handful of published reports of every indicator kind,
//! shared by the pull-view tests (views.rs, standards.rs).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use apiguard_hub::Hub;
use serde_json::{Value, json};

#[path = "../common/mod.rs"]
mod common;

#[allow(unused_imports)]
pub use common::{POSTGRES, admin_line, postgres_store, register};

/// Alpha's identifiers: none may appear in any view.
pub const ALPHA_NAME: &str = "alpha-secretbank";
pub const ALPHA_ORG: &str = "Alpha Secretbank plc";
pub const ALPHA_HOST: &str = "api.alpha-secretbank.test";

pub struct Setup {
    pub hub: Hub,
    pub base: String,
    pub client: reqwest::Client,
    pub alpha_id: String,
    pub alpha_key: String,
    pub beta_key: String,
    pub dir: tempfile::TempDir,
}

/// An embedded hub on a SQLite file with the admin API, alpha and beta registered.
pub async fn start() -> Setup {
    start_on(None).await
}

/// Like [`start`], on `store` when given.
pub async fn start_on(store: Option<apiguard_hub::Store>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&admin_line());
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = match store {
        Some(store) => Hub::start_with_store(settings, store).await.unwrap(),
        None => Hub::start(settings).await.unwrap(),
    };
    let base = format!("http://{}", hub.local_addr());
    let client = reqwest::Client::new();
    let (alpha_id, alpha_key) = register(
        &client,
        &base,
        json!({"name": ALPHA_NAME, "organisation": ALPHA_ORG, "own_hosts": [ALPHA_HOST]}),
    )
    .await;
    let (_, beta_key) = register(
        &client,
        &base,
        json!({"name": "beta-shop", "organisation": "Beta Shop GmbH"}),
    )
    .await;
    Setup {
        hub,
        base,
        client,
        alpha_id,
        alpha_key,
        beta_key,
        dir,
    }
}

/// Reports covering every indicator kind, quoting in user agents, IPv6, prefixes, and a
/// report with a route only. Each names alpha somewhere the hub must scrub.
pub fn reports() -> Vec<Value> {
    vec![
        json!({
            "attack": "sqli", "severity": "high", "confidence": 90,
            "source_ip": "203.0.113.77:53211",
            "method": "POST", "path": "/users/1234/orders",
            "host": ALPHA_HOST,
            "user_agent": "it's-a-bot/1.0 \\ (alpha-secretbank)",
            "payload": "1' OR '1'='1",
            "count": 12,
            "description": "seen by Alpha Secretbank plc on api.alpha-secretbank.test"
        }),
        json!({"attack": "xss", "source_ip": "2001:db8:5:6::1", "path": "/search"}),
        json!({
            "attack": "path_traversal", "source_ip": "198.51.100.0/24",
            "tls_ja3": "e7d705a3286e19ea42f587b344ee6865"
        }),
        json!({"attack": "command_injection", "user_agent": "curl/8.5.0"}),
        json!({
            "attack": "scanner",
            "payload_sha256": "8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918",
            "tls_ja4": "t13d1516h2_8daaf6152771_b186095e22b6"
        }),
        json!({"attack": "credential_stuffing", "method": "POST", "path": "/login"}),
    ]
}

/// Sends one report as `key`; answers its canonical id.
pub async fn ingest(setup: &Setup, key: &str, report: &Value) -> String {
    let response = setup
        .client
        .post(format!("{}/v1/reports", setup.base))
        .bearer_auth(key)
        .json(report)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let answer: Value = response.json().await.unwrap();
    answer["id"].as_str().unwrap().to_owned()
}

/// Alpha sends every report of [`reports`], beta one more; waits until all are visible in
/// the pull views. Answers their ids in publication order.
pub async fn publish_all(setup: &Setup) -> Vec<String> {
    let mut ids = Vec::new();
    for report in reports() {
        let id = ingest(setup, &setup.alpha_key, &report).await;
        // A report with only a route names no attacker: the trust model never promotes it,
        // so it never reaches a view.
        let has_indicator = [
            "source_ip",
            "user_agent",
            "tls_ja3",
            "tls_ja4",
            "payload",
            "payload_sha256",
        ]
        .iter()
        .any(|k| report.get(*k).is_some());
        if has_indicator {
            ids.push(id);
        }
    }
    ids.push(
        ingest(
            setup,
            &setup.beta_key,
            &json!({"attack": "ssrf", "source_ip": "192.0.2.10", "path": "/fetch"}),
        )
        .await,
    );
    let visible = wait_visible(setup, &setup.beta_key, ids.len()).await;
    let visible: Vec<String> = visible
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = visible.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected);
    visible
}

/// Polls `GET /v1/reports` from the start until `want` reports are visible.
pub async fn wait_visible(setup: &Setup, key: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = setup
            .client
            .get(format!("{}/v1/reports?limit=500", setup.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        let reports = answer["reports"].as_array().unwrap().clone();
        if reports.len() >= want {
            return reports;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {want} reports became visible",
            reports.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
