//! Cost of request signatures, Content-Digest and response inspection:
//! `cargo bench -p apiguard-policy --bench integrity`.
//!
//! - `signature/ed25519`, `signature/hmac-sha256`: one signed request verified (fields parsed,
//!   key chosen, window checked, signature base built, signature verified, replay cache
//!   checked and updated), covering `@method`, `@target-uri` and `content-digest`;
//! - `signature/parse_fields`: parsing `Signature-Input` and `Signature` alone;
//! - `integrity_stage/ed25519_digest_1KiB`: the whole stage, with the Content-Digest of a
//!   1 KiB body checked;
//! - `response_scan/*`: scanning a body for sensitive data (bytes per second): a clean JSON
//!   document, the same with a card number, an SSN and an e-mail address masked, and clean
//!   text.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apiguard_model::{ClientInfo, RequestContext, RequestView, Stage};
use apiguard_policy::integrity::headers::parse_signatures;
use apiguard_policy::integrity::{
    DigestAlgorithm, IntegrityMetrics, IntegrityRuntime, IntegrityStage, KeyMaterial, ReplayCache,
    SignatureKey, SignaturePolicy,
};
use apiguard_policy::response::{BodyKind, DetectorSet, ResponseScanner};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use prometheus::{IntCounter, IntGauge};
use sha2::Sha256;

const SECRET: &[u8] = b"an-hmac-secret-of-32-bytes-or-more!";
const URI: &str = "http://api.example.com/orders/42?expand=items";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    client: ClientInfo,
}

impl Request {
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            version: Version::HTTP_11,
            headers: &self.headers,
            client: &self.client,
            route: "orders",
            request_id: "bench",
            body: Some(&self.body),
        }
    }
}

/// A POST with a body of `size` bytes, signed with `keyid`'s key.
fn signed_request(keyid: &str, size: usize) -> Request {
    let body = Bytes::from(vec![b'a'; size]);
    let digest = DigestAlgorithm::Sha256.field_value(&body);
    let params = format!(
        "(\"@method\" \"@target-uri\" \"content-digest\");created={};keyid=\"{keyid}\"",
        now()
    );
    let base = format!(
        "\"@method\": POST\n\"@target-uri\": {URI}\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
    );
    let signature = if keyid == "ed" {
        SigningKey::from_bytes(&[9; 32])
            .sign(base.as_bytes())
            .to_bytes()
            .to_vec()
    } else {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(base.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("api.example.com"));
    headers.insert("content-digest", HeaderValue::from_str(&digest).unwrap());
    headers.insert(
        "signature-input",
        HeaderValue::from_str(&format!("sig1={params}")).unwrap(),
    );
    headers.insert(
        "signature",
        HeaderValue::from_str(&format!("sig1=:{}:", STANDARD.encode(signature))).unwrap(),
    );
    Request {
        method: Method::POST,
        uri: Uri::from_static("/orders/42?expand=items"),
        headers,
        body,
        client: ClientInfo {
            peer: "192.0.2.1:40000".parse().unwrap(),
            tls: false,
            client_cert_subject: None,
            client_cert_sans: Vec::new(),
        },
    }
}

fn policy() -> SignaturePolicy {
    let key = |keyid: &str, material| {
        (
            keyid.to_owned(),
            Arc::new(SignatureKey {
                keyid: keyid.to_owned(),
                material,
                subject: keyid.to_owned(),
                attributes: serde_json::Map::new(),
            }),
        )
    };
    SignaturePolicy {
        keys: HashMap::from([
            key(
                "ed",
                KeyMaterial::Ed25519(SigningKey::from_bytes(&[9; 32]).verifying_key()),
            ),
            key("hmac", KeyMaterial::HmacSha256(SECRET.to_vec())),
        ]),
        required: true,
        components: vec![
            "@method".into(),
            "@target-uri".into(),
            "content-digest".into(),
        ],
        max_age: Duration::from_secs(300),
        clock_skew: Duration::from_secs(30),
        label: None,
        tag: None,
    }
}

fn fresh_cache() -> ReplayCache {
    ReplayCache::new(
        1000,
        IntCounter::new("e", "e").unwrap(),
        IntGauge::new("n", "n").unwrap(),
    )
}

fn signature_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature");
    let policy = policy();
    for (name, keyid) in [("ed25519", "ed"), ("hmac-sha256", "hmac")] {
        let request = signed_request(keyid, 64);
        let t = now();
        assert!(
            policy
                .verify(&request.view(), t, Instant::now(), &fresh_cache())
                .unwrap()
                .is_some()
        );
        // A new replay cache per run (made and dropped outside the timing): the same
        // signature twice would be a replay.
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                fresh_cache,
                |cache| black_box(policy.verify(&request.view(), t, Instant::now(), cache)),
                BatchSize::SmallInput,
            )
        });
    }
    let request = signed_request("ed", 64);
    let input = request.headers["signature-input"].as_bytes().to_vec();
    let signature = request.headers["signature"].as_bytes().to_vec();
    group.bench_function("parse_fields", |b| {
        b.iter(|| black_box(parse_signatures(black_box(&input), black_box(&signature))))
    });
    group.finish();

    let mut group = c.benchmark_group("integrity_stage");
    let request = signed_request("ed", 1024);
    group.bench_function("ed25519_digest_1KiB", |b| {
        b.iter_batched_ref(
            || {
                IntegrityStage::new(
                    Some(self::policy()),
                    None,
                    1 << 20,
                    IntegrityRuntime::new(1000, IntegrityMetrics::new()),
                )
            },
            |stage| {
                let mut ctx = RequestContext::default();
                black_box(stage.inspect(&request.view(), &mut ctx))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A JSON list of `n` orders; with `leak`, every 50th has a card number, an SSN and an
/// e-mail address.
fn orders_json(n: usize, leak: bool) -> Vec<u8> {
    let orders: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut order = serde_json::json!({
                "id": 100_000 + i, "status": "shipped", "total": 129.95,
                "items": [{"sku": format!("SKU-{i:05}"), "qty": 2}],
                "note": "leave at the front door", "updated": 1_700_000_000_000u64 + i as u64,
            });
            if leak && i % 50 == 0 {
                order["card"] = "4111 1111 1111 1111".into();
                order["ssn"] = "123-45-6789".into();
                order["email"] = "alice@example.com".into();
            }
            order
        })
        .collect();
    serde_json::to_vec(&orders).unwrap()
}

fn response_benches(c: &mut Criterion) {
    let scanner = ResponseScanner::new(DetectorSet::all());
    let mut group = c.benchmark_group("response_scan");
    let clean = orders_json(100, false);
    let leaky = orders_json(100, true);
    assert!(scanner.scan(&clean, BodyKind::Json, true).is_clean());
    assert!(scanner.scan(&leaky, BodyKind::Json, true).masked.is_some());
    group.throughput(Throughput::Bytes(clean.len() as u64));
    group.bench_function("clean_json", |b| {
        b.iter(|| black_box(scanner.scan(black_box(&clean), BodyKind::Json, true)))
    });
    group.throughput(Throughput::Bytes(leaky.len() as u64));
    group.bench_function("leaky_json_mask", |b| {
        b.iter(|| black_box(scanner.scan(black_box(&leaky), BodyKind::Json, true)))
    });
    let text = "The quick brown fox jumps over the lazy dog; order 1234 shipped.\n"
        .repeat(16 * 1024)
        .into_bytes();
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("clean_text_1MiB", |b| {
        b.iter(|| black_box(scanner.scan(black_box(&text), BodyKind::Text, true)))
    });
    group.finish();
}

criterion_group!(benches, signature_benches, response_benches);
criterion_main!(benches);
