//! GraphQL over WebSocket at `GET /graphql`: the HTTP/1.1 upgrade (hyper), WebSocket framing
//! (tungstenite), and async-graphql's implementation of the graphql-transport-ws protocol
//! (the legacy graphql-ws subprotocol is accepted too).
//!
//! Authentication, as for every feed call: the participant's API key in the upgrade's
//! `Authorization: Bearer KEY` header, or in the `connection_init` payload
//! (`{"authorization": "Bearer KEY"}` or `{"apiKey": "KEY"}`, for browsers, which cannot set
//! headers on a WebSocket). Without a valid key the connection is closed with 4403; without
//! `connection_init` within [`INIT_TIMEOUT`], with 4408 (the protocol's codes). Messages are
//! capped at [`MAX_MESSAGE_BYTES`] and operations per connection at [`MAX_OPERATIONS`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocket as GqlWebSocket, WebSocketProtocols, WsMessage};
use axum::body::Body;
use axum::http::header::{
    AUTHORIZATION, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::HubState;
use crate::error::HubError;
use crate::graphql::HubSchema;
use crate::pipeline::ParticipantEntry;

/// Time allowed between the upgrade and `connection_init`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message a client may send.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The most operations (subscriptions) one connection may run at once.
pub const MAX_OPERATIONS: usize = 16;
/// How often the server pings an idle client, to find dead connections.
const PING_EVERY: Duration = Duration::from_secs(30);

/// `GET /graphql`: upgrades to a GraphQL WebSocket.
pub async fn upgrade(
    state: Arc<HubState>,
    schema: HubSchema,
    mut request: Request<Body>,
) -> Response {
    let headers = request.headers();
    let wants_websocket = headers
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let version_13 = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers
        .get(SEC_WEBSOCKET_KEY)
        .filter(|_| wants_websocket && version_13)
    else {
        return HubError::Invalid(
            "GET /graphql is a WebSocket (graphql-transport-ws); use POST for queries and mutations"
                .into(),
        )
        .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let offered = headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(protocol) = offered
        .split(',')
        .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
    else {
        return HubError::Invalid(
            "offer the graphql-transport-ws subprotocol (Sec-WebSocket-Protocol)".into(),
        )
        .into_response();
    };
    // A key in the upgrade's header is checked now: a wrong one is a plain 401.
    let header_key = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token);
    let preauthenticated = match header_key {
        Some(key) => match crate::ingest::authenticate(&state, Some(key)).await {
            Ok(entry) => Some(entry),
            Err(error) => return error.into_response(),
        },
        None => None,
    };

    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        serve(socket, state, schema, protocol, preauthenticated).await;
    });

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.sec_websocket_protocol()),
    );
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// The fields of a client message this layer looks at.
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
}

/// The API key a `connection_init` payload carries.
fn key_in(payload: &serde_json::Value) -> Option<String> {
    for field in ["authorization", "Authorization"] {
        if let Some(value) = payload.get(field).and_then(|v| v.as_str()) {
            return Some(
                crate::auth::bearer_token(value)
                    .unwrap_or(value)
                    .trim()
                    .to_owned(),
            );
        }
    }
    ["apiKey", "api_key", "x-api-key"]
        .iter()
        .find_map(|field| payload.get(*field).and_then(|v| v.as_str()))
        .map(|v| v.trim().to_owned())
}

const UNAUTHENTICATED: &str = "Forbidden: send the participant API key in the connection_init payload ({\"authorization\": \"Bearer KEY\"})";

async fn serve<S>(
    socket: WebSocketStream<S>,
    state: Arc<HubState>,
    schema: HubSchema,
    protocol: WebSocketProtocols,
    preauthenticated: Option<Arc<ParticipantEntry>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = socket.split();
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        loop {
            if *stopping.borrow_and_update() || stopping.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(stopped);
    // Bounded; a client that sends faster than the protocol reads is closed (awaiting room
    // here would stop this loop from driving the protocol that makes room).
    let (to_graphql, mut from_client) = mpsc::channel::<Vec<u8>>(MAX_OPERATIONS * 4);
    let client_messages = futures_util::stream::poll_fn(move |cx| from_client.poll_recv(cx));
    let init_state = state.clone();
    let mut graphql = GqlWebSocket::new(schema, client_messages, protocol).on_connection_init(
        move |payload| async move {
            let entry = match key_in(&payload) {
                Some(key) => crate::ingest::authenticate(&init_state, Some(&key))
                    .await
                    .map_err(|_| async_graphql::Error::new(UNAUTHENTICATED))?,
                None => {
                    preauthenticated.ok_or_else(|| async_graphql::Error::new(UNAUTHENTICATED))?
                }
            };
            let mut data = Data::default();
            data.insert(entry);
            Ok(data)
        },
    );

    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let mut initialised = false;
    let mut operations: HashSet<String> = HashSet::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            () = &mut stopped => {
                close(&mut sink, 1001, "the hub is stopping").await;
                return;
            }
            _ = &mut init_deadline, if !initialised => {
                close(&mut sink, 4408, "Connection initialisation timeout").await;
                return;
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            message = incoming.next() => {
                let bytes = match message {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "a GraphQL WebSocket failed");
                        return;
                    }
                };
                match serde_json::from_slice::<Peek>(&bytes) {
                    Ok(peek) if peek.kind == "connection_init" => initialised = true,
                    Ok(peek) if matches!(peek.kind.as_str(), "subscribe" | "start") => {
                        let id = peek.id.unwrap_or_default();
                        if operations.len() >= MAX_OPERATIONS && !operations.contains(&id) {
                            let refusal = serde_json::json!({
                                "type": "error",
                                "id": id,
                                "payload": [{"message": format!(
                                    "at most {MAX_OPERATIONS} operations per connection"
                                )}],
                            });
                            if sink.send(Message::text(refusal.to_string())).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        operations.insert(id);
                    }
                    Ok(peek) if matches!(peek.kind.as_str(), "complete" | "stop") => {
                        if let Some(id) = peek.id {
                            operations.remove(&id);
                        }
                    }
                    // Anything else (unreadable included) goes to the protocol, which
                    // closes the connection on what it cannot read.
                    _ => {}
                }
                match to_graphql.try_send(bytes) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        close(&mut sink, 1008, "too many messages in flight").await;
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            out = graphql.next() => match out {
                Some(WsMessage::Text(text)) => {
                    if let Some(id) = completed_id(&text) {
                        operations.remove(&id);
                    }
                    if sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    // async-graphql closes a refused `connection_init` with 1002; the
                    // protocol says 4403 Forbidden.
                    let code = if reason.starts_with("Forbidden") { 4403 } else { code };
                    close(&mut sink, code, &reason).await;
                    return;
                }
                None => {
                    close(&mut sink, 1000, "").await;
                    return;
                }
            },
        }
    }
}

/// The id of a `complete` message the server sends (the operation ended).
fn completed_id(text: &str) -> Option<String> {
    if !text.starts_with("{\"type\":\"complete\"") {
        return None;
    }
    serde_json::from_str::<Peek>(text).ok()?.id
}

async fn close<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    code: u16,
    reason: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: apiguard_model::threat::truncate_chars(reason, 120)
            .to_owned()
            .into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}
