//! Reload, slowloris protection, connection cap and graceful drain.

mod common;

use std::time::{Duration, Instant};

use apiguard_testkit::TestUpstream;
use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_good_file_is_applied_on_change_and_a_bad_one_is_rejected_while_traffic_flows() {
    let a = TestUpstream::start_named("a").await.unwrap();
    let b = TestUpstream::start_named("b").await.unwrap();
    let config = |target: std::net::SocketAddr, extra: &str| {
        format!(
            "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nupstreams:\n  u: {{targets: [\"{target}\"]}}\nroutes: [{{id: all, upstream: u}}]\naccess_log: {{enabled: false}}\nreload: {{watch: true, watch_interval: 100ms}}\n{extra}"
        )
    };
    let gw = start(&config(a.addr(), "")).await;
    let client = h1_client();
    assert_eq!(
        get(&client, &gw.url("/echo")).await.headers["x-upstream"],
        "a"
    );

    // A good file, picked up by the watcher.
    gw.write_config(&config(b.addr(), ""));
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&client, &gw.url("/echo")).await.headers["x-upstream"] != "b" {
        assert!(
            Instant::now() < deadline,
            "the changed file was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.gateway.snapshot().version, 2);

    // A bad file: rejected, version unchanged, traffic still served by the last good config.
    let mut events = gw.gateway.subscribe();
    gw.write_config(&config(b.addr(), "").replace("upstream: u", "upstream: missing"));
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a rejection event")
        .unwrap();
    let event = serde_json::to_string(&*event).unwrap();
    assert!(
        event.contains("config_rejected") && event.contains("missing"),
        "{event}"
    );
    assert_eq!(
        get(&client, &gw.url("/echo")).await.headers["x-upstream"],
        "b"
    );
    assert_eq!(gw.gateway.snapshot().version, 2);
    let err = gw.gateway.reload("test").unwrap_err().to_string();
    assert!(err.contains(":5:") || err.contains("missing"), "{err}");

    // History: versions with hashes, and the admin view of it.
    let versions = get(&client, &gw.admin_url("/config/versions")).await.json();
    assert_eq!(versions["current"], 2);
    let list = versions["versions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["trigger"], "file_change");
    assert_eq!(list[0]["hash"].as_str().unwrap().len(), 64);
    assert_ne!(list[0]["hash"], list[1]["hash"]);
    assert_eq!(
        metric(&gw, r#"apiguard_config_reloads_total{result="rejected"}"#).await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_timeout() {
    let upstream = TestUpstream::start().await.unwrap();
    let yaml = simple_config(upstream.addr(), "").replace(
        "  - address: 127.0.0.1:0",
        "  - address: 127.0.0.1:0\n    header_read_timeout: 500ms",
    );
    let gw = start(&yaml).await;
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    // Trickle a header byte now and then; the head never completes.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            let mut byte = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buffer.extend_from_slice(&byte[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
    // A well-behaved client still gets through.
    assert_eq!(
        get(&h1_client(), &gw.url("/echo")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn connections_past_max_connections_are_refused() {
    let upstream = TestUpstream::start().await.unwrap();
    let yaml = simple_config(upstream.addr(), "").replace(
        "  - address: 127.0.0.1:0",
        "  - address: 127.0.0.1:0\n    max_connections: 2",
    );
    let gw = start(&yaml).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed without an answer");
    assert_eq!(
        metric(
            &gw,
            r#"apiguard_rejected_connections_total{listener="127.0.0.1:0"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_connections() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let client = h1_client();
    let url = gw.url("/sleep/700");
    let in_flight = tokio::spawn(async move { get(&client, &url).await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    gw.gateway.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "shutdown waited for the request"
    );
    assert_eq!(
        in_flight.await.unwrap(),
        StatusCode::OK,
        "the in-flight request completed"
    );
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "the listener is closed"
    );
}
