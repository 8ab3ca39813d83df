//! Behavioural detection through a real gateway: a normal client trains the baselines, then an
//! enumerating client, a scanner and an odd value are flagged while the normal traffic keeps
//! passing. Each client connects from its own loopback address (127.0.0.x), as distinct
//! clients on a network would.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use apiguard_model::{EventKind, Finding, SecurityEvent};
use apiguard_testkit::TestUpstream;
use common::*;
use http::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::broadcast;

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
behavior:
  mode: enforce
  shape: {{min_samples: 20}}
routes:
  - id: all
    upstream: backend
access_log:
  enabled: false
reload:
  watch: false
"#
    )
}

fn client_from(local: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(local.parse().unwrap()));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The behaviour findings published so far, with the client address they were about.
fn drain(events: &mut broadcast::Receiver<Arc<SecurityEvent>>) -> Vec<(IpAddr, Finding)> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::RequestInspected { findings, .. } = &event.kind {
            for f in findings.iter().filter(|f| f.class == "behavior") {
                out.push((event.client_ip.expect("client ip"), f.clone()));
            }
        }
    }
    out
}

/// One round of a normal session: a few users' records, a catalogue with an enumerated
/// category, a search.
async fn normal_round(client: &TestClient, gw: &Harness, i: usize) {
    let category = ["books", "games", "music"][i % 3];
    for path in [
        format!("/echo/users/{}", i % 5 + 1),
        format!("/echo/products?category={category}&page={}", i % 3 + 1),
        format!("/echo/search?q=word{}", i % 7),
    ] {
        let reply = get(client, &gw.url(&path)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "normal request {path} refused"
        );
    }
}

#[tokio::test]
async fn learned_baselines_flag_enumeration_probing_and_odd_values_but_not_normal_traffic() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&config(upstream.addr())).await;
    let mut events = gw.gateway.subscribe();
    let normal = client_from("127.0.0.1");

    // Training: 40 normal rounds; nothing is flagged while learning what normal is.
    for i in 0..40 {
        normal_round(&normal, &gw, i).await;
    }
    assert_eq!(
        drain(&mut events),
        vec![],
        "normal training traffic was flagged"
    );

    let baselines = get(&h1_client(), &gw.admin_url("/behavior/baselines"))
        .await
        .json();
    let users = baselines["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["template"] == "/echo/users/{id}")
        .unwrap_or_else(|| panic!("no /echo/users/{{id}} baseline: {baselines}"));
    assert_eq!(users["learned"], true, "{users}");
    assert_eq!(users["params"]["path:3"]["class"], "numeric", "{users}");
    let products = baselines["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["template"] == "/echo/products")
        .unwrap();
    assert_eq!(
        products["params"]["query:category"]["values"],
        serde_json::json!(["books", "games", "music"])
    );

    // (a) Another client walks /users/1..200: enumeration (BOLA), refused once its bucket
    // overflows; the normal client keeps passing in between.
    let walker = client_from("127.0.0.2");
    let mut refused = 0;
    for id in 1..=200 {
        let reply = get(&walker, &gw.url(&format!("/echo/users/{id}"))).await;
        if reply.status == StatusCode::FORBIDDEN {
            refused += 1;
        }
        if id % 50 == 0 {
            normal_round(&normal, &gw, id).await;
        }
    }
    assert!(
        refused >= 100,
        "only {refused} of 200 walking requests were refused"
    );
    let found = drain(&mut events);
    let walker_ip: IpAddr = "127.0.0.2".parse().unwrap();
    let enumeration = found
        .iter()
        .find(|(ip, f)| *ip == walker_ip && f.rule_id == "behavior.enumeration")
        .unwrap_or_else(|| panic!("no enumeration finding: {found:?}"));
    assert!(
        enumeration
            .1
            .evidence
            .contains("distinct ids of /echo/users/{id}")
            && enumeration.1.evidence.contains("expected at most 30"),
        "{:?}",
        enumeration.1
    );
    assert!(
        found.iter().all(|(ip, _)| *ip == walker_ip),
        "someone else was flagged: {found:?}"
    );

    // (b) A scanner collects distinct 404s: probing; its later requests are refused.
    let scanner = client_from("127.0.0.3");
    let mut statuses = Vec::new();
    for i in 0..30 {
        let reply = get(&scanner, &gw.url(&format!("/missing-page-{i}"))).await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(
        statuses[..10],
        [404; 10],
        "the first misses reach the upstream"
    );
    assert!(
        statuses.ends_with(&[403; 10]),
        "the scanner was not stopped: {statuses:?}"
    );
    let found = drain(&mut events);
    let scanner_ip: IpAddr = "127.0.0.3".parse().unwrap();
    let probing = found
        .iter()
        .find(|(ip, f)| *ip == scanner_ip && f.rule_id == "behavior.probing")
        .unwrap_or_else(|| panic!("no probing finding: {found:?}"));
    assert!(
        probing.1.evidence.contains("answered 404"),
        "{:?}",
        probing.1
    );

    // (c) A non-numeric id where only numbers were seen: a shape finding that explains
    // itself (score 4, under the threshold of 5: it passes, flagged).
    let reply = get(&normal, &gw.url("/echo/users/alice")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let found = drain(&mut events);
    let shape = found
        .iter()
        .find(|(_, f)| f.rule_id == "behavior.shape.type")
        .unwrap_or_else(|| panic!("no shape finding: {found:?}"));
    assert_eq!(shape.1.target, "path:3");
    assert!(
        shape.1.evidence.contains("expected numeric")
            && shape.1.evidence.contains("`alice` (alphanumeric)"),
        "{:?}",
        shape.1
    );
    // An unseen category of a learned enumeration.
    let _ = get(&normal, &gw.url("/echo/products?category=internal&page=1")).await;
    let found = drain(&mut events);
    assert!(
        found
            .iter()
            .any(|(_, f)| f.rule_id == "behavior.shape.enum" && f.target == "query:category"),
        "{found:?}"
    );

    // The normal traffic still passes without a single finding.
    for i in 0..10 {
        normal_round(&normal, &gw, i).await;
    }
    assert_eq!(drain(&mut events), vec![], "normal traffic was flagged");

    // The admin API explains a client, and the gauges count what is tracked.
    let client = get(&h1_client(), &gw.admin_url("/behavior/clients/127.0.0.2"))
        .await
        .json();
    assert!(client["flagged"].as_u64().unwrap() >= 100, "{client}");
    assert!(
        client["recent_findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule_id"] == "behavior.enumeration"),
        "{client}"
    );
    let unknown = get(&h1_client(), &gw.admin_url("/behavior/clients/10.9.9.9")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = get(&h1_client(), &gw.admin_url("/behavior/clients/not-an-ip")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        metric(&gw, "apiguard_behavior_learned_endpoints")
            .await
            .unwrap()
            >= 3.0
    );
    assert_eq!(
        metric(&gw, "apiguard_behavior_tracked_clients").await,
        Some(3.0)
    );
    assert!(
        metric(
            &gw,
            "apiguard_findings_total{class=\"behavior\",rule=\"behavior.enumeration\"}"
        )
        .await
        .unwrap()
            >= 100.0
    );
}

#[tokio::test]
async fn learn_mode_observes_without_flagging_and_bad_settings_are_refused() {
    let upstream = TestUpstream::start().await.unwrap();
    let yaml = config(upstream.addr()).replace("mode: enforce", "mode: learn");
    let gw = start(&yaml).await;
    let mut events = gw.gateway.subscribe();
    let walker = client_from("127.0.0.4");
    for id in 1..=100 {
        let reply = get(&walker, &gw.url(&format!("/echo/users/{id}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "learn mode refused a request");
    }
    assert_eq!(drain(&mut events), vec![], "learn mode reported findings");
    // Yet the client was tracked: its enumeration bucket is full.
    let client = get(&h1_client(), &gw.admin_url("/behavior/clients/127.0.0.4"))
        .await
        .json();
    assert!(
        client["walks"]["/echo/users/{id}"].as_f64().unwrap() > 30.0,
        "{client}"
    );

    // A configuration with a zero capacity is rejected and the running one stays.
    gw.write_config(&yaml.replace(
        "shape: {min_samples: 20}",
        "shape: {min_samples: 20}\n  probing: {capacity: 0, leak: 0s}",
    ));
    let error = gw.gateway.reload("test").unwrap_err().to_string();
    assert!(
        error.contains("behavior.probing.capacity must be at least 1")
            && error.contains("behavior.probing.leak must be longer than 0"),
        "{error}"
    );
}

#[tokio::test]
async fn learned_baselines_survive_a_restart() {
    let upstream = TestUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baselines.json");
    let yaml = config(upstream.addr()).replace(
        "shape: {min_samples: 20}",
        &format!(
            "shape: {{min_samples: 20}}\n  persist_path: {}",
            file.display()
        ),
    );
    let first = start(&yaml).await;
    let normal = client_from("127.0.0.5");
    for i in 0..25 {
        normal_round(&normal, &first, i).await;
    }
    first.gateway.shutdown().await;
    assert!(file.exists(), "shutdown did not write the baselines");

    let second = start(&yaml).await;
    let mut events = second.gateway.subscribe();
    let reply = get(&client_from("127.0.0.5"), &second.url("/echo/users/alice")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let found = drain(&mut events);
    assert!(
        found
            .iter()
            .any(|(_, f)| f.rule_id == "behavior.shape.type"),
        "the restarted gateway forgot what it learned: {found:?}"
    );
}

#[tokio::test]
async fn browser_claims_without_browser_headers_are_flagged_and_api_clients_are_not() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&config(upstream.addr())).await;
    let mut events = gw.gateway.subscribe();
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    let send_as = |local: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let gw = &gw;
        async move {
            let mut request = http::Request::get(gw.url("/echo/products"));
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request.body(http_body_util::Full::default()).unwrap();
            send(&client_from(local), request).await.status
        }
    };
    // A real Chrome fetch over plain HTTP (no Sec-Fetch-* required there), curl, an SDK.
    let browser = vec![
        ("accept", "application/json"),
        ("user-agent", chrome),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", "en-GB,en;q=0.9"),
    ];
    assert_eq!(send_as("127.0.0.6", browser).await, StatusCode::OK);
    assert_eq!(
        send_as(
            "127.0.0.7",
            vec![("user-agent", "curl/8.5.0"), ("accept", "*/*")]
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        send_as("127.0.0.7", vec![("user-agent", "ShopSDK/2.3.0")]).await,
        StatusCode::OK
    );
    assert_eq!(drain(&mut events), vec![], "real clients were flagged");

    // python-requests wearing Chrome's User-Agent: flagged (4 points, under the threshold:
    // it passes) and explained.
    let spoofed = vec![
        ("user-agent", chrome),
        ("accept-encoding", "gzip, deflate"),
        ("accept", "*/*"),
    ];
    assert_eq!(send_as("127.0.0.8", spoofed).await, StatusCode::OK);
    let found = drain(&mut events);
    let bot = found
        .iter()
        .find(|(_, f)| f.rule_id == "behavior.bot.browser_headers")
        .unwrap_or_else(|| panic!("no bot finding: {found:?}"));
    assert_eq!(bot.0, "127.0.0.8".parse::<IpAddr>().unwrap());
    assert_eq!(bot.1.score, 4);
    assert!(
        bot.1
            .evidence
            .contains("observed a Chrome 124 User-Agent without Accept-Language"),
        "{:?}",
        bot.1
    );

    // Invalid settings of the new models are refused with their path.
    gw.write_config(&config(upstream.addr()).replace(
        "shape: {min_samples: 20}",
        "shape: {min_samples: 20}\n  sequence: {rare_ratio: 0.9}\n  accounts: {field: \"user..email\"}",
    ));
    let error = gw.gateway.reload("test").unwrap_err().to_string();
    assert!(
        error.contains("behavior.sequence.rare_ratio must be 0 to 0.5, not 0.9")
            && error.contains("behavior.accounts.field `user..email` must be a field name"),
        "{error}"
    );
}

#[tokio::test]
async fn the_client_view_explains_bot_signals_sequences_rates_accounts_and_blocks() {
    let upstream = TestUpstream::start().await.unwrap();
    let yaml = config(upstream.addr())
        .replace(
            "shape: {min_samples: 20}",
            "shape: {min_samples: 20}\n  accounts: {field: username}",
        )
        .replace(
            "access_log:",
            "heal:\n  mode: enforce\n  interval: 500ms\naccess_log:",
        );
    let gw = start(&yaml).await;
    let client = client_from("127.0.0.31");
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    let browser = |path: &str| {
        http::Request::get(gw.url(path))
            .header("accept", "application/json")
            .header("user-agent", chrome)
            .header("accept-encoding", "gzip, deflate")
            .header("accept-language", "en-GB,en;q=0.9")
            .body(http_body_util::Full::default())
            .unwrap()
    };
    assert_eq!(
        send(&client, browser("/echo/products")).await.status,
        StatusCode::OK
    );
    for attempt in 0..3 {
        let login = http::Request::post(gw.url("/status/401"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::from(format!(
                r#"{{"username":"Alice@Example.com","password":"guess{attempt}"}}"#
            )))
            .unwrap();
        assert_eq!(send(&client, login).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        send(&client, browser("/echo/cart")).await.status,
        StatusCode::OK
    );

    let view = get(&h1_client(), &gw.admin_url("/behavior/clients/127.0.0.31"))
        .await
        .json();
    assert_eq!(
        view["agents"][0]["stack_headers"], "user-agent, accept-encoding, accept-language",
        "{view:#}"
    );
    assert_eq!(view["last_endpoint"], "GET /echo/cart", "{view:#}");
    let windows = view["windows"].as_array().unwrap();
    assert!(
        windows
            .iter()
            .any(|w| w["scope"] == "GET /echo/products" && w["requests"] == 1),
        "{view:#}"
    );
    assert!(
        windows
            .iter()
            .any(|w| w["scope"] == "route all" && w["errors"] == 3),
        "the route window counts the 401s: {view:#}"
    );
    let account = &view["accounts"][0];
    assert_eq!(account["account"], "alice@example.com", "{view:#}");
    assert!(account["failures"].as_f64().unwrap() >= 2.5, "{view:#}");
    let fingerprint = view["enforcement"]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no fingerprint recorded: {view:#}"))
        .to_owned();
    assert!(view["enforcement"]["blocks"].as_array().unwrap().is_empty());

    // An operator blocks the browser's fingerprint: its requests are refused from any
    // address, another tool on the same address still passes, and the view shows the rule.
    let added = send(
        &h1_client(),
        http::Request::post(gw.admin_url("/enforcement/blocks"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::from(format!(
                r#"{{"target":"fingerprint:{fingerprint}","ttl":"1m"}}"#
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED);
    assert_eq!(
        send(&client, browser("/echo/products")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&client_from("127.0.0.32"), browser("/echo/products"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let view = get(&h1_client(), &gw.admin_url("/behavior/clients/127.0.0.31"))
        .await
        .json();
    assert_eq!(
        view["enforcement"]["blocks"][0]["target"],
        format!("fingerprint:{fingerprint}"),
        "{view:#}"
    );
    assert_eq!(
        get(&client, &gw.url("/echo/products")).await.status,
        StatusCode::OK,
        "another tool from the same address"
    );
    let unknown = get(&h1_client(), &gw.admin_url("/behavior/clients/user:nobody")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}
