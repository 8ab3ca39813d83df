//! Tight loop over the benchmark traffic, for profilers (callgrind, perf).
//!
//! `cargo run --release -p apiguard-detect --example bench_loop -- clean|attack|get_typical|get_gateway|post_json_2k|post_json_2k_fresh [ITERATIONS]`
//!
//! `post_json_2k_fresh` inspects ITERATIONS different 2 KB orders once each (built before the
//! loop), so that nothing one body leaves behind can help the next.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use apiguard_detect::{Engine, EngineConfig};
use apiguard_model::{ClientInfo, RequestView};
use http::Version;

#[path = "../benches/common/traffic.rs"]
mod traffic;
use traffic::{
    Req, attack_traffic, clean_traffic, gateway_get, order_json_2k, order_json_2k_fresh,
    typical_get,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "clean".into());
    let mut iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let requests = match which.as_str() {
        "post_json_2k_fresh" => {
            let fresh = (0..iterations as u64).map(order_json_2k_fresh).collect();
            iterations = 1;
            fresh
        }
        "attack" => attack_traffic(),
        "get_typical" => vec![typical_get()],
        "get_gateway" => vec![gateway_get()],
        "post_json_2k" => vec![order_json_2k()],
        _ => clean_traffic(),
    };
    let engine = Engine::new(EngineConfig::default(), &[]).expect("engine builds");
    let client = ClientInfo {
        peer: SocketAddr::from(([10, 0, 0, 1], 4000)),
        tls: true,
        client_cert_subject: None,
        client_cert_sans: vec![],
    };
    let bytes: u64 = requests.iter().map(|r| r.size).sum();
    let started = Instant::now();
    inspect_all(&engine, &client, &requests, iterations);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{which}: {:.1} MiB/s ({:.1} us per pass of {} requests)",
        (bytes as f64 * iterations as f64) / secs / (1024.0 * 1024.0),
        secs * 1e6 / iterations as f64,
        requests.len()
    );
}

/// The measured loop, kept out of line so that a profiler can count it alone
/// (`valgrind --tool=callgrind --toggle-collect='*inspect_all*'`): the bodies built before it
/// and the engine's compilation stay out.
#[inline(never)]
fn inspect_all(engine: &Engine, client: &ClientInfo, requests: &[Req], iterations: usize) {
    for _ in 0..iterations {
        for r in requests {
            let view = RequestView {
                method: &r.method,
                uri: &r.uri,
                version: Version::HTTP_11,
                headers: &r.headers,
                client,
                route: "bench",
                request_id: "b",
                body: Some(&r.body),
            };
            black_box(engine.inspect(black_box(&view)));
        }
    }
}
