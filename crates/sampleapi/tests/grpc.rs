//! gRPC surface over real sockets with the generated tonic client: the four RPC shapes and
//! non-OK statuses with their messages.

mod common;

use std::time::{Duration, Instant};

use apiguard_sampleapi::Store;
use apiguard_sampleapi::proto::orders_client::OrdersClient;
use apiguard_sampleapi::proto::{ChatMessage, GetOrderRequest, ListOrdersRequest, NewOrder};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

async fn client(store: Store) -> (OrdersClient<Channel>, common::Running) {
    let server = common::start_grpc(store).await;
    let client = OrdersClient::connect(server.url("")).await.unwrap();
    (client, server)
}

#[tokio::test]
async fn get_order_and_not_found_status() {
    let (mut client, _server) = client(Store::seeded()).await;

    let order = client
        .get_order(GetOrderRequest { id: 3 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.item, "bombe rotor");

    let status = client
        .get_order(GetOrderRequest { id: 999 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "order 999 not found");
}

#[tokio::test]
async fn list_orders_streams_and_can_fail_midway() {
    let (mut client, _server) = client(Store::seeded()).await;

    let mut stream = client
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(order) = stream.message().await.unwrap() {
        ids.push(order.id);
    }
    assert_eq!(ids, [1, 2, 3, 4]);

    let mut stream = client
        .list_orders(ListOrdersRequest {
            user_id: 1,
            delay_ms: 400,
            fail_after: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // The first message must arrive well before the second is even produced; generous
    // margins because CI machines are busy.
    let started = Instant::now();
    assert!(stream.message().await.unwrap().is_some());
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "first message was held back"
    );
    assert!(stream.message().await.unwrap().is_some());
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(stream.message().await.unwrap().is_none());

    let mut stream = client
        .list_orders(ListOrdersRequest {
            user_id: 0,
            delay_ms: 0,
            fail_after: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_some());
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "failed after 2 orders");
}

#[tokio::test]
async fn create_orders_counts_the_client_stream() {
    let store = Store::seeded();
    let (mut client, _server) = client(store.clone()).await;
    let new_orders = (1..=3).map(|n| NewOrder {
        user_id: 2,
        item: format!("rotor {n}"),
        quantity: n,
    });
    let reply = client
        .create_orders(tokio_stream::iter(new_orders))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.count, 3);
    assert_eq!(reply.ids, [5, 6, 7]);
    assert_eq!(store.list_orders(Some(2)).len(), 4);

    let invalid = [NewOrder {
        user_id: 2,
        item: String::new(),
        quantity: 1,
    }];
    let status = client
        .create_orders(tokio_stream::iter(invalid))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn chat_echoes_each_message() {
    let (mut client, _server) = client(Store::empty()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // One message at a time: each echo must arrive before the next message is sent.
    for text in ["hello", "through", "the gateway"] {
        tx.send(ChatMessage { text: text.into() }).await.unwrap();
        let echo = replies.next().await.unwrap().unwrap();
        assert_eq!(echo.text, text);
    }
    drop(tx);
    assert!(replies.next().await.is_none());
}
