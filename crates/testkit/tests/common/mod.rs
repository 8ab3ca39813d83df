//! Minimal hyper clients (one connection each) so the tests control the protocol exactly.

#![allow(dead_code)] // each test file uses a subset

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Collected, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends one request over a fresh HTTP/1.1 connection.
pub async fn send_http1<B>(addr: SocketAddr, request: Request<B>) -> Response<Incoming>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

/// Sends one request over a fresh h2c (prior knowledge) connection.
pub async fn send_h2c<B>(addr: SocketAddr, request: Request<B>) -> Response<Incoming>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

pub fn get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

pub async fn collect(response: Response<Incoming>) -> Collected<Bytes> {
    response.into_body().collect().await.unwrap()
}

pub async fn json(response: Response<Incoming>) -> serde_json::Value {
    serde_json::from_slice(&collect(response).await.to_bytes()).unwrap()
}
