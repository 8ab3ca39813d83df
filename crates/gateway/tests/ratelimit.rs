//! Rate limiting end to end: 429 with Retry-After and the RateLimit fields, limits per API
//! key after authentication, two gateways sharing one limit through the real Redis, and the
//! local fallback when Redis is unreachable.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apiguard_testkit::TestUpstream;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

const REDIS: &str = "127.0.0.1:6379";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(upstream: SocketAddr, top: &str, route: &str) -> String {
    format!(
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
          - {{name: billing, sha256: {billing}}}
          - {{name: ops, sha256: {ops}}}
rate_limit:
{top}
routes:
  - id: api
    match: {{path: {{prefix: /echo}}}}
    upstream: backend
{route}
  - id: open
    upstream: backend
    rate_limit: []
access_log:
  enabled: false
reload:
  watch: false
"#,
        billing = sha256_hex("billing-key"),
        ops = sha256_hex("ops-key"),
    )
}

async fn get_key(client: &TestClient, url: &str, key: &str) -> Reply {
    send(
        client,
        Request::get(url)
            .header("x-api-key", key)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

fn header(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_with_retry_after_and_ratelimit_fields() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&config(
        upstream.addr(),
        "  defaults:\n    - {name: per-client, key: client, rate: 3, per: 1m}",
        "",
    ))
    .await;
    let client = h1_client();
    let url = gw.url("/echo/orders");
    for remaining in [2, 1, 0] {
        let reply = get(&client, &url).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            header(&reply, "ratelimit-policy"),
            ["\"per-client\";q=3;w=60"]
        );
        let ratelimit = header(&reply, "ratelimit");
        assert!(
            ratelimit[0].starts_with(&format!("\"per-client\";r={remaining};t=")),
            "{ratelimit:?}"
        );
    }
    let reply = get(&client, &url).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.json()["status"], 429);
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry_after),
        "one request per 20 s: {retry_after}"
    );
    assert_eq!(
        header(&reply, "ratelimit-policy"),
        ["\"per-client\";q=3;w=60"]
    );
    assert_eq!(
        header(&reply, "ratelimit"),
        [format!("\"per-client\";r=0;t={retry_after}")]
    );
    assert_eq!(
        upstream.request_count(),
        3,
        "the refused request never reached the upstream"
    );
    // A reload that leaves the limit unchanged keeps its counts.
    gw.gateway.reload("test").unwrap();
    assert_eq!(
        get(&client, &url).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A route with `rate_limit: []` is not limited.
    for _ in 0..5 {
        assert_eq!(
            get(&client, &gw.url("/healthz")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        metric(
            &gw,
            "apiguard_ratelimit_refusals_total{limit=\"per-client\",route=\"api\"}"
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn limits_per_api_key_count_each_key_after_authentication() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&config(
        upstream.addr(),
        "  headers: false",
        "    auth: {providers: [partners]}\n    rate_limit:\n      - {key: api_key, rate: 2, per: 1m}",
    ))
    .await;
    let client = h1_client();
    let url = gw.url("/echo/orders");
    for _ in 0..2 {
        let reply = get_key(&client, &url, "billing-key").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.headers.get("ratelimit").is_none(), "headers: false");
    }
    assert_eq!(
        get_key(&client, &url, "billing-key").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get_key(&client, &url, "ops-key").await.status,
        StatusCode::OK
    );
    // An unknown key is an authentication failure, not a rate-limit one.
    assert_eq!(
        get_key(&client, &url, "nobody").await.status,
        StatusCode::UNAUTHORIZED
    );
}

fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("apiguard-test:{}:{nanos}", std::process::id())
}

#[tokio::test]
async fn two_gateways_share_one_limit_through_redis() {
    if !apiguard_testkit::require_service("Redis", REDIS) {
        return;
    }
    let upstream = TestUpstream::start().await.unwrap();
    let top = format!(
        "  redis: {{url: \"redis://{REDIS}\", sync_interval: 50ms, key_prefix: \"{}\"}}",
        unique_prefix()
    );
    let route = "    rate_limit:\n      - {name: all, key: route, rate: 10, per: 1m}";
    let yaml = config(upstream.addr(), &top, route);
    let a = start(&yaml).await;
    let b = start(&yaml).await;
    for gw in [&a, &b] {
        let started = Instant::now();
        while metric(gw, "apiguard_ratelimit_redis_up").await != Some(1.0) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "Redis never up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let client = h1_client();
    for i in 0..10 {
        assert_eq!(
            get(&client, &a.url("/echo/x")).await.status,
            StatusCode::OK,
            "request {i} on A"
        );
    }
    assert_eq!(
        get(&client, &a.url("/echo/x")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A's counts reach Redis within a few sync intervals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B alone would let 10 through.
    let mut passed_on_b = 0;
    for _ in 0..30 {
        if get(&client, &b.url("/echo/x")).await.status == StatusCode::OK {
            passed_on_b += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        passed_on_b <= 4,
        "B let {passed_on_b} requests through a shared limit A had used up"
    );
}

#[tokio::test]
async fn with_redis_unreachable_limits_fall_back_to_each_gateway() {
    let upstream = TestUpstream::start().await.unwrap();
    let port = apiguard_testkit::free_port();
    let top = format!(
        "  redis: {{url: \"redis://127.0.0.1:{port}\", sync_interval: 50ms, timeout: 200ms}}"
    );
    let route = "    rate_limit:\n      - {name: all, key: route, rate: 3, per: 1m}";
    let gw = start(&config(upstream.addr(), &top, route)).await;
    let client = h1_client();
    for i in 0..3 {
        assert_eq!(
            get(&client, &gw.url("/echo/x")).await.status,
            StatusCode::OK,
            "request {i}"
        );
    }
    assert_eq!(
        get(&client, &gw.url("/echo/x")).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the local limit holds without Redis"
    );
    let started = Instant::now();
    while metric(&gw, "apiguard_ratelimit_redis_errors_total")
        .await
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no Redis error counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&gw, "apiguard_ratelimit_redis_up").await, Some(0.0));
}
