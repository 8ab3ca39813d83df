//! RabbitMQ behaviours a user notices: back-pressure (429 past the ingest queue's bound, not a
//! full broker disk), poison messages dead-lettered with their reason, and reports queued
//! while no worker runs delivered once one does.

mod common;

use std::time::Duration;

use apiguard_hub::bus::Bus;
use apiguard_hub::{Hub, NewParticipant};
use serde_json::json;

fn report(n: u32) -> serde_json::Value {
    json!({"attack": "credential_stuffing", "source_ip": format!("192.0.2.{}", n % 250 + 1)})
}

#[tokio::test]
async fn ingest_answers_429_past_the_queue_bound() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No workers: nothing drains the ingest queue, bounded at 5.
    let mut settings = common::rabbit_settings("  ingest_max_length: 5\n  workers: 0\n");
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let (_, key) = hub
        .register(NewParticipant {
            name: "alpha".into(),
            organisation: "Alpha".into(),
            ..NewParticipant::default()
        })
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{}", hub.local_addr());
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..30 {
        let response = client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(&key)
            .json(&report(n))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            202 => accepted += 1,
            429 => {
                assert_eq!(response.headers()["retry-after"], "1");
                assert!(response.text().await.unwrap().contains("full"));
                refused += 1;
            }
            other => panic!(
                "unexpected status {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    eprintln!("ingest bound 5: {accepted} accepted, {refused} refused with 429");
    // A quorum queue refuses publishes once it is over its bound, so it may take one more.
    assert!(
        (5..=6).contains(&accepted),
        "{accepted} accepted past a bound of 5"
    );
    assert_eq!(accepted + refused, 30);
    common::stop_and_clean(hub).await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_the_reason() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::rabbit_settings("");
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let Bus::Rabbit(bus) = hub.state().bus.clone() else {
        panic!("a broker is configured");
    };
    // Bytes that are no envelope, and an envelope from a participant the hub does not know.
    bus.submit(uuid::Uuid::now_v7(), b"\xff not json")
        .await
        .unwrap();
    let orphan = apiguard_hub::pipeline::Envelope {
        v: 1,
        id: uuid::Uuid::now_v7(),
        participant: "nobody".into(),
        received_at: chrono::Utc::now(),
        protocol: "rest".into(),
        report: serde_json::from_value(report(1)).unwrap(),
    };
    bus.submit(orphan.id, &orphan.to_bytes()).await.unwrap();

    let mut dead = Vec::new();
    for _ in 0..50 {
        dead.extend(bus.take_dead_letters(10).await.unwrap());
        if dead.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reasons: Vec<&str> = dead.iter().map(|(reason, _)| reason.as_str()).collect();
    assert_eq!(dead.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("unreadable envelope")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("participant is unknown")),
        "{reasons:?}"
    );
    assert!(
        dead.iter().any(|(_, body)| body == b"\xff not json"),
        "the message is kept as it came"
    );
    common::stop_and_clean(hub).await;
}

#[tokio::test]
async fn reports_acknowledged_while_no_worker_runs_are_delivered_after_a_hub_restart() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let base_settings = common::rabbit_settings("  workers: 0\n");
    let mut settings = base_settings.clone();
    settings.store = store.clone();
    let hub = Hub::start(settings).await.unwrap();
    let (_, alpha) = hub
        .register(NewParticipant {
            name: "alpha".into(),
            organisation: "Alpha".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, beta) = hub
        .register(NewParticipant {
            name: "beta".into(),
            organisation: "Beta".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{}", hub.local_addr());
    for n in 0..10 {
        let response = client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(&alpha)
            .json(&report(n))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    hub.shutdown().await;

    // A new hub process with workers, same broker and store.
    let mut settings = base_settings;
    settings.store = store;
    if let Some(broker) = settings.broker.as_mut() {
        broker.workers = 2;
    }
    let hub = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let received = common::collect_feed(&client, &base, &beta, 10, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 10, "every acknowledged report arrives once");
    let mut ids: Vec<_> = received.iter().map(|r| r["id"].to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    common::stop_and_clean(hub).await;
}

/// Closes every broker connection whose name contains `needle`, as a broker restart or a
/// network cut would. Answers how many were closed.
fn close_broker_connections(needle: &str) -> usize {
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&listed.stdout);
    let mut closed = 0;
    for line in listing.lines().filter(|line| line.contains(needle)) {
        let pid = line.split_whitespace().next().unwrap();
        let status = std::process::Command::new("rabbitmqctl")
            .args([
                "-q",
                "close_connection",
                pid,
                "apiguard test: simulated broker failure",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        closed += 1;
    }
    closed
}

#[tokio::test]
async fn reports_acknowledged_around_a_lost_broker_connection_all_arrive() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    if std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .arg("status")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "rabbitmqctl is required in CI"
        );
        eprintln!("skipping: rabbitmqctl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::rabbit_settings("");
    let prefix = settings.broker.as_ref().unwrap().prefix.clone();
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let (_, alpha) = hub
        .register(NewParticipant {
            name: "alpha".into(),
            organisation: "Alpha".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, beta) = hub
        .register(NewParticipant {
            name: "beta".into(),
            organisation: "Beta".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{}", hub.local_addr());
    let post = |n: u32| {
        client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(&alpha)
            .json(&report(n))
            .send()
    };
    for n in 0..5 {
        assert_eq!(post(n).await.unwrap().status(), 202);
    }
    assert!(
        close_broker_connections(&prefix) >= 1,
        "the hub's connection was found"
    );
    // Ingest reconnects by itself: no report is refused after the cut.
    for n in 5..10 {
        let response = post(n).await.unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }
    let mut received =
        common::collect_feed(&client, &base, &beta, 10, Duration::from_secs(20)).await;
    // Let any redelivery land too.
    received.extend(
        common::collect_feed(&client, &base, &beta, usize::MAX, Duration::from_secs(1)).await,
    );
    let mut by_id = std::collections::BTreeMap::<String, Vec<&serde_json::Value>>::new();
    for report in &received {
        by_id
            .entry(report["id"].to_string())
            .or_default()
            .push(report);
    }
    assert_eq!(by_id.len(), 10, "every acknowledged report arrives");
    // A publish whose confirm was lost with the connection is published again (at least
    // once); the copies are identical, so consumers de-duplicate them by id.
    for copies in by_id.values() {
        assert!(copies.windows(2).all(|w| w[0] == w[1]), "{copies:?}");
    }
    eprintln!("{} deliveries for 10 reports", received.len());
    common::stop_and_clean(hub).await;
}
