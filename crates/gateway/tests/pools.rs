//! Upstream pools: active health checks eject and restore targets; passive outlier detection
//! ejects after consecutive failures, within the ejection cap.

mod common;

use std::time::Duration;

use apiguard_testkit::{TestUpstream, UpstreamMode};
use common::*;
use http::StatusCode;

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn pool_config(a: &TestUpstream, b: &TestUpstream, pool_extra: &str) -> String {
    format!(
        r#"
listeners: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
upstreams:
  pool:
    targets: ["{}", "{}"]
{pool_extra}
routes: [{{id: all, upstream: pool}}]
access_log: {{enabled: false}}
reload: {{watch: false}}
"#,
        a.addr(),
        b.addr()
    )
}

#[tokio::test]
async fn health_checks_eject_a_failing_target_and_bring_it_back() {
    let a = TestUpstream::start_named("a").await.unwrap();
    let b = TestUpstream::start_named("b").await.unwrap();
    let extra = "    health_check: {path: /healthz, interval: 200ms, timeout: 200ms, unhealthy_threshold: 2, healthy_threshold: 2}\n    outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failures: 0}";
    let gw = start(&pool_config(&a, &b, extra)).await;
    let mut events = gw.gateway.subscribe();
    let client = h1_client();
    b.set_mode(UpstreamMode::Failing).await;
    let gauge = format!(
        r#"apiguard_upstream_target_healthy{{pool="pool",target="{}"}}"#,
        b.addr()
    );
    eventually("b marked unhealthy", async || {
        metric(&gw, &gauge).await == Some(0.0)
    })
    .await;
    for _ in 0..10 {
        let reply = get(&client, &gw.url("/echo")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers["x-upstream"], "a",
            "the unhealthy target gets no traffic"
        );
    }
    let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        serde_json::to_string(&*event)
            .unwrap()
            .contains("upstream_ejected")
    );
    b.set_mode(UpstreamMode::Healthy).await;
    eventually("b back in rotation", async || {
        metric(&gw, &gauge).await == Some(1.0)
    })
    .await;
    let mut seen_b = false;
    for _ in 0..6 {
        seen_b |= get(&client, &gw.url("/echo")).await.headers["x-upstream"] == "b";
    }
    assert!(seen_b, "a recovered target takes traffic again");
}

#[tokio::test]
async fn consecutive_5xx_eject_a_target_for_the_base_ejection_time() {
    let a = TestUpstream::start_named("a").await.unwrap();
    let b = TestUpstream::start_named("b").await.unwrap();
    let extra = "    outlier_detection: {consecutive_5xx: 3, base_ejection_time: 1s, max_ejection_percent: 50}";
    let gw = start(&pool_config(&a, &b, extra)).await;
    let client = h1_client();
    b.set_mode(UpstreamMode::Failing).await;
    let mut failures = 0;
    for _ in 0..12 {
        if get(&client, &gw.url("/echo")).await.status == StatusCode::INTERNAL_SERVER_ERROR {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 3,
        "after three 5xx in a row the target is ejected"
    );
    let ejections = format!(
        r#"apiguard_upstream_ejections_total{{pool="pool",reason="consecutive_5xx",target="{}"}}"#,
        b.addr()
    );
    assert_eq!(metric(&gw, &ejections).await, Some(1.0));
    b.set_mode(UpstreamMode::Healthy).await;
    let gauge = format!(
        r#"apiguard_upstream_target_healthy{{pool="pool",target="{}"}}"#,
        b.addr()
    );
    eventually("ejection over", async || {
        metric(&gw, &gauge).await == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn connect_failures_eject_but_never_more_than_the_cap() {
    let a = TestUpstream::start_named("a").await.unwrap();
    let b = TestUpstream::start_named("b").await.unwrap();
    let extra = "    retries: 0\n    outlier_detection: {consecutive_gateway_failures: 1, base_ejection_time: 10s, max_ejection_percent: 50}";
    let gw = start(&pool_config(&a, &b, extra)).await;
    let client = h1_client();
    a.set_mode(UpstreamMode::Down).await;
    b.set_mode(UpstreamMode::Down).await;
    for _ in 0..6 {
        let status = get(&client, &gw.url("/echo")).await.status;
        assert!(status == StatusCode::BAD_GATEWAY, "{status}");
    }
    let ejected: f64 = futures_util::future::join_all([a.addr(), b.addr()].map(|addr| {
        let gw = &gw;
        async move {
            metric(
                gw,
                &format!(r#"apiguard_upstream_target_healthy{{pool="pool",target="{addr}"}}"#),
            )
            .await
            .unwrap()
        }
    }))
    .await
    .iter()
    .map(|healthy| 1.0 - healthy)
    .sum();
    assert_eq!(
        ejected, 1.0,
        "max_ejection_percent 50 of two targets ejects one at most"
    );
}

#[tokio::test]
async fn a_pool_with_no_healthy_target_answers_503_problem_json_and_readyz_names_it() {
    let only = TestUpstream::start_named("only").await.unwrap();
    let yaml = format!(
        r#"
listeners: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
upstreams:
  pool:
    targets: ["{}"]
    health_check: {{path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1}}
routes: [{{id: all, upstream: pool}}]
access_log: {{enabled: false}}
reload: {{watch: false}}
"#,
        only.addr()
    );
    let gw = start(&yaml).await;
    let client = h1_client();
    only.set_mode(UpstreamMode::Failing).await;
    eventually("the only target marked unhealthy", async || {
        get(&client, &gw.url("/echo")).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let reply = get(&client, &gw.url("/echo")).await;
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.json()["status"], 503);
    let ready = get(&client, &gw.admin_url("/readyz")).await.json();
    assert_eq!(ready["pools_without_available_target"][0], "pool");
    only.set_mode(UpstreamMode::Healthy).await;
    eventually("the target back", async || {
        get(&client, &gw.url("/echo")).await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn least_requests_prefers_the_target_with_fewer_requests_in_flight() {
    let a = TestUpstream::start_named("a").await.unwrap();
    let b = TestUpstream::start_named("b").await.unwrap();
    let gw = start(&pool_config(&a, &b, "    balancing: least_requests")).await;
    let client = h1_client();
    // Hold one slow request on whichever target takes it first; every quick request then
    // goes to the other one.
    let slow_url = gw.url("/sleep/1500");
    let slow_client = client.clone();
    let slow = tokio::spawn(async move {
        get(&slow_client, &slow_url).await.headers["x-upstream"]
            .to_str()
            .unwrap()
            .to_owned()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut quick = Vec::new();
    for _ in 0..6 {
        quick.push(
            get(&client, &gw.url("/echo")).await.headers["x-upstream"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let busy = slow.await.unwrap();
    assert!(
        quick.iter().all(|t| *t != busy),
        "quick requests avoided the busy target {busy}: {quick:?}"
    );
}
