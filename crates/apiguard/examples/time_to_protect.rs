//! Time to protect: gateway A refuses an attack from a client address, reports it through
//! the hub (RabbitMQ), and gateway B starts refusing that address. Measures, per attacker,
//! the time from A's 403 to B's block rule being in force, and prints p50/p99.
//!
//! cargo run --release -p apiguard --example time_to_protect -- [ATTACKERS] [BROKER_URL]
//! (defaults: 200 attackers, amqp://guest:guest@127.0.0.1:5672/%2f; RabbitMQ must run)
//!
//! The hub runs with `trust.k: 1` (set explicitly): one reporting organisation publishes,
//! so this measures delivery, not how long a quorum of organisations takes to form.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use apiguard_gateway::Gateway;
use apiguard_hub::{Hub, HubConfig, NewParticipant, Subscription};
use apiguard_testkit::TestUpstream;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let attackers: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let broker = args
        .next()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\nsecret: time-to-protect-secret-0123456789abcdef\nstore: sqlite://{}\nbroker:\n  url: {broker}\n  prefix: apiguard-ttp.{}\n  timeout: 3s\ntrust:\n  k: 1\n",
        dir.path().join("hub.db").display(),
        std::process::id()
    );
    let hub = Hub::start(HubConfig::parse(&yaml).unwrap().settings().unwrap())
        .await
        .expect("the hub starts (is RabbitMQ running?)");
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let (_, key) = hub
            .register(NewParticipant {
                name: format!("gateway-{name}"),
                organisation: format!("organisation {name}"),
                own_networks: Vec::new(),
                own_hosts: Vec::new(),
                subscription: serde_json::from_str::<Subscription>("{}").unwrap(),
            })
            .await
            .unwrap();
        keys.push(key);
    }
    let upstream = TestUpstream::start().await.unwrap();
    let mut gateways = Vec::new();
    for (name, key) in ["a", "b"].iter().zip(&keys) {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  backend:\n    targets: [\"{}\"]\nroutes:\n  - id: all\n    upstream: backend\nhub:\n  url: http://{}\n  api_key: {key}\n  outbox: {}\naccess_log:\n  enabled: false\nreload:\n  watch: false\n",
                upstream.addr(),
                hub.local_addr(),
                dir.path().join(format!("{name}-outbox")).display()
            ),
        )
        .unwrap();
        gateways.push(Gateway::start(&path).await.unwrap());
    }
    let (a, b) = (&gateways[0], &gateways[1]);
    let a_addr = a.listen_addrs()[0];
    let mut samples = Vec::new();
    for i in 0..attackers {
        let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(IpAddr::V4(ip)));
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let attack = Request::get(format!(
            "http://{a_addr}/echo?id=1%27%20UNION%20SELECT%20password%20FROM%20users--"
        ))
        .body(Full::default())
        .unwrap();
        let status = client.request(attack).await.unwrap().status();
        assert_eq!(status, 403, "gateway A refuses the attack");
        let refused = Instant::now();
        while b.enforcement().blocking(IpAddr::V4(ip)).is_none() {
            assert!(
                refused.elapsed() < Duration::from_secs(10),
                "gateway B never blocked {ip}"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(refused.elapsed());
    }
    samples.sort();
    let pct =
        |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "time_to_protect attackers={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        samples.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        samples.last().unwrap().as_secs_f64() * 1000.0
    );
    drop(gateways);
    hub.shutdown().await;
}
