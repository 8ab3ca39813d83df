//! Integrity end to end: a gateway verifying HTTP message signatures (Ed25519 from a PEM file,
//! HMAC-SHA256 inline) and Content-Digest in front of the recording test upstream, and
//! inspecting the responses of a "leaky" upstream that returns card numbers, SSNs and keys.
//! Real sockets, a real hyper client; the client signs requests with its own code (the
//! signature base is written out here, not borrowed from the gateway).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiguard_model::EventKind;
use apiguard_testkit::TestUpstream;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::*;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const HMAC_SECRET: &[u8] = b"an-hmac-secret-of-32-bytes-or-more!";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn ed_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// How a client signs: Ed25519 or HMAC-SHA256.
enum Key {
    Ed(Box<SigningKey>),
    Hmac(&'static [u8]),
}

/// `Signature-Input` and `Signature` values for a request: the RFC 9421 signature base
/// written by hand from the component values.
fn sign(key: &Key, label: &str, components: &[(&str, &str)], params: &str) -> (String, String) {
    let names: Vec<String> = components.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let inner = format!("({}){params}", names.join(" "));
    let mut base = String::new();
    for (name, value) in components {
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {inner}"));
    let signature = match key {
        Key::Ed(signer) => signer.sign(base.as_bytes()).to_bytes().to_vec(),
        Key::Hmac(secret) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(base.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    (
        format!("{label}={inner}"),
        format!("{label}=:{}:", STANDARD.encode(signature)),
    )
}

/// Answers by the last path segment with a fixed body: `leaky` (sensitive JSON), `clean`
/// (JSON with nothing sensitive, odd spacing included), `chunked` (the leaky body in several
/// frames without Content-Length), `big` (2 MiB of text with a card number at the end, with
/// Content-Length), `streamed` (the same, in frames without a length).
async fn leaky_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(leaky_answer(request.uri().path()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

const CLEAN: &str = "{ \"id\": 7,  \"name\": \"Widget\", \"sku\": \"WID-0007\",\n  \"price\": 12.50, \"updated\": 1700000000000 }";

fn leaky_json() -> Value {
    json!({
        "customer": {"name": "Alice", "ssn": "123-45-6789", "email": "alice@example.com"},
        "payment": {"card": "4111 1111 1111 1111", "expiry": "12/29"},
        "debug": {"aws_key": "AKIAIOSFODNN7EXAMPLE"},
        "order": 1001
    })
}

type UpstreamBody = BoxBody<Bytes, Infallible>;

fn leaky_answer(path: &str) -> Response<UpstreamBody> {
    let json_response = |body: UpstreamBody| {
        Response::builder()
            .header("content-type", "application/json")
            .header("etag", "\"v1\"")
            .body(body)
            .unwrap()
    };
    match path.rsplit('/').next().unwrap_or_default() {
        "leaky" => json_response(Full::new(Bytes::from(leaky_json().to_string())).boxed()),
        "clean" => json_response(Full::new(Bytes::from_static(CLEAN.as_bytes())).boxed()),
        "chunked" => {
            let text = leaky_json().to_string();
            let (a, b) = text.split_at(text.len() / 2);
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from(a.to_owned()))),
                Ok(Frame::data(Bytes::from(b.to_owned()))),
            ];
            json_response(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "big" => {
            let mut text = "lorem ipsum ".repeat(2 * 1024 * 1024 / 12);
            text.push_str("card 4111111111111111\n");
            Response::builder()
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(text)).boxed())
                .unwrap()
        }
        "streamed" => {
            // The same, in 64 KiB frames without a length: the bound is found while reading.
            let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..32)
                .map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))))
                .collect();
            frames.push(Ok(Frame::data(Bytes::from_static(
                b"card 4111111111111111\n",
            ))));
            Response::builder()
                .header("content-type", "text/plain")
                .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
                .unwrap()
        }
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
    }
}

struct Setup {
    gw: Harness,
    _upstream: TestUpstream,
    _keys: tempfile::TempDir,
}

async fn setup() -> Setup {
    let upstream = TestUpstream::start().await.unwrap();
    let leaky = leaky_upstream().await;
    let keys = tempfile::tempdir().unwrap();
    let pem_path = keys.path().join("partner-ed.pem");
    let pem = ed_key()
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    std::fs::write(&pem_path, pem).unwrap();
    let yaml = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{echo}"]
  leaky:
    targets: ["{leaky}"]
signatures:
  keys:
    partner-ed:
      algorithm: ed25519
      public_key_file: {pem}
      subject: partner-ed-client
    partner-hmac:
      algorithm: hmac-sha256
      secret: {secret}
routes:
  - id: signed
    match: {{path: {{prefix: /echo/signed}}}}
    upstream: backend
    integrity:
      signature:
        components: ["@method", "@target-uri", "content-digest"]
        max_age: 60s
        clock_skew: 5s
  - id: digest
    match: {{path: {{prefix: /echo/digest}}}}
    upstream: backend
    integrity:
      content_digest: {{required: true}}
  - id: masked
    match: {{path: {{prefix: /mask}}}}
    upstream: leaky
    response_inspection: {{mode: mask}}
  - id: detected
    match: {{path: {{prefix: /detect}}}}
    upstream: leaky
    response_inspection: {{mode: detect}}
  - id: bounded
    match: {{path: {{prefix: /bounded}}}}
    upstream: leaky
    response_inspection: {{mode: mask, max_body_bytes: 65536}}
access_log:
  enabled: false
reload:
  watch: false
"#,
        echo = upstream.addr(),
        pem = pem_path.display(),
        secret = STANDARD.encode(HMAC_SECRET),
    );
    Setup {
        gw: start(&yaml).await,
        _upstream: upstream,
        _keys: keys,
    }
}

async fn post(client: &TestClient, url: &str, headers: &[(&str, String)], body: &str) -> Reply {
    let mut request = Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    send(
        client,
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

/// A correctly signed POST to `url`: the headers to send.
fn signed_headers(
    key: &Key,
    keyid: &str,
    url: &str,
    body: &str,
    created: i64,
) -> Vec<(&'static str, String)> {
    let digest = content_digest(body.as_bytes());
    let (input, signature) = sign(
        key,
        "sig1",
        &[
            ("@method", "POST"),
            ("@target-uri", url),
            ("content-digest", &digest),
        ],
        &format!(";created={created};keyid=\"{keyid}\""),
    );
    vec![
        ("content-digest", digest),
        ("signature-input", input),
        ("signature", signature),
    ]
}

fn detail(reply: &Reply) -> String {
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    reply.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn signatures_verify_and_every_failure_is_refused() {
    let setup = setup().await;
    let gw = &setup.gw;
    let client = h1_client();
    let url = gw.url("/echo/signed/orders");
    let body = r#"{"item": "widget", "qty": 2}"#;
    let ed = Key::Ed(Box::new(ed_key()));
    let hmac = Key::Hmac(HMAC_SECRET);

    // Ed25519, key from a PEM file: passes, and the upstream gets the request untouched.
    let headers = signed_headers(&ed, "partner-ed", &url, body, now());
    let reply = post(&client, &url, &headers, body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["body_len"], body.len());
    assert_eq!(
        reply.json()["headers"]["signature-input"][0],
        headers[1].1.as_str()
    );

    // HMAC-SHA256, inline secret.
    let reply = post(
        &client,
        &url,
        &signed_headers(&hmac, "partner-hmac", &url, body, now()),
        body,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    // The very same signed request again: a replay.
    let replayed = post(&client, &url, &headers, body).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(detail(&replayed), "this signature was already used");

    // A bad signature: one byte of it changed.
    let mut bad = signed_headers(&ed, "partner-ed", &url, body, now() - 1);
    let mut raw = STANDARD
        .decode(bad[2].1.trim_start_matches("sig1=:").trim_end_matches(':'))
        .unwrap();
    raw[10] ^= 1;
    bad[2].1 = format!("sig1=:{}:", STANDARD.encode(raw));
    let reply = post(&client, &url, &bad, body).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(detail(&reply), "the signature is invalid");
    assert!(
        reply.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Signature realm=\"apiguard\", error=\"invalid_signature\"")
    );

    // Signed two minutes ago: outside the 60 s window (plus 5 s skew).
    let old = signed_headers(&ed, "partner-ed", &url, body, now() - 120);
    let reply = post(&client, &url, &old, body).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(detail(&reply), "the signature is too old or has expired");

    // Signed for the future.
    let future = signed_headers(&ed, "partner-ed", &url, body, now() + 120);
    let reply = post(&client, &url, &future, body).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        detail(&reply),
        "the signature's created time is in the future"
    );

    // A body changed after signing: the signature still verifies (it covers the digest
    // header), the digest does not.
    let tampered = signed_headers(&ed, "partner-ed", &url, body, now() - 2);
    let reply = post(
        &client,
        &url,
        &tampered,
        r#"{"item": "widget", "qty": 200}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        detail(&reply),
        "the Content-Digest sha-256 does not match the request body"
    );

    // A signature that leaves out a component the route requires (content-digest).
    let digest = content_digest(body.as_bytes());
    let (input, signature) = sign(
        &ed,
        "sig1",
        &[("@method", "POST"), ("@target-uri", &url)],
        &format!(";created={};keyid=\"partner-ed\"", now()),
    );
    let reply = post(
        &client,
        &url,
        &[
            ("content-digest", digest),
            ("signature-input", input),
            ("signature", signature),
        ],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.headers["accept-signature"],
        "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created"
    );

    // Another path than the one signed (the target URI is covered).
    let other = gw.url("/echo/signed/refunds");
    let reply = post(
        &client,
        &other,
        &signed_headers(&ed, "partner-ed", &url, body, now() - 3),
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // A key id nobody configured, and no signature at all.
    let reply = post(
        &client,
        &url,
        &signed_headers(&ed, "stranger", &url, body, now()),
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(detail(&reply), "the signature's keyid is not accepted");
    let reply = post(&client, &url, &[], body).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.headers.contains_key("accept-signature"));

    // Garbage in the fields: 400, not a panic.
    let reply = post(
        &client,
        &url,
        &[
            ("signature-input", "sig1=(".into()),
            ("signature", "sig1=:!!:".into()),
        ],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    for (reason, count) in [
        ("replayed", 1.0),
        ("bad_signature", 2.0),
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("digest_mismatch", 1.0),
        ("uncovered_component", 1.0),
        ("unknown_key", 1.0),
        ("signature_missing", 1.0),
        ("signature_malformed", 1.0),
    ] {
        let line =
            format!("apiguard_integrity_failures_total{{reason=\"{reason}\",route=\"signed\"}}");
        assert_eq!(metric(gw, &line).await, Some(count), "{line}");
    }
    assert_eq!(
        metric(
            gw,
            "apiguard_signatures_verified_total{algorithm=\"ed25519\",route=\"signed\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            gw,
            "apiguard_signatures_verified_total{algorithm=\"hmac-sha256\",route=\"signed\"}"
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn content_digest_is_checked_against_the_body() {
    let setup = setup().await;
    let client = h1_client();
    let url = setup.gw.url("/echo/digest");
    let body = r#"{"hello": "world"}"#;

    let reply = post(
        &client,
        &url,
        &[("content-digest", content_digest(body.as_bytes()))],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // RFC 9530's own sha-512 example for this body.
    let sha512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
    let reply = post(&client, &url, &[("content-digest", sha512.into())], body).await;
    assert_eq!(reply.status, StatusCode::OK);

    let reply = post(
        &client,
        &url,
        &[("content-digest", content_digest(b"other"))],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        detail(&reply),
        "the Content-Digest sha-256 does not match the request body"
    );
    let reply = post(&client, &url, &[], body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        detail(&reply),
        "a Content-Digest (sha-256 or sha-512) is required"
    );
    let reply = post(
        &client,
        &url,
        &[("content-digest", "sha-256=oops".into())],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(detail(&reply), "the Content-Digest field is malformed");
}

async fn until_event(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<apiguard_model::SecurityEvent>>,
    route: &str,
) -> (bool, Vec<apiguard_model::Finding>) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.route.as_deref() == Some(route)
                && let EventKind::ResponseInspected {
                    masked, findings, ..
                } = &event.kind
            {
                return (*masked, findings.clone());
            }
        }
    })
    .await
    .expect("a response event")
}

#[tokio::test]
async fn responses_are_masked_or_reported_and_clean_ones_pass_byte_for_byte() {
    let setup = setup().await;
    let gw = &setup.gw;
    let client = h1_client();
    let mut events = gw.gateway.subscribe();

    // Mask: the card number, SSN and AWS key are replaced, the rest is intact, and the
    // length is the new one.
    for path in ["/mask/leaky", "/mask/chunked"] {
        let reply = get(&client, &gw.url(path)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers["content-length"].to_str().unwrap(),
            reply.body.len().to_string(),
            "{path}"
        );
        assert!(
            !reply.headers.contains_key("etag"),
            "the ETag no longer applies"
        );
        let masked = reply.json();
        assert_eq!(
            masked["payment"]["card"], "[REDACTED:card_number]",
            "{path}"
        );
        assert_eq!(masked["customer"]["ssn"], "[REDACTED:us_ssn]");
        assert_eq!(masked["customer"]["email"], "[REDACTED:email]");
        assert_eq!(masked["debug"]["aws_key"], "[REDACTED:aws_access_key]");
        assert_eq!(masked["customer"]["name"], "Alice");
        assert_eq!(masked["payment"]["expiry"], "12/29");
        assert_eq!(masked["order"], 1001);
        let (was_masked, findings) = until_event(&mut events, "masked").await;
        assert!(was_masked);
        let rules: Vec<&str> = findings.iter().map(|f| &*f.rule_id).collect();
        assert_eq!(
            rules,
            [
                "response.card_number",
                "response.us_ssn",
                "response.email",
                "response.aws_access_key"
            ]
        );
        assert!(findings.iter().all(|f| !f.evidence.contains("4111 1111")));
    }

    // A clean response is the upstream's, byte for byte, headers included.
    let reply = get(&client, &gw.url("/mask/clean")).await;
    assert_eq!(reply.body, CLEAN.as_bytes());
    assert_eq!(reply.headers["etag"], "\"v1\"");

    // Detect: reported, not changed.
    let reply = get(&client, &gw.url("/detect/leaky")).await;
    assert_eq!(reply.body, leaky_json().to_string().as_bytes());
    let (was_masked, findings) = until_event(&mut events, "detected").await;
    assert!(!was_masked);
    assert_eq!(findings.len(), 4);

    // Above the bound: streamed through unchecked, and counted.
    let reply = get(&client, &gw.url("/bounded/big")).await;
    assert!(reply.body.len() > 2_000_000);
    assert!(reply.body.ends_with(b"card 4111111111111111\n"));
    let reply = get(&client, &gw.url("/bounded/streamed")).await;
    assert_eq!(reply.body.len(), 32 * 64 * 1024 + 22);
    assert!(reply.body.ends_with(b"card 4111111111111111\n"));
    assert!(reply.body[..32 * 64 * 1024].iter().all(|b| *b == b'x'));

    for (line, value) in [
        (
            "apiguard_response_findings_total{action=\"masked\",detector=\"card_number\",route=\"masked\"}",
            2.0,
        ),
        (
            "apiguard_response_findings_total{action=\"detected\",detector=\"card_number\",route=\"detected\"}",
            1.0,
        ),
        (
            "apiguard_response_inspection_skipped_total{reason=\"too_large\",route=\"bounded\"}",
            2.0,
        ),
        (
            "apiguard_findings_total{class=\"response\",rule=\"response.card_number\"}",
            3.0,
        ),
    ] {
        assert_eq!(metric(gw, line).await, Some(value), "{line}");
    }
}

/// OpenAPI response validation and response masking on one route read the upstream's body
/// once between them: a response that fits the specification arrives masked with its new
/// length (whether the upstream sent it whole or in frames), and one that does not is
/// replaced by a 502 before any of it leaves.
#[tokio::test]
async fn response_validation_and_masking_share_one_read_of_the_body() {
    let leaky = leaky_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("leaky.openapi.yaml");
    std::fs::write(
        &spec,
        r#"
openapi: 3.0.3
info: {title: leaky, version: "1"}
paths:
  /both/leaky:
    get:
      responses:
        "200":
          description: an order
          content:
            application/json:
              schema: {type: object, required: [order], properties: {order: {type: integer}}}
  /both/chunked:
    get:
      responses:
        "200":
          description: an order
          content:
            application/json:
              schema: {type: object, required: [order], properties: {order: {type: integer}}}
  /both/clean:
    get:
      responses:
        "200":
          description: an order, which this one is not
          content:
            application/json:
              schema: {type: object, required: [order], properties: {order: {type: integer}}}
"#,
    )
    .unwrap();
    let gw = start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  leaky:
    targets: ["{leaky}"]
    openapi:
      spec: {spec}
      responses: {{mode: enforce, undeclared_fields: false}}
routes:
  - id: both
    match: {{path: {{prefix: /both}}}}
    upstream: leaky
    response_inspection: {{mode: mask}}
access_log:
  enabled: false
reload:
  watch: false
"#,
        spec = spec.display(),
    ))
    .await;
    let client = h1_client();
    for path in ["/both/leaky", "/both/chunked"] {
        let reply = get(&client, &gw.url(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(
            reply.headers["content-length"].to_str().unwrap(),
            reply.body.len().to_string(),
            "{path}"
        );
        let masked = reply.json();
        assert_eq!(
            masked["payment"]["card"], "[REDACTED:card_number]",
            "{path}"
        );
        assert_eq!(masked["order"], 1001, "{path}");
    }
    let reply = get(&client, &gw.url("/both/clean")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(!String::from_utf8_lossy(&reply.body).contains("WID-0007"));
}
