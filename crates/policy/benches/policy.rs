//! Cost per request of authentication and rate limiting:
//! `cargo bench -p apiguard-policy --bench policy`.
//!
//! - `jwt_verify/<alg>`: one bearer token verified (header, key lookup, signature, claims),
//!   without the verified-token cache;
//! - `jwt_verify/ES256_cached`: the same token again, answered from the cache;
//! - `authn_stage/api_key`: the whole authentication stage with an API key;
//! - `ratelimit/one_key`: one GCRA check, the same client every time;
//! - `ratelimit/10k_keys`: one check over 10 000 client addresses in turn;
//! - `ratelimit/stage_headers`: the rate-limit stage with its RateLimit headers.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use apiguard_model::{ClientInfo, RequestContext, RequestView, Stage};
use apiguard_policy::authn::{
    Algorithm, ApiKey, ApiKeyProvider, AuthnMetrics, AuthnStage, DEFAULT_ALGORITHMS, DecodingKey,
    JwtProvider, JwtSettings, KeySet, KeySource, Provider,
};
use apiguard_policy::ratelimit::{
    KeyKind, LimitKey, LimitSpec, Limiter, PolicyClock, RateLimitStage,
};
use apiguard_testkit::jwt::{TestSigner, jwks};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use sha2::Digest;

fn jwt_provider(keys: KeySource, algorithms: Vec<Algorithm>) -> JwtProvider {
    JwtProvider::new(JwtSettings {
        name: "idp".into(),
        issuers: vec!["https://idp.test/".into()],
        audiences: vec!["orders".into()],
        algorithms,
        leeway: Duration::from_secs(30),
        header: http::header::AUTHORIZATION,
        subject_claim: "sub".into(),
        keys,
    })
}

fn jwt_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_verify");
    let signers = [
        ("ES256", TestSigner::es256("k")),
        ("EdDSA", TestSigner::eddsa("k")),
        ("RS256", TestSigner::rs256("k")),
    ];
    for (name, signer) in &signers {
        let (set, _) = KeySet::from_jwks(jwks(&[signer]).to_string().as_bytes()).unwrap();
        let provider = jwt_provider(
            KeySource::Static(Arc::new(set)),
            DEFAULT_ALGORITHMS.to_vec(),
        );
        let token = signer.token("alice", "https://idp.test/", "orders", 3600);
        assert!(provider.verify(&token).is_ok());
        group.bench_function(*name, |b| {
            b.iter(|| black_box(provider.verify_uncached(black_box(&token))))
        });
        if *name == "ES256" {
            group.bench_function("ES256_cached", |b| {
                b.iter(|| black_box(provider.verify(black_box(&token))))
            });
        }
    }
    let secret = b"0123456789abcdef0123456789abcdef";
    let hs = TestSigner::hs256(secret);
    let provider = jwt_provider(
        KeySource::Static(Arc::new(KeySet::single(DecodingKey::from_secret(secret)))),
        vec![Algorithm::HS256],
    );
    let token = hs.token("alice", "https://idp.test/", "orders", 3600);
    assert!(provider.verify(&token).is_ok());
    group.bench_function("HS256", |b| {
        b.iter(|| black_box(provider.verify_uncached(black_box(&token))))
    });
    group.finish();
}

fn client(ip: IpAddr) -> ClientInfo {
    ClientInfo {
        peer: SocketAddr::new(ip, 40000),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    }
}

fn run_stage(stage: &dyn Stage, headers: &HeaderMap, client: &ClientInfo) -> RequestContext {
    let method = Method::GET;
    let uri = Uri::from_static("/orders/1");
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers,
        client,
        route: "orders",
        request_id: "bench",
        body: None,
    };
    let mut ctx = RequestContext::default();
    black_box(stage.inspect(&view, &mut ctx));
    ctx
}

fn authn_benches(c: &mut Criterion) {
    let keys: Vec<ApiKey> = (0..1000)
        .map(|i| ApiKey {
            name: format!("key-{i}"),
            sha256: sha2::Sha256::digest(format!("secret-key-{i}").as_bytes()).into(),
            attributes: serde_json::Map::new(),
        })
        .collect();
    let stage = AuthnStage::new(
        vec![Arc::new(Provider::ApiKeys(ApiKeyProvider::new(
            "partners".into(),
            HeaderName::from_static("x-api-key"),
            keys,
        )))],
        false,
        None,
        AuthnMetrics::new(),
    );
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("secret-key-517"));
    let peer = client(IpAddr::from([198, 51, 100, 7]));
    assert!(run_stage(&stage, &headers, &peer).identity.is_some());
    c.bench_function("authn_stage/api_key_of_1000", |b| {
        b.iter(|| run_stage(&stage, &headers, &peer))
    });
}

fn spec(burst: u32) -> LimitSpec {
    LimitSpec {
        name: "per-client".into(),
        key: KeyKind::Client,
        rate: 1_000_000,
        per: Duration::from_secs(1),
        burst,
        cluster: false,
        max_keys: 100_000,
    }
}

fn limiter() -> Arc<Limiter> {
    Arc::new(
        Limiter::new(
            "orders",
            spec(1_000_000),
            PolicyClock::real(),
            prometheus::IntCounter::new("refusals", "bench").unwrap(),
        )
        .unwrap(),
    )
}

fn ratelimit_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    let one = limiter();
    let key = LimitKey::client(IpAddr::from([198, 51, 100, 7]));
    group.bench_function("one_key", |b| {
        b.iter(|| black_box(one.check(black_box(&key))))
    });
    let many = limiter();
    let keys: Vec<LimitKey> = (0..10_000u32)
        .map(|i| LimitKey::client(IpAddr::from((0x0a00_0000 + i).to_be_bytes())))
        .collect();
    let mut next = 0;
    group.bench_function("10k_keys", |b| {
        b.iter(|| {
            next = (next + 1) % keys.len();
            black_box(many.check(&keys[next]))
        })
    });
    let stage = RateLimitStage::new(vec![limiter()], true);
    let peer = client(IpAddr::from([198, 51, 100, 7]));
    let headers = HeaderMap::new();
    group.bench_function("stage_headers", |b| {
        b.iter(|| run_stage(&stage, &headers, &peer))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = jwt_benches, authn_benches, ratelimit_benches
}
criterion_main!(benches);
