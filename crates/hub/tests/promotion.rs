//! k-of-n promotion and withdrawals end to end, through the REST API and the participants'
//! feeds, on the real RabbitMQ and in embedded mode: nothing reaches anyone before k
//! organisations reported an indicator; then exactly the other participants receive it
//! (never its reporters); its expiry and an operator's false-positive withdrawal reach them
//! as withdrawals.

mod common;

use std::time::{Duration, Instant};

use apiguard_hub::{Hub, Settings};
use serde_json::{Value, json};

struct Running {
    hub: Hub,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(settings: Settings) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings;
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    Running {
        hub,
        base,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

const TRUST: &str = "trust:\n  k: 3\n  sweep_interval: 100ms\n";

async fn post_report(running: &Running, key: &str, ip: &str, ttl: u64) -> String {
    let response = running
        .client
        .post(format!("{}/v1/reports", running.base))
        .bearer_auth(key)
        .json(&json!({"attack": "sqli", "severity": "high", "source_ip": ip, "ttl_seconds": ttl}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls a feed until `want` items arrived (or `within` passed), then for `settle` more.
async fn feed(
    running: &Running,
    key: &str,
    want: usize,
    within: Duration,
    settle: Duration,
) -> Vec<Value> {
    let mut items = common::collect_feed(&running.client, &running.base, key, want, within).await;
    if !settle.is_zero() {
        items.extend(
            common::collect_feed(&running.client, &running.base, key, usize::MAX, settle).await,
        );
    }
    items
}

async fn k_of_n_through_the_feeds(settings: Settings) {
    let running = start(settings).await;
    let (client, base) = (&running.client, &running.base);
    let mut keys = std::collections::HashMap::new();
    for (name, organisation, subscription) in [
        ("alpha", "Alpha", json!({})),
        ("alpha-eu", "Alpha", json!({})),
        ("beta", "Beta", json!({})),
        ("gamma", "Gamma", json!({})),
        ("delta", "Delta", json!({})),
        ("epsilon", "Epsilon", json!({"classes": ["xss"]})),
    ] {
        let (_, key) = common::register(
            client,
            base,
            json!({"name": name, "organisation": organisation, "subscription": subscription}),
        )
        .await;
        keys.insert(name, key);
    }

    // Two keys of Alpha and Beta: two organisations. Nobody receives anything.
    for who in ["alpha", "alpha-eu", "beta"] {
        post_report(&running, &keys[who], "203.0.113.80", 4).await;
    }
    let early = feed(
        &running,
        &keys["delta"],
        1,
        Duration::from_millis(1500),
        Duration::ZERO,
    )
    .await;
    assert!(early.is_empty(), "published before the quorum: {early:?}");

    // Gamma completes it: delta receives the report, once; the reporters and epsilon
    // (XSS only) do not.
    let completing = post_report(&running, &keys["gamma"], "203.0.113.80", 4).await;
    let started = Instant::now();
    let got = feed(
        &running,
        &keys["delta"],
        1,
        Duration::from_secs(15),
        Duration::ZERO,
    )
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let report = &got[0];
    assert_eq!(report["id"], completing.as_str());
    assert_eq!(report["indicators"]["ip"], "203.0.113.80");
    assert_eq!(report["trust"]["corroborations"], 3);
    assert!(report.get("kind").is_none());
    for who in ["alpha", "alpha-eu", "beta", "gamma", "epsilon"] {
        let own = feed(
            &running,
            &keys[who],
            1,
            Duration::from_millis(200),
            Duration::ZERO,
        )
        .await;
        assert!(own.is_empty(), "{who} received {own:?}");
    }

    // Its validity (4 s) passes: delta receives the withdrawal.
    let withdrawn = feed(
        &running,
        &keys["delta"],
        1,
        Duration::from_secs(20),
        Duration::ZERO,
    )
    .await;
    eprintln!(
        "expiry withdrawal delivered {:?} after the promotion",
        started.elapsed()
    );
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert_eq!(withdrawn[0]["kind"], "withdrawal");
    assert_eq!(withdrawn[0]["reason"], "expired");
    assert_eq!(withdrawn[0]["withdraws"], completing.as_str());
    assert_eq!(withdrawn[0]["indicators"]["ip"], "203.0.113.80");

    // A false positive, withdrawn by the operator long before its validity ends.
    for who in ["alpha", "beta", "gamma"] {
        post_report(&running, &keys[who], "203.0.113.81", 3600).await;
    }
    let got = feed(
        &running,
        &keys["delta"],
        1,
        Duration::from_secs(15),
        Duration::ZERO,
    )
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let refused = client
        .post(format!("{base}/admin/withdrawals"))
        .bearer_auth(&keys["delta"])
        .json(&json!({"indicator": "203.0.113.81"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a participant is no operator");
    let answer = client
        .post(format!("{base}/admin/withdrawals"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"indicator": "203.0.113.81"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let withdrawn = feed(
        &running,
        &keys["delta"],
        1,
        Duration::from_secs(15),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert_eq!(withdrawn[0]["reason"], "false_positive");
    assert_eq!(withdrawn[0]["withdraws"], got[0]["id"]);
    for (indicator, status) in [("203.0.113.81", 404), ("not an address", 400)] {
        let answer = client
            .post(format!("{base}/admin/withdrawals"))
            .bearer_auth(common::ADMIN_TOKEN)
            .json(&json!({"indicator": indicator}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{indicator}");
    }

    // Allowlisted: three organisations report a public resolver; nothing is published.
    for who in ["alpha", "beta", "gamma"] {
        post_report(&running, &keys[who], "8.8.8.8", 3600).await;
    }
    let nothing = feed(
        &running,
        &keys["delta"],
        1,
        Duration::from_millis(1500),
        Duration::ZERO,
    )
    .await;
    assert!(nothing.is_empty(), "{nothing:?}");
    common::stop_and_clean(running.hub).await;
}

#[tokio::test]
async fn k_organisations_promote_and_withdrawals_follow_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let settings = common::rabbit_settings(&format!("{}{TRUST}", common::admin_line()));
    k_of_n_through_the_feeds(settings).await;
}

#[tokio::test]
async fn k_organisations_promote_and_withdrawals_follow_in_embedded_mode() {
    let settings = common::settings(&format!("{}{TRUST}", common::admin_line()));
    k_of_n_through_the_feeds(settings).await;
}
