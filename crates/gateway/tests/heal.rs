//! Self-healing chaos tests with real sockets: real upstreams that start failing, a config
//! push that breaks a route, attack bursts from loopback addresses (127.0.0.x), a canaried
//! prefix rule that meets a legitimate client, an abusive client (by address and by
//! identity). Each asserts what a user notices (the state reached, the answers clients get)
//! with generous bounds, and prints the timings recorded in docs/benchmarks.md
//! ("Self-healing").

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiguard_testkit::{TestUpstream, UpstreamMode, free_port};
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const SQLI: &str = "1%27%20UNION%20SELECT%20password%20FROM%20users--";

/// A client whose connections leave from `ip` (any 127.0.0.0/8 address works on loopback).
fn client_from(ip: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip.parse::<IpAddr>().unwrap()));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn admin_json(gw: &Harness, path: &str) -> Value {
    get(&h1_client(), &gw.admin_url(path)).await.json()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One answered request of a load generator.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    status: u16,
    upstream: String,
}

/// Steady traffic from one client, one request at a time every `every`.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: TestClient, url: String, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, samples) = (stop.clone(), samples.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let request = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
                    let (status, upstream) = match tokio::time::timeout(
                        Duration::from_secs(10),
                        client.request(request),
                    )
                    .await
                    {
                        Ok(Ok(response)) => {
                            let status = response.status().as_u16();
                            let upstream = response
                                .headers()
                                .get("x-upstream")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_owned();
                            let _ = response.into_body().collect().await;
                            (status, upstream)
                        }
                        _ => (0, "-".to_owned()),
                    };
                    samples.lock().unwrap().push(Sample {
                        sent,
                        status,
                        upstream,
                    });
                    tokio::time::sleep(every).await;
                }
            }
        });
        Load {
            stop,
            samples,
            task,
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    fn first_after(&self, after: Instant, matches: impl Fn(&Sample) -> bool) -> Option<Sample> {
        self.samples()
            .into_iter()
            .find(|s| s.sent >= after && matches(s))
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.samples.lock().unwrap().clone()
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Milliseconds since the Unix epoch (the clock of `applied_at_ms` and incident times).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The newest incident of `kind`.
async fn incident_of(gw: &Harness, kind: &str) -> Option<Value> {
    let list = admin_json(gw, "/heal/incidents").await;
    let summary = list["incidents"]
        .as_array()?
        .iter()
        .find(|i| i["kind"] == kind)?
        .clone();
    Some(admin_json(gw, &format!("/heal/incidents/{}", summary["id"])).await)
}

fn path_of(incident: &Value) -> Vec<String> {
    incident["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap().to_owned())
        .collect()
}

fn pools_config(primary: SocketAddr, fallback: Option<SocketAddr>, heal: &str) -> String {
    let (fallback_line, backup) = match fallback {
        Some(addr) => (
            "    fallback: backup\n".to_owned(),
            format!("  backup:\n    targets: [\"{addr}\"]\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  primary:
    targets: ["{primary}"]
    retries: 0
{fallback_line}{backup}routes:
  - id: api
    upstream: primary
heal:
{heal}
access_log:
  enabled: false
reload:
  watch: false
  drain_timeout: 1s
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_rerouted_to_its_fallback_and_comes_back_after_probes() {
    let primary = TestUpstream::start_named("primary").await.unwrap();
    let backup = TestUpstream::start_named("backup").await.unwrap();
    let heal = "  mode: enforce\n  interval: 250ms\n  min_requests: 5\n  circuit:\n    open: 2s\n    probe_percent: 50\n    min_probes: 2";
    let gw = start(&pools_config(primary.addr(), Some(backup.addr()), heal)).await;
    let load = Load::start(h1_client(), gw.url("/echo"), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        load.samples()
            .iter()
            .all(|s| s.status == 200 && s.upstream == "primary")
    );

    let onset = Instant::now();
    primary.set_mode(UpstreamMode::Failing).await;
    let rerouted = wait_for(
        Duration::from_secs(10),
        "a request served by the fallback",
        || async { load.first_after(onset, |s| s.upstream == "backup" && s.status == 200) },
    )
    .await;
    let incident = wait_for(Duration::from_secs(10), "a verified incident", || async {
        incident_of(&gw, "upstream_failing")
            .await
            .filter(|i| i["state"] == "normal")
    })
    .await;
    let verified_seen = Instant::now();
    assert_eq!(
        path_of(&incident),
        [
            "degraded",
            "analysis",
            "remediation",
            "verification",
            "normal"
        ],
        "{incident:#}"
    );
    assert_eq!(incident["subject"], "pool:primary");
    let action = &incident["action_records"][0];
    assert_eq!(action["kind"], "reroute", "{action:#}");
    assert!(
        incident["transitions"][0]["evidence"][0]
            .as_str()
            .unwrap()
            .contains("upstream attempts failed")
    );
    let failed = load
        .samples()
        .iter()
        .filter(|s| s.sent >= onset && s.status != 200)
        .count();
    // Every request after the reroute is answered by the fallback.
    let after_reroute: Vec<_> = load
        .samples()
        .into_iter()
        .filter(|s| s.sent > rerouted.sent && s.sent < verified_seen)
        .collect();
    assert!(!after_reroute.is_empty());
    assert!(
        after_reroute.iter().all(|s| s.status == 200),
        "{after_reroute:?}"
    );

    // The primary recovers: half-open probes find it well and the circuit closes.
    let recovered = Instant::now();
    primary.set_mode(UpstreamMode::Healthy).await;
    wait_for(
        Duration::from_secs(20),
        "traffic back on the primary",
        || async {
            load.first_after(recovered + Duration::from_millis(2500), |s| {
                s.upstream == "primary"
            })
        },
    )
    .await;
    wait_for(Duration::from_secs(10), "the circuit closed", || async {
        let status = admin_json(&gw, "/heal").await;
        status["circuits"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let back = Instant::now();
    let samples = load.stop().await;
    let metrics = get(&h1_client(), &gw.admin_url("/metrics")).await.body;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(r#"apiguard_heal_actions_total{kind="reroute",outcome="verified"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"apiguard_heal_incidents{state="normal"} 1"#));
    println!(
        "upstream failing → reroute: first fallback answer {} ms after onset; incident: mitigation {} ms, verification {} ms after its onset window; legitimate requests failed: {failed} of {}; back on the primary {} ms after it recovered",
        ms(rerouted.sent - onset),
        incident["summary"]["time_to_mitigation_ms"],
        incident["summary"]["time_to_verification_ms"],
        samples.iter().filter(|s| s.sent >= onset).count(),
        ms(back - recovered),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fallback_the_circuit_opens_answers_503_at_once_and_spares_the_upstream() {
    let primary = TestUpstream::start_named("primary").await.unwrap();
    let heal = "  mode: enforce\n  interval: 250ms\n  min_requests: 5\n  circuit:\n    open: 3s\n    probe_percent: 50\n    min_probes: 2";
    let gw = start(&pools_config(primary.addr(), None, heal)).await;
    let load = Load::start(h1_client(), gw.url("/echo"), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let onset = Instant::now();
    primary.set_mode(UpstreamMode::Failing).await;
    let client = h1_client();
    let refused = wait_for(
        Duration::from_secs(10),
        "a 503 from the circuit",
        || async {
            let reply = get(&client, &gw.url("/echo")).await;
            (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(reply)
        },
    )
    .await;
    let opened = Instant::now();
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("held back")
    );
    // While open, no client request reaches the failing upstream.
    let reached = primary.request_count();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        primary.request_count(),
        reached,
        "the open circuit let requests through"
    );
    let incident = wait_for(Duration::from_secs(5), "a contained incident", || async {
        incident_of(&gw, "upstream_failing")
            .await
            .filter(|i| i["state"] == "normal")
    })
    .await;
    assert_eq!(incident["action_records"][0]["kind"], "circuit_break");

    primary.set_mode(UpstreamMode::Healthy).await;
    let healthy = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "200 again after half-open probes",
        || async { load.first_after(healthy + Duration::from_millis(2000), |s| s.status == 200) },
    )
    .await;
    let samples = load.stop().await;
    println!(
        "upstream failing, no fallback → circuit open: first 503 from the circuit {} ms after onset; incident mitigation {} ms, verification {} ms; requests failed during the episode: {} of {}",
        ms(opened - onset),
        incident["summary"]["time_to_mitigation_ms"],
        incident["summary"]["time_to_verification_ms"],
        samples
            .iter()
            .filter(|s| s.sent >= onset && s.sent < healthy && s.status != 200)
            .count(),
        samples
            .iter()
            .filter(|s| s.sent >= onset && s.sent < healthy)
            .count(),
    );
}

fn rollback_config(route_upstream: &str, primary: SocketAddr, dead: u16) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  primary:
    targets: ["{primary}"]
  dead:
    targets: ["127.0.0.1:{dead}"]
    retries: 0
routes:
  - id: api
    upstream: {route_upstream}
heal:
  mode: enforce
  interval: 250ms
  min_requests: 5
  rollback:
    stable_after: 1s
access_log:
  enabled: false
reload:
  watch: true
  watch_interval: 100ms
  drain_timeout: 1s
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_push_that_breaks_a_route_is_rolled_back_to_the_last_known_good_version() {
    let primary = TestUpstream::start_named("primary").await.unwrap();
    let dead = free_port();
    let gw = start(&rollback_config("primary", primary.addr(), dead)).await;
    let load = Load::start(h1_client(), gw.url("/echo"), Duration::from_millis(10));
    wait_for(Duration::from_secs(10), "version 1 known good", || async {
        let versions = admin_json(&gw, "/config/versions").await;
        (versions["versions"][0]["known_good"] == true).then_some(())
    })
    .await;

    let pushed = Instant::now();
    let pushed_ms = wall_ms();
    gw.write_config(&rollback_config("dead", primary.addr(), dead));
    let versions = wait_for(Duration::from_secs(20), "a rollback", || async {
        let versions = admin_json(&gw, "/config/versions").await;
        (versions["current"].as_u64() > Some(2)).then_some(versions)
    })
    .await;
    let rolled_back = Instant::now();
    let list = versions["versions"].as_array().unwrap();
    let bad = list.iter().find(|v| v["version"] == 2).expect("version 2");
    assert_eq!(bad["trigger"], "file_change");
    let current = list.last().unwrap().clone();
    assert_eq!(current["version"], 3, "{versions:#}");
    assert_eq!(current["trigger"], "rollback by heal", "{versions:#}");
    assert_eq!(current["hash"], list[0]["hash"], "version 1's text");
    assert_eq!(current["known_good"], true);
    let applied_ms = bad["applied_at_ms"].as_u64().unwrap();
    let rollback_ms = current["applied_at_ms"].as_u64().unwrap() - applied_ms;
    assert!(
        rollback_ms < 10_000,
        "goal: rollback within 10 s of the bad config, took {rollback_ms} ms"
    );
    let served = wait_for(
        Duration::from_secs(5),
        "the route serving again",
        || async { load.first_after(rolled_back, |s| s.status == 200 && s.upstream == "primary") },
    )
    .await;
    // The bad file is still on disk: the watcher does not apply it again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(admin_json(&gw, "/config/versions").await["current"], 3);
    let incident = wait_for(Duration::from_secs(5), "a verified rollback", || async {
        incident_of(&gw, "config_regression")
            .await
            .filter(|i| i["state"] == "normal")
    })
    .await;
    assert_eq!(incident["action_records"][0]["kind"], "rollback");
    assert_eq!(incident["action_records"][0]["state"], "verified");
    assert!(
        incident["transitions"][0]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("route `api`")),
        "{incident:#}"
    );
    let samples = load.stop().await;
    println!(
        "bad config push → rollback: applied {} ms after the file was written, rolled back {rollback_ms} ms after it applied; a request served again {} ms after the rollback was seen; incident mitigation {} ms, verification {} ms; requests failed: {} of {}",
        applied_ms.saturating_sub(pushed_ms),
        ms(served.sent.saturating_duration_since(rolled_back)),
        incident["summary"]["time_to_mitigation_ms"],
        incident["summary"]["time_to_verification_ms"],
        samples
            .iter()
            .filter(|s| s.sent >= pushed && s.status != 200)
            .count(),
        samples.iter().filter(|s| s.sent >= pushed).count(),
    );
}

/// A webhook receiver: every POST body, as JSON.
async fn webhook_receiver() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                                store.lock().unwrap().push(value);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                Full::<Bytes>::default(),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn attack_config(upstream: SocketAddr, heal_extra: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
routes:
  - id: api
    upstream: backend
heal:
  mode: enforce
  interval: 500ms
{heal_extra}
access_log:
  enabled: false
reload:
  watch: false
  drain_timeout: 1s
"#
    )
}

/// Sends `n` attacks from `client`, one after the other.
async fn attack(gw: &Harness, client: &TestClient, n: usize) {
    for _ in 0..n {
        let reply = get(client, &gw.url(&format!("/echo?id={SQLI}"))).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
}

/// The time until a plain request from `client` is refused.
async fn until_refused(gw: &Harness, client: &TestClient) -> Instant {
    wait_for(Duration::from_secs(10), "the attacker refused", || async {
        let reply = get(client, &gw.url("/echo")).await;
        (reply.status == StatusCode::FORBIDDEN).then(Instant::now)
    })
    .await
}

async fn heal_rule(gw: &Harness, target: &str) -> Option<Value> {
    admin_json(gw, "/enforcement/blocks").await["rules"]
        .as_array()?
        .iter()
        .find(|r| r["target"] == target && r["source"] == "heal")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attack_burst_is_blocked_within_a_decision_interval_repeat_offenders_longer_and_state_survives_a_restart()
 {
    let upstream = TestUpstream::start().await.unwrap();
    let (hook_addr, webhook_calls) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let command_out = dir.path().join("hook.json");
    let state_file = dir.path().join("heal-state.json");
    let extra = format!(
        r#"  persist_path: "{}"
  block:
    ttl: 2s
  hooks:
    - name: pager
      webhook: "http://{hook_addr}/incidents"
      on: [opened, resolved]
    - name: recorder
      command: ["tee", "{}"]
      on: [opened]"#,
        state_file.display(),
        command_out.display()
    );
    let config = attack_config(upstream.addr(), &extra);
    let gw = start(&config).await;
    let legit = Load::start(
        client_from("127.0.0.10"),
        gw.url("/echo"),
        Duration::from_millis(20),
    );
    let attacker = client_from("127.0.0.66");
    assert_eq!(
        get(&attacker, &gw.url("/echo")).await.status,
        StatusCode::OK
    );

    let burst = Instant::now();
    attack(&gw, &attacker, 10).await;
    let blocked = until_refused(&gw, &attacker).await;
    let rule = heal_rule(&gw, "127.0.0.66")
        .await
        .expect("a heal rule on the attacker");
    let first_ttl = rule["until_ms"].as_u64().unwrap() - rule["created_ms"].as_u64().unwrap();
    assert!((1_900..=2_100).contains(&first_ttl), "{rule}");
    assert!(
        blocked - burst < Duration::from_secs(3),
        "the attacker was blocked {} ms after its burst began",
        ms(blocked - burst)
    );
    let incident = wait_for(
        Duration::from_secs(5),
        "a verified attack incident",
        || async {
            incident_of(&gw, "attack")
                .await
                .filter(|i| i["state"] == "normal")
        },
    )
    .await;
    assert_eq!(incident["subject"], "client:127.0.0.66");
    assert!(
        incident["transitions"][0]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("at query:id")),
        "the evidence names the findings: {incident:#}"
    );

    // The block expires; the same address attacks again and is blocked twice as long.
    wait_for(
        Duration::from_secs(6),
        "the first block expired",
        || async {
            (get(&attacker, &gw.url("/echo")).await.status == StatusCode::OK).then_some(())
        },
    )
    .await;
    attack(&gw, &attacker, 10).await;
    until_refused(&gw, &attacker).await;
    let rule = heal_rule(&gw, "127.0.0.66")
        .await
        .expect("a second heal rule");
    let second_ttl = rule["until_ms"].as_u64().unwrap() - rule["created_ms"].as_u64().unwrap();
    assert!(
        (3_900..=4_100).contains(&second_ttl),
        "escalated TTL: {rule}"
    );
    let samples = legit.stop().await;
    assert!(
        samples.iter().all(|s| s.status == 200),
        "the legitimate neighbour was never refused"
    );

    // Hooks: the webhook heard of the incidents opening and resolving; the command got one.
    let calls = wait_for(Duration::from_secs(5), "webhook calls", || async {
        let calls = webhook_calls.lock().unwrap().clone();
        let resolved = calls.iter().any(|c| c["event"] == "resolved");
        resolved.then_some(calls)
    })
    .await;
    assert!(
        calls
            .iter()
            .any(|c| c["event"] == "opened" && c["incident"]["subject"] == "client:127.0.0.66")
    );
    let written = wait_for(
        Duration::from_secs(5),
        "the command hook's output",
        || async {
            std::fs::read_to_string(&command_out)
                .ok()
                .filter(|t| !t.is_empty())
        },
    )
    .await;
    let written: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(written["event"], "opened");
    let audit = admin_json(&gw, "/heal/incidents/1").await["audit"].clone();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"].as_str().unwrap().contains("hook `pager`")),
        "hook results are audited: {audit:#}"
    );

    // A restart keeps the incidents, their transitions and the block still in effect.
    let before = admin_json(&gw, "/heal/incidents").await["incidents"].clone();
    let again = restart(gw).await;
    let after = admin_json(&again, "/heal/incidents").await["incidents"].clone();
    assert_eq!(
        after.as_array().unwrap().len(),
        before.as_array().unwrap().len()
    );
    assert_eq!(after[0]["id"], before[0]["id"]);
    let detail = admin_json(&again, "/heal/incidents/1").await;
    assert_eq!(path_of(&detail).len(), 5, "{detail:#}");
    if let Some(rule) = heal_rule(&again, "127.0.0.66").await {
        assert!(rule["reason"].as_str().unwrap().contains("reinstated"));
        assert_eq!(
            get(&attacker, &again.url("/echo")).await.status,
            StatusCode::FORBIDDEN
        );
    } else {
        panic!("the attacker's block (4 s) was not reinstated after the restart");
    }
    println!(
        "attack burst → block: the attacker's plain requests refused {} ms after its burst began (decision interval 500 ms); first block {first_ttl} ms, repeat {second_ttl} ms; incident mitigation {} ms after its onset window; legitimate requests refused: 0 of {}",
        ms(blocked - burst),
        incident["summary"]["time_to_mitigation_ms"],
        samples.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canaried_prefix_rule_that_hits_a_legitimate_client_is_reverted() {
    let upstream = TestUpstream::start().await.unwrap();
    // The victim is about a third of the traffic (the rest comes from another /24): under
    // the traffic-share guardrail set here, so the prefix rule is tried, as a canary.
    let extra = "  block:\n    ttl: 60s\n  canary:\n    share_percent: 50\n    duration: 30s\n    good_history: 5\n  guardrails:\n    max_traffic_share: 50";
    let gw = start(&attack_config(upstream.addr(), extra)).await;
    let victim = Load::start(
        client_from("127.0.0.10"),
        gw.url("/echo"),
        Duration::from_millis(20),
    );
    let others = Load::start(
        client_from("127.0.1.20"),
        gw.url("/echo"),
        Duration::from_millis(5),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = admin_json(&gw, "/heal").await["thresholds"]["prefix_offenders"]
        .as_f64()
        .unwrap();

    let attackers: Vec<TestClient> = ["127.0.0.101", "127.0.0.102", "127.0.0.103"]
        .iter()
        .map(|ip| client_from(ip))
        .collect();
    let burst = Instant::now();
    for attacker in &attackers {
        attack(&gw, attacker, 8).await;
    }
    let canary = wait_for(
        Duration::from_secs(10),
        "a canaried prefix rule",
        || async {
            admin_json(&gw, "/heal/actions").await["actions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["spec"]["target"] == "127.0.0.0/24")
                .cloned()
        },
    )
    .await;
    let canary_seen = Instant::now();
    assert_eq!(canary["spec"]["canary_percent"], 50, "{canary:#}");
    assert_ne!(canary["state"], "refused", "{canary:#}");
    let reverted = wait_for(Duration::from_secs(10), "the canary reverted", || async {
        admin_json(&gw, "/heal/actions").await["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == canary["id"] && a["state"] == "reverted")
            .cloned()
    })
    .await;
    let reverted_seen = Instant::now();
    let notes: Vec<&str> = reverted["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("127.0.0.10") && n.contains("history")),
        "{notes:?}"
    );
    assert!(
        heal_rule(&gw, "127.0.0.0/24").await.is_none(),
        "the prefix rule is gone"
    );

    // After the revert, no legitimate request is refused; the offenders stay blocked.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let samples = victim.stop().await;
    let other_samples = others.stop().await;
    assert!(
        other_samples.iter().all(|s| s.status == 200),
        "a client outside the prefix was refused"
    );
    let after: Vec<_> = samples.iter().filter(|s| s.sent >= reverted_seen).collect();
    assert!(after.len() >= 20, "{}", after.len());
    assert!(
        after.iter().all(|s| s.status == 200),
        "a legitimate request was refused after the revert"
    );
    for attacker in &attackers {
        assert_eq!(
            get(attacker, &gw.url("/echo")).await.status,
            StatusCode::FORBIDDEN
        );
    }
    let incident = wait_for(
        Duration::from_secs(5),
        "the prefix incident closed",
        || async {
            incident_of(&gw, "distributed_attack")
                .await
                .filter(|i| i["state"] == "normal")
        },
    )
    .await;
    assert!(
        incident["outcome"]
            .as_str()
            .unwrap()
            .contains("false alarm")
    );
    let after_threshold = admin_json(&gw, "/heal").await["thresholds"]["prefix_offenders"]
        .as_f64()
        .unwrap();
    assert!(
        after_threshold > before,
        "learning: {before} → {after_threshold}"
    );
    let during: Vec<_> = samples
        .iter()
        .filter(|s| s.sent >= burst && s.sent < reverted_seen)
        .collect();
    println!(
        "canaried prefix rule: seen {} ms after the burst began, reverted {} ms after it was seen; legitimate requests refused during the canary: {} of {}; after the revert: 0 of {}; prefix threshold {before} → {after_threshold}",
        ms(canary_seen - burst),
        ms(reverted_seen - canary_seen),
        during.iter().filter(|s| s.status != 200).count(),
        during.len(),
        after.len(),
    );
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const MALLORY_KEY: &str = "mallory-key-0123456789";
const BOB_KEY: &str = "bob-key-0123456789";

/// A GET with an API key.
async fn get_as(client: &TestClient, url: &str, key: &str) -> Reply {
    let request = Request::get(url)
        .header("x-api-key", key)
        .body(Full::<Bytes>::default())
        .unwrap();
    send(client, request).await
}

/// A legitimate identity sending plain requests in the background until `finish`, which
/// returns every status it got.
struct Bystander {
    statuses: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Bystander {
    fn start(client: &TestClient, url: String, key: &'static str, every: Duration) -> Self {
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let client = client.clone();
            let (statuses, stop) = (statuses.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let status = get_as(&client, &url, key).await.status.as_u16();
                    statuses.lock().unwrap().push(status);
                    tokio::time::sleep(every).await;
                }
            }
        });
        Bystander {
            statuses,
            stop,
            task,
        }
    }

    async fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.statuses.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_attacker_is_blocked_by_identity_while_another_identity_on_its_address_keeps_working()
 {
    let upstream = TestUpstream::start().await.unwrap();
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
auth:
  providers:
    partners:
      api_keys:
        keys:
          - name: mallory
            sha256: {mallory}
          - name: bob
            sha256: {bob}
routes:
  - id: api
    upstream: backend
    auth:
      providers: [partners]
heal:
  mode: enforce
  interval: 500ms
access_log:
  enabled: false
reload:
  watch: false
"#,
        upstream = upstream.addr(),
        mallory = sha256_hex(MALLORY_KEY),
        bob = sha256_hex(BOB_KEY),
    );
    let gw = start(&config).await;
    // Both leave from one address, as users behind one NAT or corporate proxy do.
    let shared_address = client_from("127.0.0.90");
    let bob = Bystander::start(
        &shared_address,
        gw.url("/echo"),
        BOB_KEY,
        Duration::from_millis(20),
    );
    let burst = Instant::now();
    for _ in 0..10 {
        let reply = get_as(
            &shared_address,
            &gw.url(&format!("/echo?id={SQLI}")),
            MALLORY_KEY,
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    let blocked = wait_for(Duration::from_secs(10), "mallory refused", || async {
        let reply = get_as(&shared_address, &gw.url("/echo"), MALLORY_KEY).await;
        (reply.status == StatusCode::FORBIDDEN).then(Instant::now)
    })
    .await;
    let rule = heal_rule(&gw, "identity:mallory")
        .await
        .expect("a heal rule on mallory's identity");
    assert!(rule.get("canary_percent").is_none(), "{rule}");
    assert!(
        heal_rule(&gw, "127.0.0.90").await.is_none(),
        "the shared address is not blocked"
    );
    // The rule follows the identity to another address, and spares bob on the shared one.
    assert_eq!(
        get_as(&client_from("127.0.0.91"), &gw.url("/echo"), MALLORY_KEY)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_as(&shared_address, &gw.url("/echo"), BOB_KEY)
            .await
            .status,
        StatusCode::OK
    );
    let incident = wait_for(
        Duration::from_secs(5),
        "a verified attack incident",
        || async {
            incident_of(&gw, "attack")
                .await
                .filter(|i| i["state"] == "normal")
        },
    )
    .await;
    assert_eq!(incident["subject"], "client:identity:mallory");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bob_statuses = bob.finish().await;
    assert!(!bob_statuses.is_empty());
    assert!(
        bob_statuses.iter().all(|s| *s == 200),
        "bob, on mallory's address, was never refused: {bob_statuses:?}"
    );
    println!(
        "authenticated attack burst → identity block: mallory refused {} ms after its burst began (decision interval 500 ms); bob on the same address: 0 of {} requests refused",
        ms(blocked - burst),
        bob_statuses.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abusive_client_is_throttled_and_its_neighbours_are_not() {
    let upstream = TestUpstream::start().await.unwrap();
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{}"]
routes:
  - id: api
    upstream: backend
    rate_limit:
      - {{name: per-client, key: client, rate: 20, per: 1s}}
heal:
  mode: enforce
  interval: 500ms
  thresholds:
    abuse_refusals: 10
  throttle:
    rate: 2
    ttl: 30s
access_log:
  enabled: false
reload:
  watch: false
"#,
        upstream.addr()
    );
    let gw = start(&config).await;
    let abuser = client_from("127.0.0.77");
    let neighbour = client_from("127.0.0.78");
    let started = Instant::now();
    let mut refused_by_limit = 0;
    for _ in 0..60 {
        if get(&abuser, &gw.url("/echo")).await.status == StatusCode::TOO_MANY_REQUESTS {
            refused_by_limit += 1;
        }
    }
    assert!(refused_by_limit >= 10, "{refused_by_limit}");
    let throttle = wait_for(
        Duration::from_secs(10),
        "a throttle on the abuser",
        || async {
            admin_json(&gw, "/heal").await["throttles"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["scope"]["key"] == "127.0.0.77")
                .cloned()
        },
    )
    .await;
    let throttled = Instant::now();
    assert_eq!(throttle["rate_per_s"], 2.0);
    // The abuser now gets 429 with Retry-After from the throttle, well under the route's
    // own limit; the neighbour is untouched.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut ok = 0;
    for _ in 0..10 {
        let reply = get(&abuser, &gw.url("/echo")).await;
        if reply.status == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    assert!(
        ok <= 3,
        "{ok} of 10 back-to-back requests passed a 2/s throttle"
    );
    for _ in 0..5 {
        assert_eq!(
            get(&neighbour, &gw.url("/echo")).await.status,
            StatusCode::OK
        );
    }
    let incident = wait_for(
        Duration::from_secs(5),
        "a verified abuse incident",
        || async {
            incident_of(&gw, "abuse")
                .await
                .filter(|i| i["state"] == "normal")
        },
    )
    .await;
    assert_eq!(incident["action_records"][0]["kind"], "throttle");
    println!(
        "abusive client → throttle: in effect {} ms after the abuse began",
        ms(throttled - started)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abusive_identity_is_throttled_by_identity_while_another_identity_on_its_address_is_not()
{
    let upstream = TestUpstream::start().await.unwrap();
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
auth:
  providers:
    partners:
      api_keys:
        keys:
          - name: mallory
            sha256: {mallory}
          - name: bob
            sha256: {bob}
routes:
  - id: api
    upstream: backend
    auth:
      providers: [partners]
    rate_limit:
      - {{name: per-identity, key: identity, rate: 20, per: 1s}}
heal:
  mode: enforce
  interval: 500ms
  thresholds:
    abuse_refusals: 10
  throttle:
    rate: 2
    ttl: 30s
access_log:
  enabled: false
reload:
  watch: false
"#,
        upstream = upstream.addr(),
        mallory = sha256_hex(MALLORY_KEY),
        bob = sha256_hex(BOB_KEY),
    );
    let gw = start(&config).await;
    // Both leave from one address, as users behind one NAT or corporate proxy do; bob stays
    // well under the identity limit.
    let shared_address = client_from("127.0.0.95");
    let bob = Bystander::start(
        &shared_address,
        gw.url("/echo"),
        BOB_KEY,
        Duration::from_millis(100),
    );
    let started = Instant::now();
    let mut refused_by_limit = 0;
    for _ in 0..60 {
        let reply = get_as(&shared_address, &gw.url("/echo"), MALLORY_KEY).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            refused_by_limit += 1;
        }
    }
    assert!(refused_by_limit >= 10, "{refused_by_limit}");
    let throttle = wait_for(
        Duration::from_secs(10),
        "a throttle on mallory's identity",
        || async {
            admin_json(&gw, "/heal").await["throttles"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["scope"]["scope"] == "identity" && t["scope"]["key"] == "mallory")
                .cloned()
        },
    )
    .await;
    let throttled = Instant::now();
    assert_eq!(throttle["rate_per_s"], 2.0);
    let throttles = admin_json(&gw, "/heal").await["throttles"].clone();
    assert_eq!(
        throttles.as_array().unwrap().len(),
        1,
        "no throttle on the shared address: {throttles}"
    );
    // Mallory now gets 429 with Retry-After from the throttle, well under the identity's own
    // limit (which would let 10 back-to-back requests through after a quiet second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut ok = 0;
    for _ in 0..10 {
        let reply = get_as(&shared_address, &gw.url("/echo"), MALLORY_KEY).await;
        if reply.status == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    assert!(
        ok <= 3,
        "{ok} of 10 back-to-back requests passed a 2/s throttle"
    );
    // The throttle follows the identity to another address.
    let elsewhere = client_from("127.0.0.96");
    let mut refused_elsewhere = 0;
    for _ in 0..5 {
        let reply = get_as(&elsewhere, &gw.url("/echo"), MALLORY_KEY).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            refused_elsewhere += 1;
        }
    }
    assert!(refused_elsewhere >= 3, "{refused_elsewhere} of 5 refused");
    let incident = wait_for(
        Duration::from_secs(5),
        "a verified abuse incident",
        || async {
            incident_of(&gw, "abuse")
                .await
                .filter(|i| i["state"] == "normal")
        },
    )
    .await;
    assert_eq!(incident["subject"], "abuse:identity:mallory");
    assert_eq!(incident["action_records"][0]["kind"], "throttle");
    assert_eq!(
        incident["action_records"][0]["spec"]["target"]["scope"],
        "identity"
    );
    let bob_statuses = bob.finish().await;
    assert!(!bob_statuses.is_empty());
    assert!(
        bob_statuses.iter().all(|s| *s == 200),
        "bob, on mallory's address, was never refused: {bob_statuses:?}"
    );
    println!(
        "abusive identity → identity throttle: in effect {} ms after the abuse began (decision interval 500 ms); bob on the same address: 0 of {} requests refused",
        ms(throttled - started),
        bob_statuses.len(),
    );
}

#[tokio::test]
async fn observe_mode_opens_incidents_and_changes_nothing() {
    let upstream = TestUpstream::start().await.unwrap();
    let config = attack_config(upstream.addr(), "").replace("mode: enforce", "mode: observe");
    let gw = start(&config).await;
    let attacker = client_from("127.0.0.67");
    attack(&gw, &attacker, 10).await;
    let incident = wait_for(Duration::from_secs(5), "an escalated incident", || async {
        incident_of(&gw, "attack")
            .await
            .filter(|i| i["state"] == "escalated")
    })
    .await;
    let reason = incident["transitions"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("observe mode: would block 127.0.0.67"),
        "{reason}"
    );
    assert_eq!(
        get(&attacker, &gw.url("/echo")).await.status,
        StatusCode::OK
    );
    assert!(heal_rule(&gw, "127.0.0.67").await.is_none());
    let reply = get(&h1_client(), &gw.admin_url("/heal/incidents/999")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[test]
fn invalid_heal_settings_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apiguard.yaml");
    std::fs::write(
        &path,
        r#"
listeners:
  - address: 127.0.0.1:0
upstreams:
  primary:
    targets: ["127.0.0.1:9"]
    fallback: nowhere
routes:
  - id: api
    upstream: primary
heal:
  mode: enforce
  interval: 10ms
  thresholds:
    error_ratio: 1.5
  guardrails:
    allowlist: ["10.0.0.1/8"]
  hooks:
    - name: both
      webhook: "http://127.0.0.1:1/x"
      command: ["true"]
    - name: tls
      webhook: "https://example.com/x"
"#,
    )
    .unwrap();
    let error = apiguard_gateway::validate_file(&path)
        .unwrap_err()
        .to_string();
    for expected in [
        "fallback `nowhere` must name another upstream",
        "heal.interval must be at least 100ms",
        "heal.thresholds.error_ratio",
        "heal.guardrails.allowlist",
        "hooks `both`: give exactly one of webhook or command",
        "hooks `tls`: webhook `https://example.com/x` must be http://host:port/path",
    ] {
        assert!(
            error.contains(expected),
            "missing `{expected}` in:\n{error}"
        );
    }
}
