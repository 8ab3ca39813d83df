//! End to end through the REST API: participants registered by the admin API, one reports,
//! the others receive the anonymised report from their feed. On the real RabbitMQ (the
//! production path) and in embedded mode (no broker).

mod common;

use std::time::{Duration, Instant};

use apiguard_hub::Hub;
use serde_json::json;
use uuid::Uuid;

struct Running {
    hub: Hub,
    base: String,
    client: reqwest::Client,
}

async fn start(settings: apiguard_hub::Settings, dir: &tempfile::TempDir) -> Running {
    let mut settings = settings;
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    Running {
        hub,
        base,
        client: reqwest::Client::new(),
    }
}

async fn cleanup(running: Running) {
    common::stop_and_clean(running.hub).await;
}

fn attack_report() -> serde_json::Value {
    json!({
        "attack": "sqli",
        "severity": "high",
        "confidence": 90,
        "source_ip": "203.0.113.77:53211",
        "method": "POST",
        "path": "/users/1234/orders?token=s3cr3t-t0ken-value-123",
        "host": "api.alpha-bank.test",
        "headers": {
            "User-Agent": "sqlmap/1.7 (contact secops@alpha-bank.test)",
            "Cookie": "session=alpha-session-cookie-42"
        },
        "payload": "1' OR '1'='1",
        "description": "Alpha Bank plc, seen on api.alpha-bank.test by jane.doe@alpha-bank.test"
    })
}

/// Two (three) participants: alpha reports over REST; beta receives the anonymised report
/// from its feed; gamma, subscribed to XSS only, receives nothing.
async fn two_participants_share_an_anonymised_report(running: Running) {
    let Running { base, client, .. } = &running;
    let (alpha_id, alpha_key) = common::register(
        client,
        base,
        json!({
            "name": "alpha-bank",
            "organisation": "Alpha Bank plc",
            "own_networks": ["198.51.100.0/24"],
            "own_hosts": ["api.alpha-bank.test"]
        }),
    )
    .await;
    let (_, beta_key) = common::register(
        client,
        base,
        json!({"name": "beta-shop", "organisation": "Beta Shop"}),
    )
    .await;
    let (_, gamma_key) = common::register(
        client,
        base,
        json!({"name": "gamma", "organisation": "Gamma", "subscription": {"classes": ["xss"]}}),
    )
    .await;

    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/reports"))
        .bearer_auth(&alpha_key)
        .json(&attack_report())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let acked = started.elapsed();
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let received = common::collect_feed(client, base, &beta_key, 1, Duration::from_secs(10)).await;
    let delivered = started.elapsed();
    eprintln!(
        "ingest acknowledged in {acked:?}; delivered to the other participant in {delivered:?}"
    );
    assert_eq!(received.len(), 1, "beta receives the report");
    let report = &received[0];
    assert_eq!(report["id"], id.as_str());
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["indicators"]["ip"], "203.0.113.77");
    assert_eq!(report["indicators"]["route"], "POST /users/{id}/orders");
    assert_eq!(report["category"]["class"], "sqli");
    assert_eq!(report["category"]["owasp"], "API8:2023");
    assert!(report["reporter"].as_str().unwrap().starts_with("anon-"));
    // The report is valid against the canonical schema's rules.
    apiguard_model::threat::ThreatReport::from_json(report.to_string().as_bytes()).unwrap();

    let answer = report.to_string().to_lowercase();
    for secret in [
        alpha_id.as_str(),
        alpha_key.as_str(),
        "alpha",
        "secops",
        "jane.doe",
        "s3cr3t",
        "session-cookie",
        "198.51.100",
        "1' or",
    ] {
        assert!(
            !answer.contains(&secret.to_lowercase()),
            "`{secret}` leaked: {answer}"
        );
    }

    assert!(
        common::collect_feed(client, base, &gamma_key, 1, Duration::from_secs(1))
            .await
            .is_empty(),
        "gamma's filter (xss only) excludes an sqli report"
    );
    cleanup(running).await;
}

#[tokio::test]
async fn rest_report_reaches_the_other_participant_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let running = start(common::rabbit_settings(&common::admin_line()), &dir).await;
    two_participants_share_an_anonymised_report(running).await;
}

#[tokio::test]
async fn rest_report_reaches_the_other_participant_in_embedded_mode() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(common::settings(&common::admin_line()), &dir).await;
    two_participants_share_an_anonymised_report(running).await;
}

/// A retry with the reporter's own id is the same report: same canonical id, one delivery.
async fn retries_are_delivered_once(running: Running) {
    let Running { base, client, .. } = &running;
    let (_, alpha_key) = common::register(
        client,
        base,
        json!({"name": "alpha", "organisation": "Alpha"}),
    )
    .await;
    let (_, beta_key) = common::register(
        client,
        base,
        json!({"name": "beta", "organisation": "Beta"}),
    )
    .await;
    let mut report = attack_report();
    report["id"] = json!(Uuid::now_v7());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(&alpha_key)
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        ids.push(response.json::<serde_json::Value>().await.unwrap()["id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let received = common::collect_feed(client, base, &beta_key, 2, Duration::from_secs(3)).await;
    assert_eq!(
        received.len(),
        1,
        "three submissions of one report, one delivery"
    );
    assert_eq!(received[0]["id"], ids[0]);
    cleanup(running).await;
}

#[tokio::test]
async fn retried_reports_are_delivered_once_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    retries_are_delivered_once(start(common::rabbit_settings(&common::admin_line()), &dir).await)
        .await;
}

#[tokio::test]
async fn retried_reports_are_delivered_once_in_embedded_mode() {
    let dir = tempfile::tempdir().unwrap();
    retries_are_delivered_once(start(common::settings(&common::admin_line()), &dir).await).await;
}

#[tokio::test]
async fn a_batch_is_validated_whole_and_acknowledged_per_report() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(common::settings(&common::admin_line()), &dir).await;
    let Running { base, client, .. } = &running;
    let (_, key) = common::register(
        client,
        base,
        json!({"name": "alpha", "organisation": "Alpha"}),
    )
    .await;
    let (_, beta_key) = common::register(
        client,
        base,
        json!({"name": "beta", "organisation": "Beta"}),
    )
    .await;

    let bad = json!({"reports": [attack_report(), {"attack": "xss"}]});
    let response = client
        .post(format!("{base}/v1/reports/batch"))
        .bearer_auth(&key)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error = response.json::<serde_json::Value>().await.unwrap()["error"].to_string();
    assert!(
        error.contains("reports[1]") && error.contains("indicator"),
        "{error}"
    );

    let good: Vec<_> = (1..=20)
        .map(|n| json!({"attack": "scanner", "source_ip": format!("192.0.2.{n}")}))
        .collect();
    let response = client
        .post(format!("{base}/v1/reports/batch"))
        .bearer_auth(&key)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["reports"].as_array().unwrap().len(), 20);
    let received = common::collect_feed(client, base, &beta_key, 20, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 20);
    cleanup(running).await;
}

#[tokio::test]
async fn bad_credentials_and_bad_reports_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&common::admin_line());
    settings.limits.max_body_bytes = 4096;
    let running = start(settings, &dir).await;
    let Running { base, client, .. } = &running;
    let (_, key) = common::register(
        client,
        base,
        json!({"name": "alpha", "organisation": "Alpha"}),
    )
    .await;
    let post = |key: Option<&str>, body: String| {
        let mut request = client
            .post(format!("{base}/v1/reports"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let report = attack_report().to_string();

    let response = post(None, report.clone()).await.unwrap();
    assert_eq!(response.status(), 401);
    let response = post(Some("ahk_0000"), report.clone()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("unknown API key"));

    let response = post(
        Some(&key),
        "{\"attack\": \"sqli\", \"sorce_ip\": \"1.2.3.4\"}".into(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("sorce_ip"));

    let response = post(
        Some(&key),
        format!("{}{}", "[".repeat(1500), "]".repeat(1500)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);

    let response = post(Some(&key), "x".repeat(10_000)).await.unwrap();
    assert_eq!(response.status(), 413);

    // The admin API wants the admin token, not a participant key.
    let response = client
        .post(format!("{base}/admin/participants"))
        .bearer_auth(&key)
        .json(&json!({"name": "mallory", "organisation": "M"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .post(format!("{base}/admin/participants"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"name": "alpha", "organisation": "Again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    cleanup(running).await;
}
