//! The hub's throughput benchmark (not a test): ingest per protocol with publisher confirms
//! on, fan-out to ten subscribers, and the end-to-end rate into the store.
//!
//! ```sh
//! CARGO_TARGET_DIR=… cargo run --release --example hub_throughput -- \
//!     [REPORTS_PER_PROTOCOL=20000] [BATCH=500] [CLIENTS=4] [PACED_RATES=1000] [rabbitmq|embedded]
//! ```
//!
//! `HUB_WORKERS` (default 2) sets the number of workers of the draining hub; `HUB_STORE=postgres`
//! puts the store in PostgreSQL (`APIGUARD_TEST_POSTGRES`, default the local `test` database,
//! in a schema of its own) instead of a SQLite file.
//!
//! RabbitMQ at 127.0.0.1:5672 unless `APIGUARD_TEST_AMQP` says otherwise, a SQLite store in a
//! temporary directory, `trust.k: 1` set explicitly so that the one reporter's reports are
//! published; one reporting participant and ten subscribers, each a task long-polling
//! `GET /v1/feed` and confirming every answer (`ack=TOKEN`).
//!
//! 1. **Ingest**, per protocol, on a hub without workers (`broker.workers: 0`): REST
//!    `POST /v1/reports/batch`, gRPC `ReportStream` (client streaming), GraphQL
//!    `reportBatch`; `CLIENTS` concurrent callers, `BATCH` reports per call, every call
//!    answered only after the broker confirmed each report on the durable ingest queue:
//!    reports/s from the first call to the last answer.
//! 2. **Drain**: a hub with workers takes over the same broker and store (as a restarted hub
//!    would) and works off the backlog: the rate into the store (stored, decided, published:
//!    `hub_reports.published`) and the fan-out rate (every report held by all ten
//!    subscribers).
//! 3. **Mixed**: REST ingest again with the workers running, as in production: the ingest
//!    rate while the workers compete for the machine, and the end-to-end rates.
//! 4. **Paced**: `PACED_RATES` (one rate, or several separated by commas, each its own phase)
//!    reports/s over REST in small batches for 10 s: the delivery
//!    latency (from the call that carried a report to each subscriber's receipt of it,
//!    p50/p99 over all ten) at a sustainable rate. (Under full load, in 2 and 3, the latency
//!    is mostly queueing.)
//!
//! With `embedded` the hub has no broker; phases 1 and 2 are then one (the embedded bus has
//! no durable queue to leave a backlog in).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apiguard_hub::bus::Bus;
use apiguard_hub::grpc::proto::threat_ingest_client::ThreatIngestClient;
use apiguard_hub::grpc::proto::{Address, ThreatReport};
use apiguard_hub::{Hub, HubConfig, NewParticipant, Store};
use serde_json::{Value, json};

const SUBSCRIBERS: usize = 10;
const PACED_SECONDS: u64 = 10;
/// How often a paced batch goes out.
const PACED_TICK: Duration = Duration::from_millis(10);

/// Report number `n`'s address: 198.18.0.0/15 is the benchmarking range.
fn address(n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n as u32)
}

fn number_of(ip: &str) -> Option<usize> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    (u32::from(ip) as usize).checked_sub(u32::from(Ipv4Addr::new(198, 18, 0, 1)) as usize)
}

/// One subscriber's receipts: when it first received each report, and how far from the
/// start it holds every report (so that checking progress does not rescan what it holds).
struct Receipts {
    at: Vec<Option<Instant>>,
    complete_through: usize,
}

/// When each report was sent, and when each subscriber first received it.
struct Ledger {
    sent: Vec<OnceLock<Instant>>,
    received: Vec<Mutex<Receipts>>,
}

impl Ledger {
    fn new(total: usize) -> Self {
        Self {
            sent: (0..total).map(|_| OnceLock::new()).collect(),
            received: (0..SUBSCRIBERS)
                .map(|_| {
                    Mutex::new(Receipts {
                        at: vec![None; total],
                        complete_through: 0,
                    })
                })
                .collect(),
        }
    }

    fn mark_sent(&self, range: std::ops::Range<usize>, at: Instant) {
        for n in range {
            let _ = self.sent[n].set(at);
        }
    }

    /// Whether every subscriber holds every report of `range`. (The phases send their
    /// ranges in order, so a subscriber that holds all of `range` holds all before it too.)
    fn all_received(&self, range: std::ops::Range<usize>) -> bool {
        self.received.iter().all(|r| {
            let mut r = r.lock().unwrap();
            while r.complete_through < r.at.len() && r.at[r.complete_through].is_some() {
                r.complete_through += 1;
            }
            r.complete_through >= range.end || r.at[range.clone()].iter().all(Option::is_some)
        })
    }

    /// Delivery latencies of `range` over all subscribers, sorted.
    fn latencies(&self, range: std::ops::Range<usize>) -> Vec<Duration> {
        let mut out = Vec::new();
        for r in &self.received {
            let r = r.lock().unwrap();
            for n in range.clone() {
                if let (Some(got), Some(sent)) = (r.at[n], self.sent[n].get()) {
                    out.push(got.saturating_duration_since(*sent));
                }
            }
        }
        out.sort();
        out
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// What a subscriber reads of a feed answer (the rest of each item is skipped unparsed, as a
/// gateway that keeps only what it enforces would).
#[derive(serde::Deserialize)]
struct FeedPage {
    reports: Vec<FeedItem>,
    ack: Option<String>,
}

#[derive(serde::Deserialize)]
struct FeedItem {
    #[serde(default)]
    indicators: Option<FeedIndicators>,
}

#[derive(serde::Deserialize)]
struct FeedIndicators {
    #[serde(default)]
    ip: Option<String>,
}

/// A subscriber: long-polls its feed, confirms every answer, records first receipts.
async fn subscribe(
    client: reqwest::Client,
    base: String,
    key: String,
    index: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut ack = String::new();
    while !stop.load(Ordering::Relaxed) {
        let response = client
            .get(format!("{base}/v1/feed?max=500&wait_ms=500&ack={ack}"))
            .bearer_auth(&key)
            .send()
            .await;
        let answer: FeedPage = match response {
            Ok(response) if response.status() == 200 => {
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
            }
            Ok(response) => {
                let status = response.status();
                eprintln!(
                    "subscriber {index}: {status} {}",
                    response.text().await.unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(error) => {
                eprintln!("subscriber {index}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let now = Instant::now();
        let mut received = ledger.received[index].lock().unwrap();
        for item in &answer.reports {
            if let Some(n) = item
                .indicators
                .as_ref()
                .and_then(|i| i.ip.as_deref())
                .and_then(number_of)
                && n < received.at.len()
                && received.at[n].is_none()
            {
                received.at[n] = Some(now);
            }
        }
        drop(received);
        ack = answer.ack.unwrap_or_default();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Rest,
    Grpc,
    Graphql,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Rest => "REST batch",
            Protocol::Grpc => "gRPC stream",
            Protocol::Graphql => "GraphQL batch",
        }
    }
}

struct Caller {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Caller {
    /// Sends reports `range` in one call; panics unless every one is accepted.
    async fn send(&self, protocol: Protocol, range: std::ops::Range<usize>) {
        match protocol {
            Protocol::Rest => {
                let reports: Vec<Value> = range
                    .map(|n| json!({"attack": "scanner", "source_ip": address(n).to_string(), "user_agent": "masscan/1.3"}))
                    .collect();
                let response = self
                    .http
                    .post(format!("{}/v1/reports/batch", self.base))
                    .bearer_auth(&self.key)
                    .json(&json!({ "reports": reports }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                assert_eq!(status, 202, "{}", response.text().await.unwrap());
            }
            Protocol::Graphql => {
                let inputs: Vec<Value> = range
                    .map(|n| json!({"attack": "scanner", "sourceIp": address(n).to_string(), "userAgent": "masscan/1.3"}))
                    .collect();
                let count = inputs.len();
                let response: Value = self
                    .http
                    .post(format!("{}/graphql", self.base))
                    .bearer_auth(&self.key)
                    .json(&json!({
                        "query": "mutation($inputs: [ReportInput!]!) { reportBatch(inputs: $inputs) { status } }",
                        "variables": { "inputs": inputs },
                    }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let acks = response["data"]["reportBatch"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{response}"));
                assert_eq!(acks.len(), count);
                assert!(acks.iter().all(|a| a["status"] == "accepted"), "{response}");
            }
            Protocol::Grpc => unreachable!("gRPC calls go through send_grpc"),
        }
    }
}

async fn send_grpc(
    client: &mut ThreatIngestClient<tonic::transport::Channel>,
    key: &str,
    range: std::ops::Range<usize>,
) {
    let count = range.len();
    let messages: Vec<ThreatReport> = range
        .map(|n| ThreatReport {
            attack: "scanner".into(),
            source: Some(Address {
                ip: address(n).octets().to_vec(),
                prefix_len: None,
            }),
            user_agent: "masscan/1.3".into(),
            ..ThreatReport::default()
        })
        .collect();
    let mut request = tonic::Request::new(tokio_stream::iter(messages));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let answer = client.report_stream(request).await.unwrap().into_inner();
    assert_eq!(
        answer.accepted as usize,
        count,
        "{:?}",
        answer.results.first()
    );
}

/// Reports stored, decided and published. (`published_at` is set with `published`, and its
/// index answers the count; counting `published` scanned every stored report, 20 ms apart,
/// and took a large share of the machine from the hub it measured.)
async fn stored_and_published(store: &Store) -> i64 {
    let sql = "SELECT COUNT(*) FROM hub_reports WHERE published_at IS NOT NULL";
    match store {
        Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// Waits until `done()` or `limit`; the time from `started` when it became true.
async fn wait_until(
    started: Instant,
    limit: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    let deadline = Instant::now() + limit;
    loop {
        if done().await {
            return Some(started.elapsed());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rate(count: usize, elapsed: Option<Duration>) -> String {
    match elapsed {
        Some(elapsed) => format!(
            "{:.0}/s ({elapsed:.2?})",
            count as f64 / elapsed.as_secs_f64()
        ),
        None => "not reached in time".to_owned(),
    }
}

/// A hub on the benchmark's broker prefix and store.
async fn start_hub(mode: &str, prefix: &str, store: &str, batch: usize, workers: usize) -> Hub {
    let amqp = std::env::var("APIGUARD_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let broker = if mode == "embedded" {
        String::new()
    } else {
        format!(
            "broker:\n  url: {amqp}\n  prefix: {prefix}\n  workers: {workers}\n  \
             participant_max_length: 1000000\n  ingest_max_length: 1000000\n"
        )
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nstore: \"{store}\"\nsecret: bench-secret-0123456789abcdef0123456789\n{broker}\
         limits:\n  embedded_queue: 1000000\n  max_batch: {batch}\ntrust:\n  k: 1\n"
    );
    let settings = HubConfig::parse(&yaml).unwrap().settings().unwrap();
    Hub::start(settings).await.unwrap()
}

/// Sends `phase` with `clients` concurrent callers in calls of `batch`; answers the time
/// until the last answer and the calls' latencies, sorted.
async fn ingest(
    protocol: Protocol,
    phase: std::ops::Range<usize>,
    batch: usize,
    clients: usize,
    target: &Caller,
    ledger: &Arc<Ledger>,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut calls = Vec::new();
    for c in 0..clients {
        let chunks: Vec<std::ops::Range<usize>> = phase
            .clone()
            .step_by(batch)
            .enumerate()
            .filter(|(i, _)| i % clients == c)
            .map(|(_, start)| start..(start + batch).min(phase.end))
            .collect();
        let caller = Caller {
            http: target.http.clone(),
            base: target.base.clone(),
            key: target.key.clone(),
        };
        let ledger = ledger.clone();
        calls.push(tokio::spawn(async move {
            let mut grpc = if protocol == Protocol::Grpc {
                Some(
                    ThreatIngestClient::connect(caller.base.clone())
                        .await
                        .unwrap(),
                )
            } else {
                None
            };
            let mut latencies = Vec::new();
            for chunk in chunks {
                let sent = Instant::now();
                ledger.mark_sent(chunk.clone(), sent);
                match grpc.as_mut() {
                    Some(client) => send_grpc(client, &caller.key, chunk).await,
                    None => caller.send(protocol, chunk).await,
                }
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for call in calls {
        latencies.extend(call.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    (elapsed, latencies)
}

fn spawn_subscribers(
    http: &reqwest::Client,
    base: &str,
    keys: &[String],
    ledger: &Arc<Ledger>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            tokio::spawn(subscribe(
                http.clone(),
                base.to_owned(),
                key.clone(),
                index,
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let per_protocol: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let batch: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let clients: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4);
    // One rate, or several separated by commas (each its own paced phase, in order).
    let paced_rates: Vec<usize> = args
        .get(4)
        .map(|a| a.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000]);
    let mode = args.get(5).map_or("rabbitmq", String::as_str).to_owned();
    let workers: usize = std::env::var("HUB_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let paced_totals: usize = paced_rates.iter().map(|r| r * PACED_SECONDS as usize).sum();
    let total = per_protocol * 4 + paced_totals;
    assert!(total < 130_000, "198.18.0.0/15 holds 131072 addresses");

    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("apiguard-bench.{}", uuid::Uuid::now_v7().simple());
    // HUB_STORE=postgres: a schema of its own in the test database, dropped at the end.
    let postgres = std::env::var("HUB_STORE").is_ok_and(|s| s == "postgres");
    let postgres_url = std::env::var("APIGUARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("hub_bench_{}", uuid::Uuid::now_v7().simple());
    let store_path = if postgres {
        let admin = sqlx::PgPool::connect(&postgres_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let separator = if postgres_url.contains('?') { '&' } else { '?' };
        format!("{postgres_url}{separator}options=-c%20search_path%3D{schema}")
    } else {
        format!("sqlite://{}", dir.path().join("hub.db").display())
    };
    let embedded = mode == "embedded";
    // Phase 1 runs without workers: the ingest rate alone.
    let first = start_hub(
        &mode,
        &prefix,
        &store_path,
        batch,
        if embedded { workers } else { 0 },
    )
    .await;
    let (_, reporter) = first
        .register(NewParticipant {
            name: "reporter".into(),
            organisation: "Reporter".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    for index in 0..SUBSCRIBERS {
        let (_, key) = first
            .register(NewParticipant {
                name: format!("subscriber-{index}"),
                organisation: format!("Subscriber {index}"),
                ..Default::default()
            })
            .await
            .unwrap();
        keys.push(key);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let ledger = Arc::new(Ledger::new(total));
    let stop = Arc::new(AtomicBool::new(false));
    println!(
        "hub_throughput: {mode}, {} store, {per_protocol} reports per protocol, {batch} per call, {clients} callers, \
         {SUBSCRIBERS} subscribers, {workers} workers; cores: {}",
        if postgres { "PostgreSQL" } else { "SQLite" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Ingest per protocol.
    let mut target = Caller {
        http: http.clone(),
        base: format!("http://{}", first.local_addr()),
        key: reporter.clone(),
    };
    let mut subscribers = if embedded {
        spawn_subscribers(&http, &target.base, &keys, &ledger, &stop)
    } else {
        Vec::new()
    };
    let drain_started = Instant::now();
    let mut next = 0;
    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::Graphql] {
        let phase = next..next + per_protocol;
        next += per_protocol;
        let (elapsed, calls) = ingest(protocol, phase, batch, clients, &target, &ledger).await;
        println!(
            "1 ingest {:<14} {:>6.0} reports/s ({elapsed:.2?}; call p50 {:.1?}, p99 {:.1?})",
            protocol.name(),
            per_protocol as f64 / elapsed.as_secs_f64(),
            percentile(&calls, 0.50),
            percentile(&calls, 0.99),
        );
    }
    let backlog = 0..next;

    // 2. Drain: a hub with workers takes over (embedded: the same hub, already draining).
    let hub = if embedded {
        first
    } else {
        first.shutdown().await;
        let hub = start_hub(&mode, &prefix, &store_path, batch, workers).await;
        target.base = format!("http://{}", hub.local_addr());
        subscribers = spawn_subscribers(&http, &target.base, &keys, &ledger, &stop);
        hub
    };
    let store = hub.state().pipeline.store.clone();
    let started = if embedded {
        drain_started
    } else {
        Instant::now()
    };
    let want = backlog.len() as i64;
    let stored = wait_until(started, Duration::from_secs(900), async || {
        stored_and_published(&store).await >= want
    })
    .await;
    let delivered = wait_until(started, Duration::from_secs(900), async || {
        ledger.all_received(backlog.clone())
    })
    .await;
    println!(
        "2 drain {} reports: into the store {} | held by all {SUBSCRIBERS} subscribers {}",
        backlog.len(),
        rate(backlog.len(), stored),
        rate(backlog.len(), delivered),
    );

    // 3. Mixed: REST ingest with the workers running.
    let phase = next..next + per_protocol;
    next += per_protocol;
    let started = Instant::now();
    let (elapsed, calls) = ingest(
        Protocol::Rest,
        phase.clone(),
        batch,
        clients,
        &target,
        &ledger,
    )
    .await;
    let want = (next) as i64;
    let stored = wait_until(started, Duration::from_secs(900), async || {
        stored_and_published(&store).await >= want
    })
    .await;
    let delivered = wait_until(started, Duration::from_secs(900), async || {
        ledger.all_received(phase.clone())
    })
    .await;
    let latencies = ledger.latencies(phase.clone());
    println!(
        "3 mixed  REST batch     {:>6.0} reports/s ({elapsed:.2?}; call p50 {:.1?}, p99 {:.1?}) with workers running | \
         into the store {} | all {SUBSCRIBERS} subscribers {} | delivery p50 {:.0?}, p99 {:.0?}",
        per_protocol as f64 / elapsed.as_secs_f64(),
        percentile(&calls, 0.50),
        percentile(&calls, 0.99),
        rate(per_protocol, stored),
        rate(per_protocol, delivered),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );

    // 4. Paced: a sustainable rate, small batches every PACED_TICK.
    for paced_rate in paced_rates {
        let paced_total = paced_rate * PACED_SECONDS as usize;
        let phase = next..next + paced_total;
        next += paced_total;
        let per_tick = (paced_rate as f64 * PACED_TICK.as_secs_f64()).ceil() as usize;
        let caller = Arc::new(Caller {
            http: http.clone(),
            base: target.base.clone(),
            key: reporter.clone(),
        });
        let started = Instant::now();
        let mut ticker = tokio::time::interval(PACED_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut calls = Vec::new();
        let mut start = phase.start;
        while start < phase.end {
            ticker.tick().await;
            let chunk = start..(start + per_tick).min(phase.end);
            start = chunk.end;
            ledger.mark_sent(chunk.clone(), Instant::now());
            let caller = caller.clone();
            calls.push(tokio::spawn(async move {
                caller.send(Protocol::Rest, chunk).await;
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
        let sent_in = started.elapsed();
        let delivered = wait_until(started, Duration::from_secs(600), async || {
            ledger.all_received(phase.clone())
        })
        .await;
        let latencies = ledger.latencies(phase.clone());
        println!(
            "4 paced  REST {paced_total} reports at {paced_rate}/s offered ({:.0}/s sent) in calls of {per_tick}: \
             all {SUBSCRIBERS} subscribers after {} | delivery p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            paced_total as f64 / sent_in.as_secs_f64(),
            delivered.map_or("(not in time)".to_owned(), |d| format!("{d:.2?}")),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default(),
        );
    }

    stop.store(true, Ordering::Relaxed);
    for subscriber in subscribers {
        let _ = subscriber.await;
    }
    let bus = hub.state().bus.clone();
    hub.shutdown().await;
    if let Bus::Rabbit(bus) = bus {
        bus.delete_topology().await.unwrap();
    }
    if postgres {
        let admin = sqlx::PgPool::connect(&postgres_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    }
}
