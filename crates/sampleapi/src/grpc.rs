//! The gRPC surface: service `apiguard.sample.v1.Orders` over the same [`Store`], with
//! the four RPC shapes and deliberate failures (see proto/sample.proto) so that tests can
//! check streaming and grpc-status trailers through the gateway.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::orders_server::{Orders, OrdersServer};
use crate::proto::{
    ChatMessage, CreateOrdersReply, GetOrderRequest, ListOrdersRequest, NewOrder, Order,
};
use crate::store::{self, OrderInput, Store, StoreError};

/// Longest pause `ListOrders` honours between two messages.
const MAX_DELAY_MS: u32 = 10_000;

/// The `Orders` service implementation.
#[derive(Clone)]
pub struct OrdersService {
    store: Store,
}

impl OrdersService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Wraps the service for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> OrdersServer<Self> {
        OrdersServer::new(self)
    }
}

impl From<store::Order> for Order {
    fn from(order: store::Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            item: order.item,
            quantity: order.quantity,
        }
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UserNotFound(_) | StoreError::OrderNotFound(_) => {
                Status::not_found(err.to_string())
            }
            StoreError::Invalid(reason) => Status::invalid_argument(reason),
        }
    }
}

type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Orders for OrdersService {
    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let order = self.store.get_order(request.into_inner().id)?;
        Ok(Response::new(order.into()))
    }

    type ListOrdersStream = ReceiverStream<Result<Order, Status>>;

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<Self::ListOrdersStream>, Status> {
        let request = request.into_inner();
        let user_id = (request.user_id != 0).then_some(request.user_id);
        let orders = self.store.list_orders(user_id);
        let delay = Duration::from_millis(request.delay_ms.min(MAX_DELAY_MS).into());
        let fail_after = request.fail_after as usize;

        // A small channel so the stream is produced as the client reads it, not all at once.
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for (sent, order) in orders.into_iter().enumerate() {
                if fail_after != 0 && sent == fail_after {
                    let status = Status::aborted(format!("failed after {fail_after} orders"));
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                if sent > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(Ok(order.into())).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn create_orders(
        &self,
        request: Request<Streaming<NewOrder>>,
    ) -> Result<Response<CreateOrdersReply>, Status> {
        let mut incoming = request.into_inner();
        let mut ids = Vec::new();
        while let Some(new_order) = incoming.message().await? {
            let order = self.store.create_order(OrderInput {
                user_id: new_order.user_id,
                item: new_order.item,
                quantity: new_order.quantity,
            })?;
            ids.push(order.id);
        }
        let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        Ok(Response::new(CreateOrdersReply { count, ids }))
    }

    type ChatStream = ChatStream;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        // Echo each message as it arrives: the reply stream is the request stream itself,
        // so an error or the end of the client's stream ends the replies too.
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}
