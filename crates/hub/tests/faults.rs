//! Faults on the real broker: RabbitMQ restarted during a run (`rabbitmqctl stop_app` /
//! `start_app`), the hub restarted, and a subscriber offline throughout: every report the
//! hub acknowledged reaches the subscriber afterwards, each id with one content (copies of a
//! redelivery are identical, so a consumer that de-duplicates by id applies each once).
//!
//! Stopping the broker disturbs every other user of it, so this runs only under `CI=true`
//! (a machine of its own; this binary has this one test, so nothing else runs meanwhile) or
//! with `APIGUARD_TEST_BROKER_RESTART=1`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apiguard_hub::Hub;
use serde_json::{Value, json};

fn rabbitmqctl(args: &[&str]) -> bool {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Answers other than 202 (the broker was down): proof that the fault happened.
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// Posts a report until the hub acknowledges it (as a gateway's outbox does); its id.
async fn post_until_acked(client: reqwest::Client, base: String, key: String, n: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = json!({"attack": "scanner", "source_ip": format!("192.0.2.{}", n + 1)});
    loop {
        let answer = client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(&key)
            .json(&body)
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == 202 => {
                let value: Value = response.json().await.unwrap();
                return value["id"].as_str().unwrap().to_owned();
            }
            Ok(response) => {
                assert!(
                    [429, 503].contains(&response.status().as_u16()),
                    "unexpected {}",
                    response.status()
                );
                REFUSED.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                REFUSED.fetch_add(1, Ordering::Relaxed);
            }
        }
        assert!(Instant::now() < deadline, "report {n} never acknowledged");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn acknowledged_reports_survive_a_broker_restart_a_hub_restart_and_an_offline_subscriber() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if !ci && std::env::var_os("APIGUARD_TEST_BROKER_RESTART").is_none() {
        eprintln!(
            "skipping: restarting RabbitMQ disturbs its other users; set APIGUARD_TEST_BROKER_RESTART=1 (or CI=true)"
        );
        return;
    }
    assert!(rabbitmqctl(&["-q", "status"]), "rabbitmqctl is required");
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::rabbit_settings(&common::admin_line());
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings.clone()).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let client = reqwest::Client::new();
    let (_, alpha) = common::register(
        &client,
        &base,
        json!({"name": "alpha", "organisation": "Alpha"}),
    )
    .await;
    // Beta's gateway is offline until the end.
    let (_, beta) = common::register(
        &client,
        &base,
        json!({"name": "beta", "organisation": "Beta"}),
    )
    .await;
    let post = |n: u32| {
        tokio::spawn(post_until_acked(
            client.clone(),
            base.clone(),
            alpha.clone(),
            n,
        ))
    };
    let mut acked = Vec::new();
    for n in 0..10 {
        acked.push(post(n).await.unwrap());
    }

    // The broker stops with reports in flight, and comes back.
    assert!(rabbitmqctl(&["stop_app"]), "rabbitmqctl stop_app");
    let during: Vec<_> = (10..15).map(post).collect();
    // A fault that lasts: the posts above meet a dead broker for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rabbitmqctl(&["start_app"]), "rabbitmqctl start_app");
    for task in during {
        acked.push(task.await.unwrap());
    }
    let refused = REFUSED.load(Ordering::Relaxed);
    assert!(refused > 0, "the posts never met the stopped broker");
    for n in 15..20 {
        acked.push(post(n).await.unwrap());
    }

    // The hub restarts (same broker topology, same store).
    hub.shutdown().await;
    let hub = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let post = |n: u32| {
        tokio::spawn(post_until_acked(
            client.clone(),
            base.clone(),
            alpha.clone(),
            n,
        ))
    };
    for n in 20..25 {
        acked.push(post(n).await.unwrap());
    }

    // Beta comes online and catches up from its queue.
    let mut received =
        common::collect_feed(&client, &base, &beta, acked.len(), Duration::from_secs(90)).await;
    received.extend(
        common::collect_feed(&client, &base, &beta, usize::MAX, Duration::from_secs(2)).await,
    );
    let mut by_id = BTreeMap::<String, Vec<&Value>>::new();
    for item in &received {
        by_id
            .entry(item["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(item);
    }
    eprintln!(
        "{} reports acknowledged ({refused} refusals while the broker was down), {} deliveries, {} distinct",
        acked.len(),
        received.len(),
        by_id.len()
    );
    for id in &acked {
        assert!(by_id.contains_key(id), "acknowledged report {id} was lost");
    }
    assert_eq!(by_id.len(), acked.len(), "nothing unacknowledged arrived");
    for copies in by_id.values() {
        assert!(copies.windows(2).all(|w| w[0] == w[1]), "{copies:?}");
    }
    common::stop_and_clean(hub).await;
}
