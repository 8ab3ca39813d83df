//! The proxy's correctness with real sockets and real clients: keep-alive, HTTP/2, headers,
//! request ids, routing, limits, error mapping, retries, trailers, WebSocket.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apiguard_testkit::TestUpstream;
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};

#[tokio::test]
async fn http1_keep_alive_reuses_one_upstream_connection_and_forwards_identity_headers() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let client = h1_client();
    for _ in 0..5 {
        let reply = send(
            &client,
            Request::get(gw.url("/echo/a?x=1"))
                .header("connection", "keep-alive, x-drop-me")
                .header("x-drop-me", "secret")
                .header("keep-alive", "timeout=5")
                .header("x-forwarded-for", "203.0.113.7")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let echo = reply.json();
        assert_eq!(echo["path"], "/echo/a");
        assert_eq!(echo["query"], "x=1");
        let headers = &echo["headers"];
        assert!(
            headers.get("x-drop-me").is_none(),
            "a header named by Connection must not be forwarded"
        );
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"][0], "http");
        assert_eq!(
            headers["forwarded"][0],
            format!("for=127.0.0.1;proto=http;host={}", gw.addr.ip())
        );
        let request_id = reply.headers["x-request-id"].to_str().unwrap();
        assert_eq!(headers["x-request-id"][0], request_id);
        let traceparent = headers["traceparent"][0].as_str().unwrap();
        assert!(
            traceparent.starts_with(&format!("00-{request_id}-")),
            "{traceparent}"
        );
    }
    assert_eq!(
        upstream.connection_count(),
        1,
        "the upstream connection is pooled and reused"
    );
}

#[tokio::test]
async fn an_incoming_traceparent_and_request_id_are_honoured() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let reply = send(
        &h1_client(),
        Request::get(gw.url("/echo"))
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.headers["x-request-id"],
        "0af7651916cd43dd8448eb211c80319c"
    );
    let forwarded = reply.json()["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(forwarded.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert!(
        !forwarded.contains("b7ad6b7169203331"),
        "the gateway is a new parent span"
    );
    let reply = send(
        &h1_client(),
        Request::get(gw.url("/echo"))
            .header("x-request-id", "order-42")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.headers["x-request-id"], "order-42");
}

#[tokio::test]
async fn http2_clients_are_served_and_http1_upstreams_get_a_host_header() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let response = h2_client()
        .request(Request::get(gw.url("/echo")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"][0], gw.addr.to_string());
}

#[tokio::test]
async fn h2c_upstreams_receive_http2() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "    protocol: h2c")).await;
    let reply = get(&h1_client(), &gw.url("/echo")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn the_most_specific_route_wins() {
    let a = TestUpstream::start_named("a").await.unwrap();
    let b = TestUpstream::start_named("b").await.unwrap();
    let c = TestUpstream::start_named("c").await.unwrap();
    let yaml = format!(
        r#"
listeners: [{{address: "127.0.0.1:0"}}]
upstreams:
  a: {{targets: ["{}"]}}
  b: {{targets: ["{}"]}}
  c: {{targets: ["{}"]}}
routes:
  - {{id: catch-all, upstream: a}}
  - {{id: echo-template, upstream: b, match: {{path: {{template: "/echo/{{id}}"}}, methods: [GET]}}}}
  - {{id: echo-exact, upstream: c, match: {{path: {{exact: /echo/special}}}}}}
  - {{id: other-host, upstream: c, match: {{host: "*.example.com"}}}}
access_log: {{enabled: false}}
reload: {{watch: false}}
"#,
        a.addr(),
        b.addr(),
        c.addr()
    );
    let gw = start(&yaml).await;
    let client = h1_client();
    let who = |r: &Reply| r.headers["x-upstream"].to_str().unwrap().to_owned();
    assert_eq!(who(&get(&client, &gw.url("/echo/42")).await), "b");
    assert_eq!(who(&get(&client, &gw.url("/echo/special")).await), "c");
    assert_eq!(who(&get(&client, &gw.url("/echo/42/more")).await), "a");
    let post = send(
        &client,
        Request::post(gw.url("/echo/42"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(who(&post), "a", "the template route only takes GET");
    let other = send(
        &client,
        Request::get(gw.url("/echo/42"))
            .header("host", "api.example.com")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        who(&other),
        "c",
        "a host condition outranks any path condition"
    );
}

#[tokio::test]
async fn unrouted_requests_get_a_problem_json_404() {
    let upstream = TestUpstream::start().await.unwrap();
    let yaml = simple_config(upstream.addr(), "").replace(
        "  - id: all\n    upstream: backend",
        "  - id: api\n    upstream: backend\n    match: {path: {prefix: /api}}",
    );
    let gw = start(&yaml).await;
    let reply = get(&h1_client(), &gw.url("/nothing")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(
        reply.json()["request_id"],
        reply.headers["x-request-id"].to_str().unwrap()
    );
}

#[tokio::test]
async fn upstream_failures_map_to_502_503_504_with_problem_json() {
    let upstream = TestUpstream::start().await.unwrap();
    let dead = apiguard_testkit::free_port();
    let yaml = format!(
        r#"
listeners: [{{address: "127.0.0.1:0"}}]
upstreams:
  live: {{targets: ["{}"], request_timeout: 300ms}}
  dead: {{targets: ["127.0.0.1:{dead}"], retries: 0}}
routes:
  - {{id: slow, upstream: live, match: {{path: {{prefix: /sleep}}}}}}
  - {{id: dead, upstream: dead, match: {{path: {{prefix: /dead}}}}}}
access_log: {{enabled: false}}
reload: {{watch: false}}
"#,
        upstream.addr()
    );
    let gw = start(&yaml).await;
    let client = h1_client();
    let timeout = get(&client, &gw.url("/sleep/2000")).await;
    assert_eq!(timeout.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(timeout.headers["content-type"], "application/problem+json");
    assert_eq!(timeout.json()["status"], 504);
    let refused = get(&client, &gw.url("/dead")).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        refused.json()["request_id"],
        refused.headers["x-request-id"].to_str().unwrap()
    );
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_target_and_posts_are_not() {
    let live = TestUpstream::start().await.unwrap();
    let dead = apiguard_testkit::free_port();
    let yaml = format!(
        r#"
listeners: [{{address: "127.0.0.1:0"}}]
upstreams:
  pool:
    targets: ["127.0.0.1:{dead}", "{}"]
    retries: 1
    outlier_detection: {{consecutive_gateway_failures: 0}}
routes: [{{id: all, upstream: pool}}]
access_log: {{enabled: false}}
reload: {{watch: false}}
"#,
        live.addr()
    );
    let gw = start(&yaml).await;
    let client = h1_client();
    for _ in 0..6 {
        assert_eq!(
            get(&client, &gw.url("/echo")).await.status,
            StatusCode::OK,
            "GET is retried on the live target"
        );
    }
    let mut failed_posts = 0;
    for _ in 0..6 {
        let reply = send(
            &client,
            Request::post(gw.url("/echo"))
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await;
        if reply.status == StatusCode::BAD_GATEWAY {
            failed_posts += 1;
        }
    }
    assert!(
        failed_posts >= 2,
        "a POST with a body is never retried (round-robin sends half to the dead target)"
    );
}

#[tokio::test]
async fn body_and_header_limits_are_enforced() {
    let upstream = TestUpstream::start().await.unwrap();
    let yaml = simple_config(upstream.addr(), "").replace(
        "    upstream: backend",
        "    upstream: backend\n    limits: {max_body_bytes: 1000, max_header_count: 20, max_header_bytes: 2000}",
    );
    let gw = start(&yaml).await;
    let client = h1_client();
    let big = send(
        &client,
        Request::post(gw.url("/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; 5000])))
            .unwrap(),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.headers["content-type"], "application/problem+json");
    let small = send(
        &client,
        Request::post(gw.url("/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; 500])))
            .unwrap(),
    )
    .await;
    assert_eq!(small.json()["received"], 500);
    let mut many = Request::get(gw.url("/echo"));
    for i in 0..30 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_eq!(
        send(&client, many.body(Full::default()).unwrap())
            .await
            .status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // A chunked body without Content-Length is counted while it streams.
    let chunks =
        futures_util::stream::iter((0..10).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'y'; 400])))
        }));
    let streamed = stream_client()
        .request(
            Request::post(gw.url("/upload"))
                .body(http_body_util::StreamBody::new(chunks))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn trailers_reach_the_client_over_http2() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "    protocol: h2c")).await;
    let response = h2_client()
        .request(
            Request::get(gw.url("/trailers"))
                .header("te", "trailers")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(
        trailers[apiguard_testkit::upstream::CHECKSUM_TRAILER],
        apiguard_testkit::upstream::trailers_checksum().as_str()
    );
    assert_eq!(
        collected.to_bytes(),
        Bytes::from_static(apiguard_testkit::upstream::TRAILERS_BODY.as_bytes())
    );
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let (mut socket, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("handshake through the gateway");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "apiguard"] {
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_status_and_decision() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let client = h1_client();
    for _ in 0..3 {
        get(&client, &gw.url("/echo")).await;
    }
    get(&client, &gw.url("/status/503")).await;
    let ok =
        r#"apiguard_requests_total{decision="allow",method="GET",route="all",status_class="2xx"}"#;
    let err =
        r#"apiguard_requests_total{decision="allow",method="GET",route="all",status_class="5xx"}"#;
    assert_eq!(metric(&gw, ok).await, Some(3.0));
    assert_eq!(metric(&gw, err).await, Some(1.0));
    assert!(
        metric(
            &gw,
            r#"apiguard_request_duration_seconds_count{route="all"}"#
        )
        .await
        .unwrap()
            >= 4.0
    );
    assert_eq!(metric(&gw, "apiguard_config_version").await, Some(1.0));
    let healthy = format!(
        r#"apiguard_upstream_target_healthy{{pool="backend",target="{}"}}"#,
        upstream.addr()
    );
    assert_eq!(metric(&gw, &healthy).await, Some(1.0));
    let ready = get(&client, &gw.admin_url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        get(&client, &gw.admin_url("/healthz")).await.status,
        StatusCode::OK
    );
}

/// An upstream that answers one request per connection and then closes it without saying so
/// (no `Connection: close`), as servers with short keep-alive timeouts do.
async fn one_shot_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_reused() {
    let (upstream, accepted) = one_shot_upstream().await;
    let gw = start(&simple_config(upstream, "")).await;
    let client = h1_client();
    for i in 0..5 {
        let reply = get(&client, &gw.url("/anything")).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(&reply.body[..], b"ok");
        // Give the closed connection's FIN time to arrive for most requests, but not all.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "one connection per request"
    );
}
