//! Engine throughput on clean and on attack traffic, in bytes of request (target, headers and
//! body) per second on one core.
//!
//! `CARGO_TARGET_DIR=target-detect cargo bench -p apiguard-detect --bench engine`

use std::hint::black_box;
use std::net::SocketAddr;

use apiguard_detect::{Engine, EngineConfig};
use apiguard_model::{ClientInfo, RequestView};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Version;

#[path = "common/traffic.rs"]
mod traffic;
use traffic::{
    Req, attack_traffic, clean_traffic, gateway_get, order_json_2k, order_json_2k_fresh,
    typical_get,
};

fn bench_set(c: &mut Criterion, name: &str, engine: &Engine, requests: &[Req]) {
    let client = ClientInfo {
        peer: SocketAddr::from(([10, 0, 0, 1], 4000)),
        tls: true,
        client_cert_subject: None,
        client_cert_sans: vec![],
    };
    let bytes: u64 = requests.iter().map(|r| r.size).sum();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("inspect", |b| {
        b.iter(|| {
            for r in requests {
                let view = RequestView {
                    method: &r.method,
                    uri: &r.uri,
                    version: Version::HTTP_11,
                    headers: &r.headers,
                    client: &client,
                    route: "bench",
                    request_id: "b",
                    body: Some(&r.body),
                };
                black_box(engine.inspect(black_box(&view)));
            }
        })
    });
    group.finish();
}

fn engine_benches(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default(), &[]).expect("engine builds");
    bench_set(c, "clean", &engine, &clean_traffic());
    bench_set(c, "attack", &engine, &attack_traffic());
    bench_set(c, "get_typical", &engine, &[typical_get()]);
    bench_set(c, "get_gateway", &engine, &[gateway_get()]);
    bench_set(c, "post_json_2k", &engine, &[order_json_2k()]);
    // 64 different orders per iteration: bodies never seen before.
    let fresh: Vec<Req> = (0..64).map(order_json_2k_fresh).collect();
    bench_set(c, "post_json_2k_fresh_x64", &engine, &fresh);
    c.bench_function("engine_new", |b| {
        b.iter(|| black_box(Engine::new(EngineConfig::default(), &[]).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = engine_benches
}
criterion_main!(benches);
