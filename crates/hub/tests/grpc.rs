//! gRPC ingest (unary and client streaming) has the same semantics as REST: natural gRPC
//! shapes in, the same canonical report out, the same errors as gRPC codes.

mod common;

use std::net::Ipv6Addr;
use std::time::Duration;

use apiguard_hub::grpc::proto::threat_ingest_client::ThreatIngestClient;
use apiguard_hub::grpc::proto::{Address, Severity, ThreatReport};
use apiguard_hub::{Hub, NewParticipant, Settings};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn authorised<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn message(last_octet: u8) -> ThreatReport {
    ThreatReport {
        attack: "xss".into(),
        severity: Severity::Critical as i32,
        source: Some(Address {
            // IPv4-mapped IPv6, as a dual-stack listener sees an IPv4 client.
            ip: Ipv6Addr::from([
                0,
                0,
                0,
                0,
                0,
                0xffff,
                0xcb00,
                0x7100 + u16::from(last_octet),
            ])
            .octets()
            .to_vec(),
            prefix_len: None,
        }),
        method: "GET".into(),
        path: "/search/<script>alert(1)</script>".into(),
        payload: b"<script>alert(1)</script>".to_vec(),
        user_agent: "Mozilla/5.0 (compatible; probe)".into(),
        description: "seen on shop.delta.test".into(),
        host: "shop.delta.test".into(),
        ..ThreatReport::default()
    }
}

async fn start(
    settings: Settings,
    dir: &tempfile::TempDir,
) -> (Hub, String, String, ThreatIngestClient<Channel>) {
    let mut settings = settings;
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let (_, reporter) = hub
        .register(NewParticipant {
            name: "delta".into(),
            organisation: "Delta".into(),
            own_hosts: vec!["shop.delta.test".into()],
            ..NewParticipant::default()
        })
        .await
        .unwrap();
    let (_, receiver) = hub
        .register(NewParticipant {
            name: "epsilon".into(),
            organisation: "Epsilon".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let client = ThreatIngestClient::connect(format!("http://{}", hub.local_addr()))
        .await
        .unwrap();
    (hub, reporter, receiver, client)
}

async fn unary_and_streamed_reports_reach_the_feed(settings: Settings) {
    let dir = tempfile::tempdir().unwrap();
    let (hub, reporter, receiver, mut client) = start(settings, &dir).await;
    let ack = client
        .report(authorised(message(9), &reporter))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(uuid::Uuid::parse_str(&ack.id).unwrap().get_version_num(), 7);

    let stream = tokio_stream::iter((10..13).map(message).collect::<Vec<_>>());
    let answer = client
        .report_stream(authorised(stream, &reporter))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 3);
    assert!(
        answer
            .results
            .iter()
            .all(|r| r.code == 0 && !r.id.is_empty())
    );

    let base = format!("http://{}", hub.local_addr());
    let received = common::collect_feed(
        &reqwest::Client::new(),
        &base,
        &receiver,
        4,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(received.len(), 4);
    let first = received
        .iter()
        .find(|r| r["id"] == ack.id.as_str())
        .expect("the unary report arrives");
    assert_eq!(
        first["indicators"]["ip"], "203.0.113.9",
        "IPv4-mapped IPv6 is shared as IPv4"
    );
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["category"]["class"], "xss");
    assert_eq!(first["indicators"]["route"], "GET /search/{param}/{param}");
    use sha2::Digest;
    assert_eq!(
        first["indicators"]["payload_sha256"],
        apiguard_hub::auth::hex(&sha2::Sha256::digest(b"<script>alert(1)</script>")),
        "the payload bytes are hashed like REST's payload"
    );
    assert!(!received.iter().any(|r| r.to_string().contains("delta")));
    common::stop_and_clean(hub).await;
}

#[tokio::test]
async fn grpc_reports_reach_the_feed_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    unary_and_streamed_reports_reach_the_feed(common::rabbit_settings("")).await;
}

#[tokio::test]
async fn grpc_reports_reach_the_feed_in_embedded_mode() {
    unary_and_streamed_reports_reach_the_feed(common::settings("")).await;
}

#[tokio::test]
async fn grpc_errors_carry_the_right_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, reporter, _, mut client) = start(common::settings(""), &dir).await;

    let status = client.report(Request::new(message(1))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .report(authorised(message(1), "ahk_nope"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut bad = message(1);
    bad.source = Some(Address {
        ip: vec![1, 2, 3],
        prefix_len: None,
    });
    let status = client.report(authorised(bad, &reporter)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("source.ip"),
        "{}",
        status.message()
    );

    let mut unknown = message(1);
    unknown.attack = "teleportation".into();
    let stream = tokio_stream::iter(vec![message(1), unknown, message(2)]);
    let status = client
        .report_stream(authorised(stream, &reporter))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("reports[1]"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("unknown attack class"),
        "{}",
        status.message()
    );
    common::stop_and_clean(hub).await;
}

#[tokio::test]
async fn grpc_ingest_answers_resource_exhausted_past_the_queue_bound() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = common::rabbit_settings("  ingest_max_length: 2\n  workers: 0\n");
    let (hub, reporter, _, mut client) = start(settings, &dir).await;
    let mut codes = Vec::new();
    for n in 0..10 {
        codes.push(
            match client.report(authorised(message(n), &reporter)).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            },
        );
    }
    let exhausted = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert!(exhausted >= 7, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count() + exhausted,
        10,
        "{codes:?}"
    );
    common::stop_and_clean(hub).await;
}
