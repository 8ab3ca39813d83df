//! `GET /v1/feed` is at least once: the items of an answer stay on the participant's queue
//! until the participant confirms the answer (`ack=TOKEN`), so an answer lost on the way or
//! a client that dies before it is done with it does not lose reports; they come again once
//! the answer's lease (`limits.feed_lease`) ends, or when the hub itself dies. On the real
//! RabbitMQ and in embedded mode.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use apiguard_hub::Hub;
use serde_json::{Value, json};

struct Running {
    hub: Hub,
    base: String,
    client: reqwest::Client,
    alpha: String,
    beta: String,
}

async fn start(settings: apiguard_hub::Settings, dir: &tempfile::TempDir) -> Running {
    let (hub, base, client, keys) =
        common::start_with(settings, dir, &[("alpha", "Alpha"), ("beta", "Beta")]).await;
    let [alpha, beta] = <[String; 2]>::try_from(keys).unwrap();
    Running {
        hub,
        base,
        client,
        alpha,
        beta,
    }
}

impl Running {
    async fn report(&self, ip: &str) {
        let response = self
            .client
            .post(format!("{}/v1/reports", self.base))
            .bearer_auth(&self.alpha)
            .json(&json!({"attack": "sqli", "source_ip": ip}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    /// One feed call with `query` (`ack=…`, or nothing for the implicit protocol; `max`
    /// 100 unless it names one).
    async fn feed(&self, query: &str) -> Value {
        let max = if query.contains("max=") {
            ""
        } else {
            "max=100&"
        };
        let response = self
            .client
            .get(format!("{}/v1/feed?{max}wait_ms=300&{query}", self.base))
            .bearer_auth(&self.beta)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Reads with `ack=` (explicit, confirming nothing) until `want` distinct addresses
    /// arrived; answers them and the tokens of the answers.
    async fn read_unconfirmed(&self, want: usize) -> (BTreeSet<String>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ips = BTreeSet::new();
        let mut tokens = Vec::new();
        while ips.len() < want && Instant::now() < deadline {
            let answer = self.feed("ack=").await;
            ips.extend(addresses(&answer));
            if let Some(token) = answer["ack"].as_str() {
                tokens.push(token.to_owned());
            }
        }
        (ips, tokens)
    }
}

fn addresses(answer: &Value) -> Vec<String> {
    answer["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["indicators"]["ip"].as_str().unwrap().to_owned())
        .collect()
}

fn expected(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|ip| (*ip).to_owned()).collect()
}

async fn an_unconfirmed_answer_is_delivered_again(running: Running) {
    let sent = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    for ip in sent {
        running.report(ip).await;
    }
    let (first, tokens) = running.read_unconfirmed(3).await;
    assert_eq!(first, expected(&sent));
    // Nothing confirmed: while the answers are leased nobody else gets them...
    assert!(addresses(&running.feed("ack=").await).is_empty());
    // ...and once the lease (1s) is over they come again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (again, tokens_again) = running.read_unconfirmed(3).await;
    assert_eq!(
        again,
        expected(&sent),
        "an unconfirmed answer is delivered again"
    );
    // A token of a lease that ended confirms nothing.
    let stale = running.feed(&format!("ack={}", tokens[0])).await;
    assert_eq!(stale["confirmed"], false);
    // Confirmed now: never again.
    for token in &tokens_again {
        let response = running
            .client
            .post(format!("{}/v1/feed/ack", running.base))
            .bearer_auth(&running.beta)
            .json(&json!({ "ack": token }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["confirmed"], true);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = running.feed("ack=").await;
    assert!(
        addresses(&after).is_empty(),
        "confirmed items do not come back: {after}"
    );

    // A client that does not speak the protocol (no `ack`) confirms an answer by asking
    // again; its last answer, never followed by another call, comes again after the lease.
    running.report("203.0.113.4").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut legacy = Vec::new();
    while legacy.is_empty() && Instant::now() < deadline {
        legacy = addresses(&running.feed("").await);
    }
    assert_eq!(legacy, vec!["203.0.113.4"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        addresses(&running.feed("").await),
        vec!["203.0.113.4"],
        "the unconfirmed last answer comes again"
    );
    assert!(
        addresses(&running.feed("").await).is_empty(),
        "asking again confirmed it"
    );

    // Someone else's token, or garbage, is no confirmation.
    let response = running
        .client
        .get(format!("{}/v1/feed?ack=not-a-token!", running.base))
        .bearer_auth(&running.beta)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("feed token"));
    common::stop_and_clean(running.hub).await;
}

fn lease_line() -> String {
    format!("{}limits:\n  feed_lease: 1s\n", common::admin_line())
}

#[tokio::test]
async fn an_unconfirmed_feed_answer_is_delivered_again_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let running = start(common::rabbit_settings(&lease_line()), &dir).await;
    an_unconfirmed_answer_is_delivered_again(running).await;
}

#[tokio::test]
async fn an_unconfirmed_feed_answer_is_delivered_again_in_embedded_mode() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(common::settings(&lease_line()), &dir).await;
    an_unconfirmed_answer_is_delivered_again(running).await;
}

/// The hub dies with an answer written but not confirmed: the restarted hub delivers it
/// again (before, the items were acknowledged before the answer was written).
#[tokio::test]
async fn an_answer_unconfirmed_when_the_hub_stops_is_delivered_by_the_next_hub() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A long lease: only the hub's end hands the items back.
    let settings = common::rabbit_settings(&format!(
        "{}limits:\n  feed_lease: 10m\n",
        common::admin_line()
    ));
    let running = start(settings.clone(), &dir).await;
    let sent = ["198.51.100.1", "198.51.100.2"];
    for ip in sent {
        running.report(ip).await;
    }
    let (first, _) = running.read_unconfirmed(2).await;
    assert_eq!(first, expected(&sent));
    let Running {
        hub, client, beta, ..
    } = running;
    hub.shutdown().await;

    let mut settings = settings;
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let running = Running {
        base: format!("http://{}", hub.local_addr()),
        hub,
        client,
        alpha: String::new(),
        beta,
    };
    let (again, _) = running.read_unconfirmed(2).await;
    assert_eq!(
        again,
        expected(&sent),
        "the restarted hub delivers them again"
    );
    common::stop_and_clean(running.hub).await;
}

/// A batch's feed items travel bundled (many to a broker message): every one arrives once,
/// whole messages per answer, and none goes back to its reporter. (Workers share the ingest
/// queue, so reports of one batch may be published in another order.)
#[tokio::test]
async fn a_batch_fans_out_whole_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let running = start(common::rabbit_settings(&common::admin_line()), &dir).await;
    let sent: Vec<String> = (1..=150).map(|n| format!("198.18.1.{n}")).collect();
    let reports: Vec<Value> = sent
        .iter()
        .map(|ip| json!({"attack": "scanner", "source_ip": ip}))
        .collect();
    let response = running
        .client
        .post(format!("{}/v1/reports/batch", running.base))
        .bearer_auth(&running.alpha)
        .json(&json!({ "reports": reports }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = Vec::new();
    let mut ack = String::new();
    while received.len() < sent.len() && Instant::now() < deadline {
        let answer = running.feed(&format!("max=10&ack={ack}")).await;
        let got = addresses(&answer);
        assert!(
            got.len() < 10 + 64,
            "at most one bundle past max: {}",
            got.len()
        );
        received.extend(got);
        ack = answer["ack"].as_str().unwrap_or_default().to_owned();
    }
    let mut received_sorted = received.clone();
    received_sorted.sort();
    received_sorted.dedup();
    assert_eq!(received_sorted.len(), received.len(), "no item twice");
    let mut expected_sorted = sent.clone();
    expected_sorted.sort();
    assert_eq!(received_sorted, expected_sorted, "every item");
    let own = running
        .client
        .get(format!("{}/v1/feed?max=500&wait_ms=500&ack=", running.base))
        .bearer_auth(&running.alpha)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        addresses(&own).is_empty(),
        "the reporter is not sent its own: {own}"
    );
    common::stop_and_clean(running.hub).await;
}
