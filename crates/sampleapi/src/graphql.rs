//! The GraphQL surface at `/graphql` over the same [`Store`]: queries `users`, `user(id)`,
//! `orders(userId)`, `order(id)`, and mutations `createUser`, `createOrder`. `User.orders`
//! and `Order.user` point at each other on purpose, so that deep and costly queries can be
//! written against it when demonstrating the gateway's GraphQL limits; the sample itself
//! sets no depth or complexity limit.
//!
//! Served by a plain axum handler calling `Schema::execute_batch`, which accepts both a
//! single request and a batch (a JSON array), as GraphQL servers commonly do.

use async_graphql::parser::types::OperationType;
use async_graphql::{
    BatchRequest, BatchResponse, Context, EmptySubscription, Error, Object, Request, Schema,
    Variables,
};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use serde::Deserialize;

use crate::rest::ApiError;
use crate::store::{self, OrderInput, Store, UserInput};

pub type SampleSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema with `store` as its data.
pub fn schema(store: Store) -> SampleSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(store)
        .finish()
}

fn store<'a>(ctx: &Context<'a>) -> &'a Store {
    // The schema is only ever built by `schema()`, which always attaches the store.
    ctx.data_unchecked::<Store>()
}

pub struct User(store::User);

#[Object]
impl User {
    async fn id(&self) -> u64 {
        self.0.id
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn orders(&self, ctx: &Context<'_>) -> Vec<Order> {
        orders(store(ctx).list_orders(Some(self.0.id)))
    }
}

pub struct Order(store::Order);

#[Object]
impl Order {
    async fn id(&self) -> u64 {
        self.0.id
    }

    async fn user_id(&self) -> u64 {
        self.0.user_id
    }

    async fn item(&self) -> &str {
        &self.0.item
    }

    async fn quantity(&self) -> u32 {
        self.0.quantity
    }

    /// The order's user; null only if the user was deleted while the query ran.
    async fn user(&self, ctx: &Context<'_>) -> Option<User> {
        store(ctx).get_user(self.0.user_id).ok().map(User)
    }
}

fn orders(list: Vec<store::Order>) -> Vec<Order> {
    list.into_iter().map(Order).collect()
}

pub struct QueryRoot;

#[Object]
impl QueryRoot {
    async fn users(&self, ctx: &Context<'_>) -> Vec<User> {
        store(ctx).list_users().into_iter().map(User).collect()
    }

    /// Null when no such user exists (GraphQL convention for a missing single object).
    async fn user(&self, ctx: &Context<'_>, id: u64) -> Option<User> {
        store(ctx).get_user(id).ok().map(User)
    }

    /// Every order, or the orders of `userId` when given.
    async fn orders(&self, ctx: &Context<'_>, user_id: Option<u64>) -> Vec<Order> {
        orders(store(ctx).list_orders(user_id))
    }

    async fn order(&self, ctx: &Context<'_>, id: u64) -> Option<Order> {
        store(ctx).get_order(id).ok().map(Order)
    }
}

pub struct MutationRoot;

#[Object]
impl MutationRoot {
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        name: String,
        email: String,
    ) -> Result<User, Error> {
        let user = store(ctx).create_user(UserInput { name, email })?;
        Ok(User(user))
    }

    async fn create_order(
        &self,
        ctx: &Context<'_>,
        user_id: u64,
        item: String,
        quantity: u32,
    ) -> Result<Order, Error> {
        let order = store(ctx).create_order(OrderInput {
            user_id,
            item,
            quantity,
        })?;
        Ok(Order(order))
    }
}

/// `POST /graphql` with `{"query", "variables", "operationName"}` or an array of them.
pub(crate) async fn post_graphql(
    State(schema): State<SampleSchema>,
    request: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let Json(request) = request?;
    Ok(Json(schema.execute_batch(request).await))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetParams {
    query: String,
    operation_name: Option<String>,
    /// JSON text, as GraphQL-over-HTTP puts variables in the URL.
    variables: Option<String>,
}

/// `GET /graphql?query=...&variables=...&operationName=...`.
pub(crate) async fn get_graphql(
    State(schema): State<SampleSchema>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Result<Json<async_graphql::Response>, ApiError> {
    let Query(params) = params?;
    let mut request = Request::new(params.query);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(text) = params.variables {
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| ApiError::bad_request(format!("variables is not JSON: {err}")))?;
        request = request.variables(Variables::from_json(value));
    }
    // GraphQL over HTTP: GET must not change state (a link or an <img> could trigger it).
    // Unparsable queries fall through to `execute`, which reports them as GraphQL errors.
    if let Ok(document) = request.parsed_query() {
        let has_mutation = document
            .operations
            .iter()
            .any(|(_, operation)| operation.node.ty == OperationType::Mutation);
        if has_mutation {
            return Err(ApiError::method_not_allowed_with("mutations must use POST"));
        }
    }
    Ok(Json(schema.execute(request).await))
}
