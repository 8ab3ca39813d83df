//! The REST surface: `/api/users` and `/api/orders`, JSON in and out. Every error,
//! including malformed JSON, a bad path parameter or an unknown route, answers a JSON body
//! `{"error": <kind>, "message": <text>}` so clients (and the gateway's response
//! inspection) always get the same shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::store::{Order, OrderInput, Store, StoreError, User, UserInput};

pub(crate) fn routes() -> Router<Store> {
    Router::new()
        .route("/api/users", get(list_users).post(create_user))
        .route(
            "/api/users/{id}",
            get(get_user).put(replace_user).delete(delete_user),
        )
        .route("/api/orders", get(list_orders).post(create_order))
        .route("/api/orders/{id}", get(get_order))
}

/// An error answer: status plus a JSON body with a stable `error` kind.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
        }
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::method_not_allowed_with("method not allowed on this resource")
    }

    pub(crate) fn method_not_allowed_with(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "method_not_allowed",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.kind, "message": self.message }));
        (self.status, body).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UserNotFound(_) | StoreError::OrderNotFound(_) => {
                Self::not_found(err.to_string())
            }
            StoreError::Invalid(reason) => Self::bad_request(reason),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn list_users(State(store): State<Store>) -> Json<Vec<User>> {
    Json(store.list_users())
}

async fn get_user(
    State(store): State<Store>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Json<User>> {
    let Path(id) = id?;
    Ok(Json(store.get_user(id)?))
}

async fn create_user(
    State(store): State<Store>,
    input: Result<Json<UserInput>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(input) = input?;
    let user = store.create_user(input)?;
    let location = format!("/api/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    ))
}

async fn replace_user(
    State(store): State<Store>,
    id: Result<Path<u64>, PathRejection>,
    input: Result<Json<UserInput>, JsonRejection>,
) -> ApiResult<Json<User>> {
    let Path(id) = id?;
    let Json(input) = input?;
    Ok(Json(store.replace_user(id, input)?))
}

async fn delete_user(
    State(store): State<Store>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(id) = id?;
    store.delete_user(id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct OrderFilter {
    user_id: Option<u64>,
}

async fn list_orders(
    State(store): State<Store>,
    filter: Result<Query<OrderFilter>, QueryRejection>,
) -> ApiResult<Json<Vec<Order>>> {
    let Query(filter) = filter?;
    Ok(Json(store.list_orders(filter.user_id)))
}

async fn get_order(
    State(store): State<Store>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Json<Order>> {
    let Path(id) = id?;
    Ok(Json(store.get_order(id)?))
}

async fn create_order(
    State(store): State<Store>,
    input: Result<Json<OrderInput>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(input) = input?;
    // The resource being created is the order; a missing user is a fault in its body.
    let order = store.create_order(input).map_err(|err| match err {
        StoreError::UserNotFound(_) => ApiError::bad_request(err.to_string()),
        other => other.into(),
    })?;
    let location = format!("/api/orders/{}", order.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    ))
}
