//! Measures REST ingest throughput (each report acknowledged only after the broker's
//! confirm) and how long until one subscriber has received every report.
//!
//! ```sh
//! cargo run --release -p apiguard-hub --example ingest_load -- [REPORTS] [CLIENTS] [rabbitmq|embedded]
//! ```
//!
//! The hub, its workers and the load generator share the machine; RabbitMQ at
//! 127.0.0.1:5672 (guest/guest) unless `APIGUARD_TEST_AMQP` says otherwise. The hub runs
//! with `trust.k: 1` (set explicitly): the one reporter's reports are published, so every
//! report still goes through the trust model's decision and reaches the subscriber.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_hub::bus::Bus;
use apiguard_hub::{Hub, HubConfig, NewParticipant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reports: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let mode = args.get(3).map_or("rabbitmq", String::as_str);
    let dir = tempfile::tempdir().unwrap();
    let amqp = std::env::var("APIGUARD_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let broker = if mode == "embedded" {
        String::new()
    } else {
        format!(
            "broker:\n  url: {amqp}\n  prefix: apiguard-load.{}\n  workers: 4\n",
            uuid::Uuid::now_v7().simple()
        )
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{}\nsecret: load-secret-0123456789abcdef0123456789\n{broker}limits:\n  embedded_queue: 1000000\ntrust:\n  k: 1\n",
        dir.path().join("hub.db").display()
    );
    let settings = HubConfig::parse(&yaml).unwrap().settings().unwrap();
    let hub = Hub::start(settings).await.unwrap();
    let (_, reporter) = hub
        .register(NewParticipant {
            name: "reporter".into(),
            organisation: "R".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, subscriber) = hub
        .register(NewParticipant {
            name: "subscriber".into(),
            organisation: "S".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let base = Arc::new(format!("http://{}", hub.local_addr()));
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base, key) = (client.clone(), base.clone(), reporter.clone());
        let share = reports / clients + usize::from(c < reports % clients);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for n in 0..share {
                let body = serde_json::json!({
                    "attack": "scanner",
                    "source_ip": format!("198.18.{}.{}", (c * share + n) / 250 % 250, (c * share + n) % 250 + 1),
                    "user_agent": "masscan/1.3",
                });
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/v1/reports"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(reports);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let ingest = started.elapsed();

    let mut received = 0;
    while received < reports && started.elapsed() < Duration::from_secs(600) {
        let answer: serde_json::Value = client
            .get(format!("{base}/v1/feed?max=500&wait_ms=1000"))
            .bearer_auth(&subscriber)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        received += answer["reports"].as_array().unwrap().len();
    }
    let delivered = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "mode {mode}: {reports} reports from {clients} clients; ingest {:.0} reports/s (ack p50 {:?}, p99 {:?}); \
         all {received} delivered to the subscriber after {delivered:.2?} ({:.0} reports/s end to end)",
        reports as f64 / ingest.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        received as f64 / delivered.as_secs_f64(),
    );
    let bus = hub.state().bus.clone();
    hub.shutdown().await;
    if let Bus::Rabbit(bus) = bus {
        bus.delete_topology().await.unwrap();
    }
}
