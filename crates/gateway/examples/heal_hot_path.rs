//! What self-healing adds to each request, measured in one run (issue 6).
//!
//! The per-request work heal causes, with heal off and on, over the same requests:
//!
//! - off: the enforcement stage on an empty table, the identity enforcement stage (present
//!   whenever a route authenticates), and the client ledger's disabled `observe` (one flag);
//! - on: the same stages on a table holding 10 000 address rules, 64 prefix rules, 1 000
//!   identity rules, 100 fingerprint rules, 16 client and 16 identity throttles (none
//!   matching, the common case), the client fingerprint the proxy computes for the ledger and the event stream,
//!   and the ledger's `observe` (the address, and the identity for authenticated requests).
//!
//! The detection engine's inspection of the same requests is timed in the same rounds as a
//! yardstick. Best of 7 interleaved rounds.
//!
//! `cargo run --release --example heal_hot_path [-- REQUESTS]` (default 20 000).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use apiguard_detect::{Engine, EngineConfig};
use apiguard_gateway::enforcement::{
    BlockRule, BlockTarget, Enforcement, EnforcementStage, IdentityEnforcementStage,
};
use apiguard_gateway::heal::ledger::Ledger;
use apiguard_gateway::throttle::{Throttle, ThrottleScope};
use apiguard_heal::Net;
use apiguard_model::event::now_ms;
use apiguard_model::{AuthMethod, ClientInfo, Identity, RequestContext, RequestView, Stage};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "ShopApp/5.4.1 (iPhone; iOS 17.4.1; Scale/3.00)",
    "okhttp/4.12.0",
    "ShopSDK/2.3.0 python/3.12",
    "curl/8.5.0",
];

/// One request as the pipeline sees it.
struct Sample {
    uri: Uri,
    headers: HeaderMap,
    client: ClientInfo,
    identity: Option<Identity>,
}

impl Sample {
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &Method::GET,
            uri: &self.uri,
            version: Version::HTTP_11,
            headers: &self.headers,
            client: &self.client,
            route: "shop",
            request_id: "bench",
            body: None,
        }
    }
}

fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static("shop.example"));
            headers.insert(
                "user-agent",
                HeaderValue::from_static(AGENTS[i % AGENTS.len()]),
            );
            headers.insert("accept", HeaderValue::from_static("application/json"));
            headers.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
            if i % 3 == 0 {
                headers.insert(
                    "accept-language",
                    HeaderValue::from_static("en-GB,en;q=0.9"),
                );
            }
            headers.insert(
                "authorization",
                HeaderValue::from_static("Bearer abc.def.ghi"),
            );
            let identity = (i % 2 == 0).then(|| Identity {
                subject: format!("user-{}", i % 5_000),
                method: AuthMethod::Jwt,
                claims: serde_json::Map::new(),
            });
            Sample {
                uri: format!("/products/{}?page={}", i % 500, i % 7)
                    .parse()
                    .unwrap(),
                headers,
                client: ClientInfo {
                    peer: SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + (i % 4_000) as u32)),
                        40_000,
                    ),
                    tls: true,
                    client_cert_subject: None,
                    client_cert_sans: Vec::new(),
                },
                identity,
            }
        })
        .collect()
}

fn rule(target: BlockTarget) -> BlockRule {
    BlockRule {
        target,
        until_ms: now_ms() + 3_600_000,
        source: "bench".into(),
        reason: "bench".into(),
        indicator: None,
        created_ms: now_ms(),
        canary_percent: None,
    }
}

/// The enforcement state of a gateway that has been healing for a while.
fn busy_enforcement() -> Arc<Enforcement> {
    let enforcement = Arc::new(Enforcement::new());
    for i in 0..10_000u32 {
        enforcement.insert(rule(BlockTarget::Address(IpAddr::V4(Ipv4Addr::from(
            0xc633_0000 + i,
        )))));
    }
    for i in 0..64u32 {
        enforcement.insert(rule(format!("203.0.{i}.0/24").parse().expect("a prefix")));
    }
    for i in 0..1_000 {
        enforcement.insert(rule(BlockTarget::Identity(format!("mallory-{i}").into())));
    }
    for i in 0..100u64 {
        enforcement.insert(rule(BlockTarget::Fingerprint(
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )));
    }
    for i in 0..16u8 {
        let net: Net = format!("198.18.{i}.0/24").parse().expect("a prefix");
        enforcement.throttles.insert(Throttle::new(
            ThrottleScope::Client(net),
            5.0,
            now_ms() + 3_600_000,
            "bench".into(),
        ));
        enforcement.throttles.insert(Throttle::new(
            ThrottleScope::Identity(format!("abuser-{i}")),
            5.0,
            now_ms() + 3_600_000,
            "bench".into(),
        ));
    }
    enforcement
}

/// The per-request work heal causes: the two enforcement stages, the fingerprint (when the
/// ledger records), and the ledger.
fn heal_path(
    sample: &Sample,
    stage: &EnforcementStage,
    identity_stage: &IdentityEnforcementStage,
    ledger: &Ledger,
) {
    let view = sample.view();
    let mut ctx = RequestContext::default();
    black_box(stage.inspect(&view, &mut ctx));
    ctx.identity = sample.identity.clone();
    black_box(identity_stage.inspect(&view, &mut ctx));
    let fingerprint = ledger
        .is_enabled()
        .then(|| apiguard_behavior::bot::client_fingerprint(view.version, view.headers));
    ledger.observe(
        sample.client.peer.ip(),
        sample.identity.as_ref().map(|i| i.subject.as_str()),
        fingerprint,
        200,
        false,
    );
}

/// The same with the identity clone alone (the context the pipeline would fill anyway).
fn context_only(sample: &Sample) {
    black_box(RequestContext {
        identity: sample.identity.clone(),
        ..RequestContext::default()
    });
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let requests = samples(n);

    let off_enforcement = Arc::new(Enforcement::new());
    let off = (
        EnforcementStage {
            enforcement: off_enforcement.clone(),
        },
        IdentityEnforcementStage {
            enforcement: off_enforcement,
        },
        Ledger::new(100_000),
    );
    let on_enforcement = busy_enforcement();
    let on = (
        EnforcementStage {
            enforcement: on_enforcement.clone(),
        },
        IdentityEnforcementStage {
            enforcement: on_enforcement,
        },
        Ledger::new(100_000),
    );
    on.2.set_enabled(true, 10);
    on.2.advance(now_ms());
    let detect = Engine::new(EngineConfig::default(), &[]).expect("the detection engine builds");

    let (mut off_best, mut on_best, mut detect_best, mut base_best) =
        (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let (mut stages_best, mut fingerprint_best, mut ledger_best) = (f64::MAX, f64::MAX, f64::MAX);
    let parts_ledger = Ledger::new(100_000);
    parts_ledger.set_enabled(true, 10);
    parts_ledger.advance(now_ms());
    for _ in 0..7 {
        let started = Instant::now();
        for r in &requests {
            context_only(r);
        }
        base_best = base_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for r in &requests {
            heal_path(r, &off.0, &off.1, &off.2);
        }
        off_best = off_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for r in &requests {
            heal_path(r, &on.0, &on.1, &on.2);
        }
        on_best = on_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for r in &requests {
            black_box(detect.inspect(&r.view()));
        }
        detect_best = detect_best.min(started.elapsed().as_secs_f64());
        // Where heal's cost goes: the two stages on the busy table, the fingerprint, the
        // ledger.
        let started = Instant::now();
        for r in &requests {
            let view = r.view();
            let mut ctx = RequestContext::default();
            black_box(on.0.inspect(&view, &mut ctx));
            ctx.identity = r.identity.clone();
            black_box(on.1.inspect(&view, &mut ctx));
        }
        stages_best = stages_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for r in &requests {
            black_box(apiguard_behavior::bot::client_fingerprint(
                Version::HTTP_11,
                &r.headers,
            ));
        }
        fingerprint_best = fingerprint_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for (n, r) in requests.iter().enumerate() {
            parts_ledger.observe(
                r.client.peer.ip(),
                r.identity.as_ref().map(|id| id.subject.as_str()),
                Some(n as u64),
                200,
                false,
            );
        }
        ledger_best = ledger_best.min(started.elapsed().as_secs_f64());
    }
    let per = |s: f64| s * 1e9 / requests.len().max(1) as f64;
    let (off_ns, on_ns, base_ns, detect_ns) = (
        per(off_best),
        per(on_best),
        per(base_best),
        per(detect_best),
    );
    let added = (on_ns - base_ns) - (off_ns - base_ns).max(0.0);
    println!(
        "{} requests (half authenticated, 4000 addresses), best of 7 interleaved rounds, same run:",
        requests.len()
    );
    println!("  context alone (identity clone)     {base_ns:8.0} ns/request");
    println!("  heal off (empty table, ledger off)  {off_ns:8.0} ns/request");
    println!("  heal on  (11 164 rules, 32 throttles, fingerprint, ledger) {on_ns:8.0} ns/request");
    println!("  detection engine inspect           {detect_ns:8.0} ns/request");
    println!(
        "  of which: both enforcement stages (identity clone included) {:.0} ns, fingerprint {:.0} ns, ledger {:.0} ns",
        per(stages_best),
        per(fingerprint_best),
        per(ledger_best)
    );
    println!(
        "  heal on / heal off: {:.2}; heal's added cost / detection engine: {:.3}",
        (on_ns - base_ns) / (off_ns - base_ns).max(1.0),
        added / detect_ns
    );
}
