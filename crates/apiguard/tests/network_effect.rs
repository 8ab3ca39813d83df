//! The network effect, end to end on the real RabbitMQ: gateway A blocks an attack from a
//! client address, reports it to the hub, the hub fans it out, and gateway B refuses a
//! harmless request from the same address, naming the shared indicator; when the hub's
//! operator withdraws the indicator as a false positive, B lets the address in again at
//! once, long before the block's own expiry.
//!
//! The hubs here run with `trust.k: 1` (set explicitly): one reporting organisation is
//! enough to publish, since these tests have two gateways; the default is 3.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_gateway::Gateway;
use apiguard_hub::{Hub, HubConfig, NewParticipant, Subscription};
use apiguard_model::EventKind;
use apiguard_testkit::TestUpstream;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const ADMIN_TOKEN: &str = "network-effect-admin-token";

/// A client whose connections come from `source` (any 127.0.0.0/8 address on Linux).
fn client_from(source: &str) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(source.parse::<IpAddr>().unwrap()));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn status(
    client: &Client<HttpConnector, Full<Bytes>>,
    gateway: SocketAddr,
    path: &str,
) -> StatusCode {
    let request = Request::get(format!("http://{gateway}{path}"))
        .header("host", "shop.example")
        .body(Full::default())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("an answer within 10 s")
        .expect("an answer")
        .status()
}

async fn gateway(
    dir: &std::path::Path,
    name: &str,
    upstream: SocketAddr,
    hub: SocketAddr,
    key: &str,
) -> Arc<Gateway> {
    let path = dir.join(format!("{name}.yaml"));
    let outbox = dir.join(format!("{name}-outbox"));
    std::fs::write(
        &path,
        format!(
            r#"
listeners:
  - address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
routes:
  - id: all
    upstream: backend
hub:
  url: http://{hub}
  api_key: {key}
  outbox: {outbox}
access_log:
  enabled: false
reload:
  watch: false
"#,
            outbox = outbox.display()
        ),
    )
    .unwrap();
    Gateway::start(&path).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_blocked_by_one_gateway_is_refused_by_the_other() {
    if !apiguard_testkit::require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("apiguard-test.{}", uuid_like());
    let yaml = format!(
        "listen: 127.0.0.1:0\nsecret: network-effect-secret-0123456789abcdef\nstore: sqlite://{}\nbroker:\n  url: amqp://guest:guest@127.0.0.1:5672/%2f\n  prefix: {prefix}\n  timeout: 3s\ntrust:\n  k: 1\nadmin_token_sha256: {}\n",
        dir.path().join("hub.db").display(),
        apiguard_hub::auth::hash_api_key(ADMIN_TOKEN)
    );
    let settings = HubConfig::parse(&yaml).unwrap().settings().unwrap();
    let hub = Hub::start(settings).await.unwrap();
    let everything: Subscription = serde_json::from_str("{}").unwrap();
    let mut keys = Vec::new();
    for (name, organisation) in [("gw-a", "Shop A"), ("gw-b", "Bank B")] {
        let (_, key) = hub
            .register(NewParticipant {
                name: name.into(),
                organisation: organisation.into(),
                own_networks: Vec::new(),
                own_hosts: vec!["shop.example".into()],
                subscription: everything.clone(),
            })
            .await
            .unwrap();
        keys.push(key);
    }
    let upstream = TestUpstream::start().await.unwrap();
    let a = gateway(dir.path(), "a", upstream.addr(), hub.local_addr(), &keys[0]).await;
    let b = gateway(dir.path(), "b", upstream.addr(), hub.local_addr(), &keys[1]).await;
    let (a_addr, b_addr) = (a.listen_addrs()[0], b.listen_addrs()[0]);
    let mut b_events = b.subscribe();

    let attacker = client_from("127.0.0.77");
    let bystander = client_from("127.0.0.78");
    assert_eq!(
        status(&attacker, b_addr, "/echo?q=shoes").await,
        StatusCode::OK
    );

    let attacked = Instant::now();
    assert_eq!(
        status(
            &attacker,
            a_addr,
            "/echo?id=1%27%20UNION%20SELECT%20password%20FROM%20users--"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // B refuses the attacker's harmless request once the indicator arrives.
    let mut protected = None;
    while attacked.elapsed() < Duration::from_secs(15) {
        if status(&attacker, b_addr, "/echo?q=shoes").await == StatusCode::FORBIDDEN {
            protected = Some(attacked.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let protected = protected.expect("gateway B never blocked the attacker");
    eprintln!("time to protect: {protected:?}");
    let evidence = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = b_events.recv().await.unwrap();
            if let EventKind::RequestInspected { findings, .. } = &event.kind
                && let Some(f) = findings.iter().find(|f| f.rule_id == "enforcement.block")
            {
                return (event.client_ip, f.evidence.clone());
            }
        }
    })
    .await
    .expect("B published the refusal");
    assert_eq!(evidence.0, Some("127.0.0.77".parse().unwrap()));
    assert!(
        evidence.1.contains("blocked by hub") && evidence.1.contains("indicator "),
        "{}",
        evidence.1
    );
    let rules = b.enforcement().rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].source, "hub");
    assert!(rules[0].indicator.is_some());
    // The hub does not send a report back to its reporter: A keeps only its own decision.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a.enforcement().rules().is_empty(),
        "gateway A received its own report back"
    );
    // Nobody else is affected, and the reporter is not named.
    assert_eq!(
        status(&bystander, b_addr, "/echo?q=shoes").await,
        StatusCode::OK
    );
    assert!(!rules[0].reason.contains("Shop A") && !rules[0].reason.contains("gw-a"));
    let block_until = rules[0].until_ms;

    // The hub's operator withdraws the indicator as a false positive: B lifts its block at
    // once, though the rule had about an hour to run.
    let request = Request::post(format!("http://{}/admin/withdrawals", hub.local_addr()))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"indicator\": \"127.0.0.77\"}",
        )))
        .unwrap();
    let answer = client_from("127.0.0.1").request(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let withdrawn = Instant::now();
    let mut lifted = None;
    while withdrawn.elapsed() < Duration::from_secs(15) {
        if status(&attacker, b_addr, "/echo?q=shoes").await == StatusCode::OK {
            lifted = Some(withdrawn.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lifted = lifted.expect("gateway B never lifted the withdrawn block");
    eprintln!("withdrawal applied after {lifted:?}");
    assert!(b.enforcement().rules().is_empty());
    assert!(
        block_until > apiguard_model::event::now_ms() + 30 * 60 * 1000,
        "the block was lifted long before its own expiry"
    );

    drop((a, b));
    hub.shutdown().await;
}

/// A queue prefix no other test (in this process or another) uses.
fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:x}-{:x}-{n}",
        std::process::id(),
        apiguard_model::event::now_ms()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_in_the_outbox_while_the_hub_is_down_and_arrive_once_it_is_back() {
    if !apiguard_testkit::require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let dir = tempfile::tempdir().unwrap();
    let port = apiguard_testkit::free_port();
    let prefix = format!("apiguard-test.{}", uuid_like());
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nsecret: network-effect-secret-0123456789abcdef\nstore: sqlite://{}\nbroker:\n  url: amqp://guest:guest@127.0.0.1:5672/%2f\n  prefix: {prefix}\n  timeout: 3s\ntrust:\n  k: 1\n",
        dir.path().join("hub.db").display()
    );
    let settings = || HubConfig::parse(&yaml).unwrap().settings().unwrap();
    // Register both participants, then take the hub down.
    let hub = Hub::start(settings()).await.unwrap();
    let everything: Subscription = serde_json::from_str("{}").unwrap();
    let mut keys = Vec::new();
    for name in ["gw-a", "gw-b"] {
        let (_, key) = hub
            .register(NewParticipant {
                name: name.into(),
                organisation: format!("org of {name}"),
                own_networks: Vec::new(),
                own_hosts: Vec::new(),
                subscription: everything.clone(),
            })
            .await
            .unwrap();
        keys.push(key);
    }
    let hub_addr = hub.local_addr();
    hub.shutdown().await;

    let upstream = TestUpstream::start().await.unwrap();
    let a = gateway(dir.path(), "a", upstream.addr(), hub_addr, &keys[0]).await;
    let attackers = ["127.0.0.91", "127.0.0.92", "127.0.0.93"];
    for source in attackers {
        assert_eq!(
            status(
                &client_from(source),
                a.listen_addrs()[0],
                "/echo?f=..%2F..%2F..%2Fetc%2Fpasswd"
            )
            .await,
            StatusCode::FORBIDDEN
        );
    }
    let outbox = dir.path().join("a-outbox");
    let pending = || {
        std::fs::read_dir(&outbox)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    };
    let waited = Instant::now();
    while pending() < attackers.len() && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pending(),
        attackers.len(),
        "reports wait on disk while the hub is down"
    );

    // The hub comes back on the same address; B subscribes; A's outbox drains.
    let hub = Hub::start(settings()).await.unwrap();
    let b = gateway(dir.path(), "b", upstream.addr(), hub_addr, &keys[1]).await;
    let waited = Instant::now();
    while (pending() > 0 || b.enforcement().rules().len() < attackers.len())
        && waited.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending(), 0, "the outbox drained");
    let mut blocked: Vec<String> = b
        .enforcement()
        .rules()
        .iter()
        .map(|r| r.target.to_string())
        .collect();
    blocked.sort();
    assert_eq!(
        blocked, attackers,
        "every waiting report reached the other gateway"
    );
    for source in attackers {
        assert_eq!(
            status(&client_from(source), b.listen_addrs()[0], "/echo").await,
            StatusCode::FORBIDDEN
        );
    }
    drop((a, b));
    hub.shutdown().await;
}
