//! The GraphQL `feed` subscription over a WebSocket (graphql-transport-ws), on the real
//! RabbitMQ and in embedded mode: authenticated like every feed call, it delivers exactly
//! what the participant's REST feed delivers (same items, same order, its filter, never its
//! own reports), withdrawals included, and resumes from a cursor without a gap.

mod common;

use std::time::Duration;

use apiguard_hub::{Hub, Settings};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const SUBSCRIBE: &str = "subscription($after: Int) { feed(after: $after) { cursor kind item } }";

/// Opens the GraphQL WebSocket, optionally with an `Authorization` header on the upgrade.
async fn open(base: &str, header_key: Option<&str>) -> Result<Socket, String> {
    let mut request = format!("{}/graphql", base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    if let Some(key) = header_key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| e.to_string())
}

async fn next_json(socket: &mut Socket, within: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(within, socket.next()).await.ok()??;
        match message.ok()? {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Close(frame) => {
                return Some(json!({"closed": frame.map(|f| u16::from(f.code))}));
            }
            _ => continue,
        }
    }
}

/// Authenticates in `connection_init` and subscribes; the open socket.
async fn subscribe(base: &str, key: &str, after: Option<i64>) -> Socket {
    let mut socket = open(base, None).await.unwrap();
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {key}")}});
    socket.send(Message::text(init.to_string())).await.unwrap();
    let ack = next_json(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let subscribe = json!({"id": "1", "type": "subscribe",
        "payload": {"query": SUBSCRIBE, "variables": {"after": after}}});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    socket
}

/// Collects `want` feed events (or what arrives within `within`).
async fn events(socket: &mut Socket, want: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(message) = next_json(socket, left).await else {
            break;
        };
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        out.push(message["payload"]["data"]["feed"].clone());
    }
    out
}

async fn post(client: &reqwest::Client, base: &str, key: &str, body: Value) {
    let response = client
        .post(format!("{base}/v1/reports"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

async fn subscription_equals_the_feed(settings: Settings) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings;
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let client = reqwest::Client::new();
    let (_, alpha) = common::register(
        &client,
        &base,
        json!({"name": "alpha", "organisation": "Alpha"}),
    )
    .await;
    let (_, beta) = common::register(
        &client,
        &base,
        json!({"name": "beta", "organisation": "Beta"}),
    )
    .await;
    let (_, gamma) = common::register(
        &client,
        &base,
        json!({"name": "gamma", "organisation": "Gamma", "subscription": {"classes": ["xss"]}}),
    )
    .await;

    // From the start of the (empty) log, so that no report can slip in before a
    // subscription has read where the log ends.
    let mut beta_live = subscribe(&base, &beta, Some(0)).await;
    let mut gamma_live = subscribe(&base, &gamma, Some(0)).await;
    let mut alpha_live = subscribe(&base, &alpha, Some(0)).await;

    for n in 1..=3 {
        post(
            &client,
            &base,
            &alpha,
            json!({"attack": "sqli", "source_ip": format!("192.0.2.{n}")}),
        )
        .await;
    }
    post(
        &client,
        &base,
        &alpha,
        json!({"attack": "xss", "source_ip": "192.0.2.4"}),
    )
    .await;

    let live = events(&mut beta_live, 4, Duration::from_secs(15)).await;
    let polled = common::collect_feed(&client, &base, &beta, 4, Duration::from_secs(15)).await;
    let live_ids: Vec<&Value> = live.iter().map(|e| &e["item"]["id"]).collect();
    let polled_ids: Vec<&Value> = polled.iter().map(|r| &r["id"]).collect();
    assert_eq!(live_ids.len(), 4, "{live:?}");
    assert_eq!(live_ids, polled_ids, "the subscription is the feed");
    assert!(live.iter().all(|e| e["kind"] == "report"));
    assert!(
        live.windows(2)
            .all(|w| w[0]["cursor"].as_i64() < w[1]["cursor"].as_i64())
    );

    // Gamma's filter: the XSS report only. Alpha: none of its own.
    let filtered = events(&mut gamma_live, 1, Duration::from_secs(15)).await;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0]["item"]["category"]["class"], "xss");
    assert!(
        events(&mut gamma_live, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    assert!(
        events(&mut alpha_live, 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "a reporter never receives its own reports"
    );

    // A withdrawal arrives live too, and through the feed.
    let answer = client
        .post(format!("{base}/admin/withdrawals"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"indicator": "192.0.2.2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let withdrawal = events(&mut beta_live, 1, Duration::from_secs(15)).await;
    assert_eq!(withdrawal.len(), 1);
    assert_eq!(withdrawal[0]["kind"], "withdrawal");
    // (Workers handle reports concurrently: the feed's order need not be the posting order.)
    let withdrawn = live
        .iter()
        .find(|e| e["item"]["indicators"]["ip"] == "192.0.2.2")
        .unwrap();
    assert_eq!(withdrawal[0]["item"]["withdraws"], withdrawn["item"]["id"]);
    let polled = common::collect_feed(&client, &base, &beta, 1, Duration::from_secs(15)).await;
    assert_eq!(polled[0]["id"], withdrawal[0]["item"]["id"]);

    // A consumer that went away resumes after its last cursor, without a gap.
    let first_cursor = live[0]["cursor"].as_i64().unwrap();
    let mut resumed = subscribe(&base, &beta, Some(first_cursor)).await;
    let replay = events(&mut resumed, 4, Duration::from_secs(15)).await;
    let replay_ids: Vec<&Value> = replay.iter().map(|e| &e["item"]["id"]).collect();
    assert_eq!(
        replay_ids,
        vec![
            live_ids[1],
            live_ids[2],
            live_ids[3],
            &withdrawal[0]["item"]["id"]
        ]
    );
    // Without a cursor, a subscription starts from now: no history.
    let mut fresh = subscribe(&base, &beta, None).await;
    assert!(
        events(&mut fresh, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    common::stop_and_clean(hub).await;
}

#[tokio::test]
async fn the_subscription_delivers_the_feed_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    subscription_equals_the_feed(common::rabbit_settings(&common::admin_line())).await;
}

#[tokio::test]
async fn the_subscription_delivers_the_feed_in_embedded_mode() {
    subscription_equals_the_feed(common::settings(&common::admin_line())).await;
}

#[tokio::test]
async fn the_subscription_is_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&common::admin_line());
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let client = reqwest::Client::new();
    let (_, key) = common::register(
        &client,
        &base,
        json!({"name": "alpha", "organisation": "Alpha"}),
    )
    .await;

    // A wrong key in the upgrade's header: 401, no WebSocket.
    let err = open(&base, Some("ahk_wrong")).await.unwrap_err();
    assert!(err.contains("401"), "{err}");
    // No key anywhere: the connection_init is refused with 4403.
    let mut socket = open(&base, None).await.unwrap();
    socket
        .send(Message::text(r#"{"type":"connection_init","payload":{}}"#))
        .await
        .unwrap();
    let closed = next_json(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(closed["closed"], 4403, "{closed}");
    // A wrong key in the payload: the same.
    let mut socket = open(&base, None).await.unwrap();
    socket
        .send(Message::text(
            r#"{"type":"connection_init","payload":{"authorization":"Bearer ahk_nope"}}"#,
        ))
        .await
        .unwrap();
    let closed = next_json(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(closed["closed"], 4403, "{closed}");
    // A subscribe before connection_init is refused by the protocol.
    let mut socket = open(&base, None).await.unwrap();
    socket
        .send(Message::text(
            json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}).to_string(),
        ))
        .await
        .unwrap();
    let closed = next_json(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(closed["closed"].is_number(), "{closed}");
    // The key in the upgrade's header is enough, with an empty connection_init.
    let mut socket = open(&base, Some(&key)).await.unwrap();
    socket
        .send(Message::text(r#"{"type":"connection_init"}"#))
        .await
        .unwrap();
    let ack = next_json(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    // Without the subprotocol, or as a plain GET, there is no WebSocket.
    let response = client.get(format!("{base}/graphql")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    // Over POST, a subscription is refused with a GraphQL error.
    let response = client
        .post(format!("{base}/graphql"))
        .bearer_auth(&key)
        .json(&json!({"query": SUBSCRIBE}))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert!(answer["errors"][0]["message"].is_string(), "{answer}");
    // A hub that stops closes its WebSockets ("going away").
    common::stop_and_clean(hub).await;
    let closed = next_json(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(closed["closed"], 1001, "{closed}");
}

/// A subscription resuming from a cursor the log no longer holds is refused with the
/// reason, not resumed from somewhere else.
#[tokio::test]
async fn a_subscription_from_a_pruned_or_unknown_cursor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings(&common::admin_line());
    let (hub, base, client, keys) =
        common::start_with(settings, &dir, &[("alpha", "Alpha"), ("beta", "Beta")]).await;
    let [alpha, beta] = <[String; 2]>::try_from(keys).unwrap();
    for n in 1..=3 {
        post(
            &client,
            &base,
            &alpha,
            json!({"attack": "sqli", "source_ip": format!("203.0.113.{n}")}),
        )
        .await;
    }
    let mut socket = subscribe(&base, &beta, Some(0)).await;
    assert_eq!(
        events(&mut socket, 3, Duration::from_secs(10)).await.len(),
        3
    );
    drop(socket);
    let store = &hub.state().pipeline.store;
    store
        .prune_feed(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    for (after, code) in [
        (1, "FEED_CURSOR_EXPIRED"),
        (1_000_000, "FEED_CURSOR_UNKNOWN"),
    ] {
        let mut socket = subscribe(&base, &beta, Some(after)).await;
        let message = next_json(&mut socket, Duration::from_secs(10))
            .await
            .unwrap();
        // graphql-transport-ws carries a resolver's error as a `next` with `errors`.
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(
            message["payload"]["errors"][0]["extensions"]["code"], code,
            "{message}"
        );
    }
    common::stop_and_clean(hub).await;
}
