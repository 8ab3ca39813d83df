//! Changing a participant's subscription on the real RabbitMQ: through the admin API and the
//! command line, its queue is rebound (the broker itself stops routing the old keys), reports
//! of a newly subscribed class arrive and those of an unsubscribed one do not, and the change
//! survives a restart of the hub.

mod common;

use std::time::Duration;

use apiguard_hub::{Hub, HubConfig, Settings};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

/// The hub's configuration file: RabbitMQ under a prefix of its own, a SQLite file, the
/// admin API, `trust.k: 1`.
fn write_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let prefix = format!("apiguard-test.{}", uuid::Uuid::now_v7().simple());
    let yaml = format!(
        "listen: 127.0.0.1:0\nsecret: test-secret-0123456789abcdef0123456789\n\
         store: sqlite://{}\n{}broker:\n  url: {}\n  prefix: {prefix}\n  timeout: 3s\n\
         trust:\n  k: 1\n",
        dir.path().join("hub.db").display(),
        common::admin_line(),
        common::amqp_url(),
    );
    let path = dir.path().join("hub.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn settings_of(path: &std::path::Path) -> Settings {
    HubConfig::load(path).unwrap().settings().unwrap()
}

async fn post(client: &reqwest::Client, base: &str, key: &str, attack: &str, ip: &str) {
    let response = client
        .post(format!("{base}/v1/reports"))
        .bearer_auth(key)
        .json(&json!({"attack": attack, "severity": "high", "source_ip": ip}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

/// Sends a report of `unwanted` and then one of `wanted`, and reads the subscriber's feed
/// until the second arrives and a second more: answers the addresses received.
async fn received_after(
    client: &reqwest::Client,
    base: &str,
    reporter: &str,
    subscriber: &str,
    (unwanted, unwanted_ip): (&str, &str),
    (wanted, wanted_ip): (&str, &str),
) -> Vec<String> {
    post(client, base, reporter, unwanted, unwanted_ip).await;
    post(client, base, reporter, wanted, wanted_ip).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut ips = Vec::new();
    let mut quiet_until = None;
    let mut ack = String::new();
    loop {
        let answer: Value = client
            .get(format!("{base}/v1/feed?max=100&wait_ms=300&ack={ack}"))
            .bearer_auth(subscriber)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ack = answer["ack"].as_str().unwrap_or_default().to_owned();
        // (Items without an address are the test's own probes, published by hand below.)
        ips.extend(
            answer["reports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|item| item["indicators"]["ip"].as_str().map(str::to_owned)),
        );
        let now = std::time::Instant::now();
        if quiet_until.is_none() && ips.iter().any(|ip| ip == wanted_ip) {
            // The unwanted one was sent first: give it a second to show up, if it could.
            quiet_until = Some(now + Duration::from_secs(1));
        }
        if quiet_until.is_some_and(|until| now >= until) {
            // Confirm the last answer, so that nothing of it comes again in a later round.
            if !ack.is_empty() {
                let response = client
                    .post(format!("{base}/v1/feed/ack"))
                    .bearer_auth(subscriber)
                    .json(&json!({ "ack": ack }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
            return ips;
        }
        assert!(now < deadline, "the {wanted} report never came: {ips:?}");
    }
}

/// Messages in a queue now, as the broker counts them.
async fn depth(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// Whether the broker routes a message published with `key` to `queue` (its depth grows).
async fn routes(channel: &lapin::Channel, exchange: &str, queue: &str, key: &str) -> bool {
    let before = depth(channel, queue).await;
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Confirmed: the message is in every queue it was routed to.
    depth(channel, queue).await > before
}

#[tokio::test]
async fn a_changed_subscription_rebinds_the_queue_and_survives_a_restart() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir);
    let hub = Hub::start(settings_of(&config)).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let client = reqwest::Client::new();
    let (_, alpha) = common::register(
        &client,
        &base,
        json!({"name": "alpha", "organisation": "Alpha"}),
    )
    .await;
    let (beta_id, beta) = common::register(
        &client,
        &base,
        json!({"name": "beta", "organisation": "Beta", "subscription": {"classes": ["sqli"]}}),
    )
    .await;

    let got = received_after(
        &client,
        &base,
        &alpha,
        &beta,
        ("xss", "192.0.2.1"),
        ("sqli", "192.0.2.2"),
    )
    .await;
    assert_eq!(got, ["192.0.2.2"], "subscribed to sqli only");

    // Bad changes are refused and change nothing.
    let url = format!("{base}/admin/participants/{beta_id}/subscription");
    let response = client
        .put(&url)
        .json(&json!({"classes": ["xss"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    for bad in [
        json!({"classes": ["nonsense"]}),
        json!({"colours": ["red"]}),
    ] {
        let response = client
            .put(&url)
            .bearer_auth(common::ADMIN_TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    let response = client
        .put(format!("{base}/admin/participants/nobody/subscription"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Beta now wants xss, not sqli.
    let response = client
        .put(&url)
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"classes": ["xss"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["subscription"]["classes"],
        json!(["xss"]),
        "{answer}"
    );
    let got = received_after(
        &client,
        &base,
        &alpha,
        &beta,
        ("sqli", "192.0.2.3"),
        ("xss", "192.0.2.4"),
    )
    .await;
    assert_eq!(got, ["192.0.2.4"], "subscribed to xss only");

    // The broker itself routes by the new bindings: the old key no longer reaches beta's queue.
    let amqp = Connection::connect(&common::amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let apiguard_hub::bus::Bus::Rabbit(bus) = hub.state().bus.clone() else {
        panic!("a broker is configured");
    };
    let (exchange, queue) = (bus.reports_exchange(), bus.feed_queue(&beta_id));
    assert!(routes(&channel, &exchange, &queue, "r.xss.high.ip").await);
    assert!(!routes(&channel, &exchange, &queue, "r.sqli.high.ip").await);

    // A restarted hub keeps the change.
    hub.shutdown().await;
    let hub = Hub::start(settings_of(&config)).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let got = received_after(
        &client,
        &base,
        &alpha,
        &beta,
        ("sqli", "192.0.2.5"),
        ("xss", "192.0.2.6"),
    )
    .await;
    assert_eq!(got, ["192.0.2.6"], "still xss only after a restart");
    assert!(!routes(&channel, &exchange, &queue, "r.sqli.high.ip").await);

    // The command line changes it back while the hub runs: the store and the broker at
    // once, and the running hub's feed follows.
    let args = apiguard_hub::cli::SubscriptionArgs {
        classes: vec!["sqli".into()],
        min_severity: Some("high".into()),
        address_kinds: vec![],
    };
    let changed = apiguard_hub::cli::set_subscription(&config, "beta", &args)
        .await
        .unwrap();
    assert!(changed.broker_warning.is_none(), "{changed:?}");
    assert!(routes(&channel, &exchange, &queue, "r.sqli.high.ip").await);
    assert!(!routes(&channel, &exchange, &queue, "r.sqli.medium.ip").await);
    assert!(!routes(&channel, &exchange, &queue, "r.xss.high.ip").await);
    let got = received_after(
        &client,
        &base,
        &alpha,
        &beta,
        ("xss", "192.0.2.7"),
        ("sqli", "192.0.2.8"),
    )
    .await;
    assert_eq!(got, ["192.0.2.8"], "sqli again, as the command line said");
    let bad = apiguard_hub::cli::SubscriptionArgs {
        classes: vec!["nonsense".into()],
        ..Default::default()
    };
    let error = apiguard_hub::cli::set_subscription(&config, "beta", &bad)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--class"), "{error}");

    amqp.close(200, "done".into()).await.unwrap();
    common::stop_and_clean(hub).await;
}
