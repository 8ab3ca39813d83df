//! The test upstream answers as documented, over HTTP/1.1 and h2c.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use apiguard_testkit::upstream::{CHUNK_SIZE, TRAILERS_BODY, trailers_checksum};
use apiguard_testkit::{TestUpstream, UpstreamMode, rss_kib};
use bytes::Bytes;
use common::{collect, get, json, send_h2c, send_http1};
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echo_describes_the_request() {
    let upstream = TestUpstream::start_named("alpha").await.unwrap();
    let request = Request::post(format!("{}/echo/a/b?x=1&y=2", upstream.url()))
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    let response = send_http1(upstream.addr(), request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "alpha");
    let echo = json(response).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/a/b");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(
        echo["headers"]["x-multi"],
        serde_json::json!(["one", "two"])
    );
    assert_eq!(
        echo["headers"]["traceparent"][0].as_str().unwrap().len(),
        55
    );
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["upstream"], "alpha");

    let h2 = json(send_h2c(upstream.addr(), get(upstream.addr(), "/echo")).await).await;
    assert_eq!(h2["version"], "HTTP/2.0");
    assert_eq!(h2["query"], serde_json::Value::Null);

    assert_eq!(upstream.request_count(), 2);
    assert_eq!(upstream.request_count_for("/echo"), 1);
    assert_eq!(upstream.connection_count(), 2);
    let last = upstream.last_request().unwrap();
    assert_eq!(last.path, "/echo");
    assert_eq!(last.version, http::Version::HTTP_2);
    upstream.reset_counters();
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn status_and_sleep_routes() {
    let upstream = TestUpstream::start().await.unwrap();
    let addr = upstream.addr();
    for (path, status) in [
        ("/status/503", StatusCode::SERVICE_UNAVAILABLE),
        ("/status/204", StatusCode::NO_CONTENT),
        ("/status/418", StatusCode::IM_A_TEAPOT),
        ("/status/100", StatusCode::BAD_REQUEST),
        ("/status/abc", StatusCode::BAD_REQUEST),
        ("/nowhere", StatusCode::NOT_FOUND),
        ("/healthz", StatusCode::OK),
    ] {
        let response = send_http1(addr, get(addr, path)).await;
        assert_eq!(response.status(), status, "{path}");
    }

    let started = Instant::now();
    let response = send_http1(addr, get(addr, "/sleep/150")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn bytes_streams_n_bytes_with_or_without_length() {
    let upstream = TestUpstream::start().await.unwrap();
    let addr = upstream.addr();
    let len = 10 * CHUNK_SIZE as u64 + 17;

    let response = send_http1(addr, get(addr, &format!("/bytes/{len}"))).await;
    assert_eq!(
        response.headers()["content-length"],
        len.to_string().as_str()
    );
    assert_eq!(count_body(response).await, len);

    let response = send_http1(addr, get(addr, &format!("/bytes/{len}?chunked=1"))).await;
    assert!(!response.headers().contains_key("content-length"));
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(count_body(response).await, len);

    let response = send_h2c(addr, get(addr, &format!("/bytes/{len}"))).await;
    assert_eq!(count_body(response).await, len);
}

async fn count_body(response: http::Response<hyper::body::Incoming>) -> u64 {
    let mut body = response.into_body();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            len += data.len() as u64;
        }
    }
    len
}

/// A request body of `chunks` static 64 KiB frames, generated lazily.
fn big_body(
    chunks: usize,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    static CHUNK: [u8; 64 * 1024] = [7; 64 * 1024];
    let frames = futures_util::stream::iter(0..chunks)
        .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK))));
    StreamBody::new(frames)
}

#[tokio::test]
async fn upload_counts_a_large_body_in_bounded_memory() {
    let upstream = TestUpstream::start().await.unwrap();
    let addr = upstream.addr();
    let chunks = 2048; // 128 MiB
    let expected = (chunks * 64 * 1024) as u64;
    let rss_before = rss_kib(std::process::id()).unwrap();

    let request = Request::post(format!("{}/upload", upstream.url()))
        .body(big_body(chunks))
        .unwrap();
    let answer = json(send_http1(addr, request).await).await;
    assert_eq!(answer["received"], expected);

    let request = Request::post(format!("{}/upload", upstream.url()))
        .body(big_body(chunks))
        .unwrap();
    let answer = json(send_h2c(addr, request).await).await;
    assert_eq!(answer["received"], expected);

    // Client and server share this process; neither may hold the body.
    let grown_kib = rss_kib(std::process::id())
        .unwrap()
        .saturating_sub(rss_before);
    assert!(grown_kib < 48 * 1024, "RSS grew by {grown_kib} KiB");
}

#[tokio::test]
async fn trailers_arrive_after_the_body() {
    let upstream = TestUpstream::start().await.unwrap();
    let addr = upstream.addr();

    let request = Request::get(format!("{}/trailers", upstream.url()))
        .header("te", "trailers")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let collected = collect(send_http1(addr, request).await).await;
    let trailers = collected.trailers().cloned().expect("HTTP/1.1 trailers");
    assert_eq!(trailers["x-checksum"], trailers_checksum().as_str());
    assert_eq!(collected.to_bytes(), TRAILERS_BODY.as_bytes());

    let collected = collect(send_h2c(addr, get(addr, "/trailers")).await).await;
    let trailers = collected.trailers().cloned().expect("HTTP/2 trailers");
    assert_eq!(trailers["x-checksum"], trailers_checksum().as_str());
}

#[tokio::test]
async fn websocket_echo() {
    let upstream = TestUpstream::start().await.unwrap();
    let stream = tokio::net::TcpStream::connect(upstream.addr())
        .await
        .unwrap();
    let url = format!("ws://{}/ws", upstream.addr());
    let (mut socket, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![1, 2, 3])
    );
    socket.close(None).await.unwrap();

    let plain = send_http1(upstream.addr(), get(upstream.addr(), "/ws")).await;
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fails_goes_down_and_recovers() {
    let upstream = TestUpstream::start().await.unwrap();
    let addr = upstream.addr();

    upstream.set_mode(UpstreamMode::Failing).await;
    let response = send_http1(addr, get(addr, "/healthz")).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // A kept-alive connection opened before going down must be dropped too.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    upstream.set_mode(UpstreamMode::Healthy).await;
    let response = sender.send_request(get(addr, "/healthz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    collect(response).await;

    upstream.set_mode(UpstreamMode::Down).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the open connection was closed")
        .unwrap()
        .unwrap();

    upstream.set_mode(UpstreamMode::Healthy).await;
    let response = send_http1(addr, get(addr, "/healthz")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let upstream = TestUpstream::start().await.unwrap();
    let addr = upstream.addr();
    let handle = upstream.shutdown_handle();
    handle.shutdown();
    upstream.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
