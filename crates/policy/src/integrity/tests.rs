//! The integrity stage without sockets: RFC 9421 test vectors, the time window, replays,
//! required components, Content-Digest and the identity a signature gives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_model::{AuthMethod, ClientInfo, Outcome, RequestContext, RequestView, Stage};
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use sha2::Sha256;

use super::*;

/// RFC 9421 appendix B.1.4: `test-key-ed25519`.
const RFC_ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----";
/// RFC 9421 appendix B.1.5: `test-shared-secret`.
const RFC_SHARED_SECRET: &str =
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
/// The created time of the RFC's examples.
const RFC_CREATED: i64 = 1618884473;

fn client() -> ClientInfo {
    ClientInfo {
        peer: "127.0.0.1:1".parse().unwrap(),
        tls: true,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    }
}

/// The test request of RFC 9421 appendix B.2.
struct TestRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
    client: ClientInfo,
}

impl TestRequest {
    fn rfc() -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.insert(
            "date",
            HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "content-digest",
            HeaderValue::from_static("sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"),
        );
        headers.insert("content-length", HeaderValue::from_static("18"));
        TestRequest {
            method: Method::POST,
            uri: Uri::from_static("/foo?param=Value&Pet=dog"),
            headers,
            body: Some(Bytes::from_static(br#"{"hello": "world"}"#)),
            client: client(),
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            version: Version::HTTP_11,
            headers: &self.headers,
            client: &self.client,
            route: "orders",
            request_id: "test",
            body: self.body.as_ref(),
        }
    }

    fn set(&mut self, name: &'static str, value: &str) {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
}

fn runtime() -> Arc<IntegrityRuntime> {
    IntegrityRuntime::new(1000, IntegrityMetrics::new())
}

fn key(keyid: &str, material: KeyMaterial) -> (String, Arc<SignatureKey>) {
    (
        keyid.to_owned(),
        Arc::new(SignatureKey {
            keyid: keyid.to_owned(),
            material,
            subject: format!("client-{keyid}"),
            attributes: serde_json::Map::new(),
        }),
    )
}

fn rfc_keys() -> HashMap<String, Arc<SignatureKey>> {
    HashMap::from([
        key(
            "test-key-ed25519",
            KeyMaterial::Ed25519(ed25519_public_key(RFC_ED25519_PUBLIC).unwrap()),
        ),
        key(
            "test-shared-secret",
            KeyMaterial::HmacSha256(decode_base64(RFC_SHARED_SECRET).unwrap()),
        ),
    ])
}

fn policy(keys: HashMap<String, Arc<SignatureKey>>, components: &[&str]) -> SignaturePolicy {
    SignaturePolicy {
        keys,
        required: true,
        components: components.iter().map(|c| (*c).to_owned()).collect(),
        max_age: Duration::from_secs(300),
        clock_skew: Duration::from_secs(30),
        label: None,
        tag: None,
    }
}

fn verify_at(
    policy: &SignaturePolicy,
    request: &TestRequest,
    now: i64,
    runtime: &IntegrityRuntime,
) -> Result<Option<Verified>, Failure> {
    policy.verify(&request.view(), now, Instant::now(), &runtime.replay)
}

/// RFC 9421 appendix B.2.6: an Ed25519 signature made by the RFC's authors verifies here.
#[test]
fn rfc_9421_ed25519_example_verifies() {
    let mut request = TestRequest::rfc();
    request.set(
        "signature-input",
        r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
    );
    request.set(
        "signature",
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
    );
    let runtime = runtime();
    let policy = policy(rfc_keys(), &["@method", "@path"]);
    let verified = verify_at(&policy, &request, RFC_CREATED + 10, &runtime)
        .unwrap()
        .expect("signed");
    assert_eq!(verified.key.keyid, "test-key-ed25519");
    assert!(!verified.covers_digest);

    // The same request again is a replay.
    assert_eq!(
        verify_at(&policy, &request, RFC_CREATED + 11, &runtime).err(),
        Some(Failure::Replayed)
    );
    // One changed byte of a covered header breaks it.
    request.set("content-length", "19");
    assert_eq!(
        verify_at(&policy, &request, RFC_CREATED + 10, &runtime).err(),
        Some(Failure::BadSignature)
    );
}

/// RFC 9421 appendix B.2.5: HMAC-SHA256 with the RFC's shared secret.
#[test]
fn rfc_9421_hmac_example_verifies() {
    let mut request = TestRequest::rfc();
    request.set(
        "signature-input",
        r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
    );
    request.set(
        "signature",
        "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
    );
    let runtime = runtime();
    let policy = policy(rfc_keys(), &[]);
    let verified = verify_at(&policy, &request, RFC_CREATED, &runtime)
        .unwrap()
        .expect("signed");
    assert_eq!(verified.key.material.algorithm(), "hmac-sha256");
}

/// Signs the test request the way a client would: builds the base by hand (independently of
/// `base.rs`) and signs it.
fn sign_ed25519(
    request: &mut TestRequest,
    signer: &SigningKey,
    params: &str,
    components: &[(&str, String)],
) {
    let list: Vec<String> = components.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let line = format!("({}){params}", list.join(" "));
    let mut base = String::new();
    for (name, value) in components {
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {line}"));
    let signature = signer.sign(base.as_bytes());
    request.set("signature-input", &format!("sig1={line}"));
    request.set(
        "signature",
        &format!(
            "sig1=:{}:",
            base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
        ),
    );
}

fn test_signer() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn test_keys() -> HashMap<String, Arc<SignatureKey>> {
    HashMap::from([key(
        "client-a",
        KeyMaterial::Ed25519(test_signer().verifying_key()),
    )])
}

fn sign_now(request: &mut TestRequest, created: i64, extra: &str) {
    let components = vec![
        ("@method", "POST".to_owned()),
        (
            "@target-uri",
            "https://example.com/foo?param=Value&Pet=dog".to_owned(),
        ),
        (
            "content-digest",
            request.headers["content-digest"]
                .to_str()
                .unwrap()
                .to_owned(),
        ),
    ];
    sign_ed25519(
        request,
        &test_signer(),
        &format!(";created={created};keyid=\"client-a\"{extra}"),
        &components,
    );
}

fn now() -> i64 {
    super::unix_now()
}

#[test]
fn the_time_window_is_enforced() {
    let runtime = runtime();
    let policy = policy(test_keys(), &["@method"]);
    let t = now();
    for (created, expected) in [
        (t - 10, None),
        (t - 300 - 31, Some(Failure::Expired)),
        (t + 31, Some(Failure::NotYetValid)),
        (t + 20, None),
    ] {
        let mut request = TestRequest::rfc();
        sign_now(&mut request, created, "");
        assert_eq!(
            verify_at(&policy, &request, t, &runtime).err(),
            expected,
            "created {created} at {t}"
        );
    }
    let mut request = TestRequest::rfc();
    sign_now(&mut request, t - 100, &format!(";expires={}", t - 40));
    assert_eq!(
        verify_at(&policy, &request, t, &runtime).err(),
        Some(Failure::Expired)
    );
    // Without `created` the age cannot be checked.
    let mut request = TestRequest::rfc();
    sign_ed25519(
        &mut request,
        &test_signer(),
        ";keyid=\"client-a\"",
        &[("@method", "POST".to_owned())],
    );
    assert_eq!(
        verify_at(&policy, &request, t, &runtime).err(),
        Some(Failure::MissingCreated)
    );
}

#[test]
fn required_components_keys_alg_and_tag() {
    let runtime = runtime();
    let t = now();
    let mut request = TestRequest::rfc();
    sign_ed25519(
        &mut request,
        &test_signer(),
        &format!(";created={t};keyid=\"client-a\""),
        &[("@method", "POST".to_owned())],
    );
    let strict = policy(test_keys(), &["@method", "@path"]);
    assert_eq!(
        verify_at(&strict, &request, t, &runtime).err(),
        Some(Failure::UncoveredComponent)
    );
    // `@target-uri` holds the path.
    let mut request = TestRequest::rfc();
    sign_now(&mut request, t, "");
    assert!(verify_at(&strict, &request, t, &runtime).is_ok());

    let mut request = TestRequest::rfc();
    sign_now(&mut request, t, ";alg=\"hmac-sha256\"");
    assert_eq!(
        verify_at(&strict, &request, t, &runtime).err(),
        Some(Failure::Algorithm)
    );

    let mut tagged = policy(test_keys(), &[]);
    tagged.tag = Some("orders-app".into());
    let mut request = TestRequest::rfc();
    sign_now(&mut request, t, "");
    assert_eq!(
        verify_at(&tagged, &request, t, &runtime).err(),
        Some(Failure::Tag)
    );
    let mut request = TestRequest::rfc();
    sign_now(&mut request, t, ";tag=\"orders-app\"");
    assert!(verify_at(&tagged, &request, t, &runtime).is_ok());

    // A key the route does not list.
    let other = policy(rfc_keys(), &[]);
    let mut request = TestRequest::rfc();
    sign_now(&mut request, t, "");
    assert_eq!(
        verify_at(&other, &request, t, &runtime).err(),
        Some(Failure::UnknownKey)
    );
}

#[test]
fn a_nonce_is_single_use() {
    let runtime = runtime();
    let policy = policy(test_keys(), &[]);
    let t = now();
    let mut first = TestRequest::rfc();
    sign_now(&mut first, t, ";nonce=\"n-1\"");
    assert!(verify_at(&policy, &first, t, &runtime).is_ok());
    // Another signature (other created) with the same nonce.
    let mut second = TestRequest::rfc();
    sign_now(&mut second, t - 1, ";nonce=\"n-1\"");
    assert_eq!(
        verify_at(&policy, &second, t, &runtime).err(),
        Some(Failure::Replayed)
    );
}

fn run(stage: &IntegrityStage, request: &TestRequest) -> (Outcome, RequestContext) {
    let mut ctx = RequestContext::default();
    let outcome = stage.inspect(&request.view(), &mut ctx);
    (outcome, ctx)
}

fn status(outcome: &Outcome) -> Option<u16> {
    match outcome {
        Outcome::Block { status, .. } => Some(*status),
        _ => None,
    }
}

#[test]
fn the_stage_checks_the_digest_a_signature_covers_and_gives_an_identity() {
    let stage = IntegrityStage::new(
        Some(policy(test_keys(), &["@method", "content-digest"])),
        None,
        1024,
        runtime(),
    );
    let mut request = TestRequest::rfc();
    sign_now(&mut request, now(), "");
    let (outcome, ctx) = run(&stage, &request);
    assert!(matches!(outcome, Outcome::Continue), "{outcome:?}");
    let identity = ctx.identity.expect("identity");
    assert_eq!(identity.subject, "client-client-a");
    assert_eq!(identity.method, AuthMethod::Signature);
    assert_eq!(identity.claims["keyid"], "client-a");

    // The signature is fine (it covers the header, not the body) but the body changed.
    let mut tampered = TestRequest::rfc();
    sign_now(&mut tampered, now() - 1, "");
    tampered.body = Some(Bytes::from_static(br#"{"hello": "WORLD"}"#));
    let (outcome, ctx) = run(&stage, &tampered);
    assert_eq!(status(&outcome), Some(400));
    assert_eq!(
        ctx.problem_detail.as_deref(),
        Some("the Content-Digest sha-512 does not match the request body")
    );

    // No signature at all: 401 with Accept-Signature naming what to cover.
    let (outcome, ctx) = run(&stage, &TestRequest::rfc());
    assert_eq!(status(&outcome), Some(401));
    assert_eq!(
        ctx.response_headers["accept-signature"],
        "sig1=(\"@method\" \"content-digest\");created"
    );
    assert!(ctx.response_headers.contains_key("www-authenticate"));
}

#[test]
fn content_digest_alone() {
    let stage = IntegrityStage::new(
        None,
        Some(DigestPolicy {
            required: true,
            algorithms: DigestAlgorithm::ALL.to_vec(),
        }),
        32,
        runtime(),
    );
    let request = TestRequest::rfc();
    assert!(matches!(run(&stage, &request).0, Outcome::Continue));
    let mut missing = TestRequest::rfc();
    missing.headers.remove("content-digest");
    assert_eq!(status(&run(&stage, &missing).0), Some(400));
    let mut junk = TestRequest::rfc();
    junk.set("content-digest", "sha-512=what");
    assert_eq!(status(&run(&stage, &junk).0), Some(400));

    // A body longer than the buffered limit cannot be checked.
    let mut long = TestRequest::rfc();
    let body = Bytes::from(vec![b'a'; 40]);
    long.set(
        "content-digest",
        &DigestAlgorithm::Sha256.field_value(&body),
    );
    long.body = Some(body);
    assert_eq!(status(&run(&stage, &long).0), Some(413));

    // A request without a body has the digest of nothing.
    let mut get = TestRequest::rfc();
    get.method = Method::GET;
    get.body = None;
    get.headers.remove("content-length");
    get.set("content-digest", &DigestAlgorithm::Sha256.field_value(b""));
    assert!(matches!(run(&stage, &get).0, Outcome::Continue));
}

#[test]
fn hmac_signatures_made_here_verify() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let keys = HashMap::from([key("partner", KeyMaterial::HmacSha256(secret.clone()))]);
    let policy = policy(keys, &["@method"]);
    let t = now();
    let line = format!("(\"@method\" \"@path\");created={t};keyid=\"partner\"");
    let base = format!("\"@method\": POST\n\"@path\": /foo\n\"@signature-params\": {line}");
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
    mac.update(base.as_bytes());
    let signature = mac.finalize().into_bytes();
    let mut request = TestRequest::rfc();
    request.set("signature-input", &format!("s={line}"));
    request.set(
        "signature",
        &format!(
            "s=:{}:",
            base64::engine::general_purpose::STANDARD.encode(signature)
        ),
    );
    assert!(verify_at(&policy, &request, t, &runtime()).is_ok());
    // A wrong secret.
    let keys = HashMap::from([key(
        "partner",
        KeyMaterial::HmacSha256(b"another-secret-of-thirty-two-byte".to_vec()),
    )]);
    assert_eq!(
        verify_at(&self::policy(keys, &[]), &request, t, &runtime()).err(),
        Some(Failure::BadSignature)
    );
}

#[test]
fn keys_parse_from_pem_and_base64() {
    let pem = ed25519_public_key(RFC_ED25519_PUBLIC).unwrap();
    let raw = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    assert_eq!(ed25519_public_key(&raw).unwrap(), pem);
    let der = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";
    assert_eq!(ed25519_public_key(der).unwrap(), pem);
    assert!(ed25519_public_key("AAAA").is_err());
    assert!(
        ed25519_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
    );
    assert_eq!(decode_base64("YWJj").unwrap(), b"abc");
    assert_eq!(decode_base64("YWI").unwrap(), b"ab", "padding optional");
    assert!(decode_base64("not base64!").is_err());
}

/// A deterministic stand-in for the fuzz target (`fuzz/fuzz_targets/signature_headers.rs`)
/// that runs with the unit tests: mutated valid fields and random bytes through the parser
/// and the stage. Nothing may panic, and a mutation never verifies.
#[test]
fn mutated_fields_never_panic_nor_verify() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let stage = IntegrityStage::new(
        Some(policy(test_keys(), &["@method"])),
        Some(DigestPolicy {
            required: false,
            algorithms: DigestAlgorithm::ALL.to_vec(),
        }),
        1024,
        runtime(),
    );
    let mut template = TestRequest::rfc();
    sign_now(&mut template, now(), ";nonce=\"n\"");
    let seeds: Vec<Vec<u8>> = ["signature-input", "signature", "content-digest"]
        .iter()
        .map(|h| template.headers[*h].as_bytes().to_vec())
        .collect();
    let alphabet = b"()\";=:,*?-_.@ abcAZ09+/\\\x00\xff";
    let mut passed = 0;
    for round in 0..3000 {
        let mut request = TestRequest::rfc();
        for (i, name) in ["signature-input", "signature", "content-digest"]
            .iter()
            .enumerate()
        {
            let mut bytes = seeds[i].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = alphabet[next() as usize % alphabet.len()],
                    1 => bytes.insert(at, alphabet[next() as usize % alphabet.len()]),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            if round % 7 == 0 {
                bytes = (0..next() % 64).map(|_| next() as u8).collect();
            }
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                request.headers.insert(*name, value);
            }
        }
        let field = |name: &str| request.headers.get(name).map_or(&[][..], |v| v.as_bytes());
        let _ = headers::parse_signatures(field("signature-input"), field("signature"));
        if matches!(run(&stage, &request).0, Outcome::Continue) {
            passed += 1;
        }
    }
    // A mutation that leaves the parsed fields equal (a space after a comma) verifies once;
    // every later one carries the same signature bytes and is a replay.
    assert!(passed <= 1, "{passed} mutated requests passed");
}
