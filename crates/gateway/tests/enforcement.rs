//! Block rules: added and removed through the admin API, enforced before anything else,
//! expiring by themselves, surviving configuration reloads.

mod common;

use std::time::Duration;

use apiguard_model::EventKind;
use apiguard_testkit::TestUpstream;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

async fn admin(method: &str, gw: &Harness, path: &str, body: &str) -> Reply {
    send(
        &h1_client(),
        Request::builder()
            .method(method)
            .uri(gw.admin_url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn an_operator_block_refuses_the_client_until_it_expires() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let mut events = gw.gateway.subscribe();
    let client = h1_client();
    assert_eq!(get(&client, &gw.url("/echo")).await.status, StatusCode::OK);

    let added = admin(
        "POST",
        &gw,
        "/enforcement/blocks",
        r#"{"target":"127.0.0.1","ttl":"1s","reason":"credential stuffing"}"#,
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{:?}", added.body);
    assert_eq!(added.json()["rule"]["target"], "127.0.0.1");
    let before = upstream.request_count();
    let refused = get(&client, &gw.url("/echo")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    assert_eq!(
        upstream.request_count(),
        before,
        "a blocked client reached the upstream"
    );
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if let EventKind::RequestInspected { findings, .. } = &event.kind
                && let Some(f) = findings.iter().find(|f| f.rule_id == "enforcement.block")
            {
                return f.evidence.clone();
            }
        }
    })
    .await
    .expect("an enforcement event");
    assert!(
        event.contains("127.0.0.1") && event.contains("credential stuffing"),
        "{event}"
    );
    let listed = admin("GET", &gw, "/enforcement/blocks", "").await.json();
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        get(&client, &gw.url("/echo")).await.status,
        StatusCode::OK,
        "the rule expired"
    );
}

#[tokio::test]
async fn prefixes_block_until_removed_and_outlive_a_reload() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    let client = h1_client();
    let added = admin(
        "POST",
        &gw,
        "/enforcement/blocks",
        r#"{"target":"127.0.0.0/8","ttl":"10m"}"#,
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED);
    assert_eq!(
        get(&client, &gw.url("/echo")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin("POST", &gw, "/config/reload", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&client, &gw.url("/echo")).await.status,
        StatusCode::FORBIDDEN,
        "a reload dropped the block"
    );
    let removed = admin(
        "DELETE",
        &gw,
        "/enforcement/blocks?target=127.0.0.0%2F8",
        "",
    )
    .await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(get(&client, &gw.url("/echo")).await.status, StatusCode::OK);
    assert_eq!(
        admin("DELETE", &gw, "/enforcement/blocks?target=127.0.0.0/8", "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_block_requests_get_a_clear_error() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&simple_config(upstream.addr(), "")).await;
    for (body, expected) in [
        (r#"{"target":"10.0.0.1/8","ttl":"1m"}"#, "host bits"),
        (r#"{"target":"example.com","ttl":"1m"}"#, "not an IP"),
        (r#"{"target":"10.0.0.1","ttl":"0s"}"#, "longer than 0"),
        (r#"{"target":"10.0.0.1","ttl":"90d"}"#, "unknown unit"),
        (r#"{"target":"10.0.0.1"}"#, "ttl"),
        ("not json", "expected"),
    ] {
        let reply = admin("POST", &gw, "/enforcement/blocks", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(expected), "{body}: {error}");
    }
    assert!(
        admin("GET", &gw, "/enforcement/blocks", "").await.json()["rules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
