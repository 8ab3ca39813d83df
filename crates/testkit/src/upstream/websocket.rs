//! `/ws`: a WebSocket echo reached through an HTTP/1.1 upgrade, the way a gateway must
//! proxy it (hyper upgrade on our side, tungstenite framing once upgraded).

use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::body::{self, UpstreamBody};
use super::handlers::json_response;

/// Answers `101 Switching Protocols` and echoes text and binary messages on the upgraded
/// connection until the client closes it.
pub(crate) fn upgrade(mut request: Request<Incoming>) -> Response<UpstreamBody> {
    let wants_websocket = request
        .headers()
        .get(UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .filter(|_| wants_websocket)
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "expected a WebSocket upgrade request" }),
        );
    };
    let accept = derive_accept_key(key.as_bytes());

    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        // The upgrade resolves once the 101 has been written; a failure means the client
        // went away, which is not the upstream's problem.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(socket).await;
    });

    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

async fn echo<S>(mut socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = socket.next().await {
        // Pings are answered and close frames acknowledged by tungstenite itself.
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            break;
        }
    }
}
