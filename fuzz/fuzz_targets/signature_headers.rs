//! RFC 9421 signature fields and RFC 9530 Content-Digest, from untrusted clients: parsing
//! `Signature-Input` / `Signature`, then the whole integrity stage (key choice, window,
//! signature base, verification, digest) over a request carrying the fuzzed fields. None may
//! panic, loop or allocate without bound; garbage is refused, never accepted.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apiguard_model::{ClientInfo, Outcome, RequestContext, RequestView, Stage};
use apiguard_policy::integrity::headers::{MAX_FIELD_BYTES, parse_signatures};
use apiguard_policy::integrity::{
    DigestAlgorithm, DigestPolicy, IntegrityMetrics, IntegrityRuntime, IntegrityStage, KeyMaterial,
    SignatureKey, SignaturePolicy, digest,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use libfuzzer_sys::fuzz_target;

fn stage() -> &'static IntegrityStage {
    static STAGE: OnceLock<IntegrityStage> = OnceLock::new();
    STAGE.get_or_init(|| {
        let key = Arc::new(SignatureKey {
            keyid: "k".into(),
            material: KeyMaterial::HmacSha256(vec![7; 32]),
            subject: "k".into(),
            attributes: serde_json::Map::new(),
        });
        IntegrityStage::new(
            Some(SignaturePolicy {
                keys: HashMap::from([("k".to_owned(), key)]),
                required: true,
                components: vec!["@method".into()],
                max_age: Duration::from_secs(u64::MAX / 4),
                clock_skew: Duration::from_secs(u64::MAX / 4),
                label: None,
                tag: None,
            }),
            Some(DigestPolicy {
                required: false,
                algorithms: DigestAlgorithm::ALL.to_vec(),
            }),
            1024,
            IntegrityRuntime::new(64, IntegrityMetrics::new()),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    // Signature-Input | Signature | Content-Digest, split at the first two 0xff bytes.
    let mut parts = data.splitn(3, |b| *b == 0xff);
    let input = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let content_digest = parts.next().unwrap_or_default();

    if let Ok(entries) = parse_signatures(input, signature) {
        assert!(input.len() <= MAX_FIELD_BYTES && signature.len() <= MAX_FIELD_BYTES);
        assert!(!entries.is_empty() && entries.len() <= 8);
        for entry in &entries {
            assert!(entry.components.len() <= 32);
        }
    }
    let _ = digest::verify([content_digest].into_iter(), data, &DigestAlgorithm::ALL);

    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("signature-input", input),
        ("signature", signature),
        ("content-digest", content_digest),
    ] {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    headers.insert("host", HeaderValue::from_static("api.example.com"));
    let body = Bytes::copy_from_slice(data);
    let client = ClientInfo {
        peer: "192.0.2.1:1".parse().unwrap(),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    };
    let method = Method::POST;
    let uri = Uri::from_static("/orders?id=1");
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &headers,
        client: &client,
        route: "fuzz",
        request_id: "fuzz",
        body: Some(&body),
    };
    let mut ctx = RequestContext::default();
    // A forged HMAC over fuzzed bytes never verifies: the stage always refuses.
    assert!(matches!(
        stage().inspect(&view, &mut ctx),
        Outcome::Block { .. }
    ));
});
