//! The small API that `apiguard demo` and the gateway's integration tests put behind the
//! gateway: a REST resource (users and orders), a GraphQL endpoint and a gRPC service, all
//! over one in-process [`Store`].
//!
//! - [`serve_http`]: REST under `/api`, GraphQL at `/graphql`, `/healthz`; HTTP/1.1 and h2c.
//! - [`serve_grpc`]: `apiguard.sample.v1.Orders` (proto/sample.proto); h2c.
//!
//! The `*_with_store` variants share one store between surfaces, so an order created over
//! gRPC shows up over REST.

#![forbid(unsafe_code)]

mod graphql;
mod grpc;
mod rest;
mod store;

use std::future::Future;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

pub use graphql::{SampleSchema, schema as graphql_schema};
pub use grpc::OrdersService;
pub use store::{MAX_QUANTITY, Order, OrderInput, Store, StoreError, User, UserInput};

/// Code generated from proto/sample.proto: messages, `orders_server` and `orders_client`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("apiguard.sample.v1");
}

/// The HTTP application: REST, GraphQL and `/healthz`, with JSON 404/405 answers.
pub fn http_router(store: Store) -> Router {
    let graphql = Router::new()
        .route(
            "/graphql",
            get(graphql::get_graphql).post(graphql::post_graphql),
        )
        .with_state(graphql::schema(store.clone()));
    rest::routes()
        .with_state(store)
        .merge(graphql)
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .fallback(|| async { rest::ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { rest::ApiError::method_not_allowed() })
}

/// Serves REST and GraphQL over a fresh [`Store::seeded`] until `shutdown` completes,
/// then drains open connections.
pub async fn serve_http(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_http_with_store(Store::seeded(), listener, shutdown).await
}

/// Like [`serve_http`], over the given store.
pub async fn serve_http_with_store(
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // axum::serve speaks HTTP/1.1 and, with the `http2` feature, h2c with prior knowledge
    // on the same port (hyper-util's auto builder).
    axum::serve(listener, http_router(store))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the gRPC `Orders` service (h2c) over a fresh [`Store::seeded`] until `shutdown`
/// completes.
pub async fn serve_grpc(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_grpc_with_store(Store::seeded(), listener, shutdown).await
}

/// Like [`serve_grpc`], over the given store.
pub async fn serve_grpc_with_store(
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(OrdersService::new(store).into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
