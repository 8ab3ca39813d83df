//! gRPC through the gateway (h2c both sides): unary, server and client streaming, bidi, and
//! grpc-status trailers reaching the client intact.

mod common;

use std::time::Duration;

use apiguard_sampleapi::proto::orders_client::OrdersClient;
use apiguard_sampleapi::proto::{ChatMessage, GetOrderRequest, ListOrdersRequest, NewOrder};
use common::*;
use futures_util::StreamExt;

async fn grpc_gateway() -> (Harness, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(apiguard_sampleapi::serve_grpc(listener, async move {
        let _ = stopped.await;
    }));
    let gw = start(&simple_config(addr, "    protocol: h2c")).await;
    (gw, stop)
}

async fn client(gw: &Harness) -> OrdersClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(gw.url(""))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the gateway");
    OrdersClient::new(channel)
}

#[tokio::test]
async fn unary_calls_and_error_statuses_pass_through() {
    let (gw, _stop) = grpc_gateway().await;
    let mut orders = client(&gw).await;
    let order = orders
        .get_order(GetOrderRequest { id: 1 })
        .await
        .expect("order 1")
        .into_inner();
    assert_eq!(order.id, 1);
    let missing = orders
        .get_order(GetOrderRequest { id: 999 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(missing.message(), "order 999 not found");
}

#[tokio::test]
async fn streams_flow_both_ways_and_a_late_error_status_arrives_in_trailers() {
    let (gw, _stop) = grpc_gateway().await;
    let mut orders = client(&gw).await;

    let mut stream = orders
        .list_orders(ListOrdersRequest {
            user_id: 0,
            delay_ms: 0,
            fail_after: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let status = loop {
        match stream.next().await {
            Some(Ok(_)) => received += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without its error status"),
        }
    };
    assert_eq!(received, 2);
    assert_eq!(status.code(), tonic::Code::Aborted);

    let new_orders = futures_util::stream::iter((0..5).map(|i| NewOrder {
        user_id: 1,
        item: format!("item {i}"),
        quantity: 1,
    }));
    let created = orders.create_orders(new_orders).await.unwrap().into_inner();
    assert_eq!(created.count, 5);

    let messages =
        futures_util::stream::iter(["a", "b", "c"].map(|t| ChatMessage { text: t.into() }));
    let echoed: Vec<String> = orders
        .chat(messages)
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().text)
        .collect()
        .await;
    assert_eq!(echoed, ["a", "b", "c"]);
}
