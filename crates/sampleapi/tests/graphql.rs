//! GraphQL surface over real sockets: POST (single and batch), GET, mutations, errors.

mod common;

use apiguard_sampleapi::Store;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn post(client: &Client, url: &str, body: Value) -> Value {
    let response = client.post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn queries_users_with_nested_orders() {
    let server = common::start_http(Store::seeded()).await;
    let body = post(
        &Client::new(),
        &server.url("/graphql"),
        json!({ "query": "{ users { id name orders { item quantity user { name } } } }" }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let users = body["data"]["users"].as_array().unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(users[0]["orders"][1]["item"], "punched cards");
    assert_eq!(users[0]["orders"][1]["user"]["name"], "Ada Lovelace");
}

#[tokio::test]
async fn get_with_query_string_and_variables() {
    let server = common::start_http(Store::seeded()).await;
    let response = Client::new()
        .get(server.url("/graphql"))
        .query(&[
            ("query", "query One($id: Int!) { user(id: $id) { email } }"),
            ("variables", r#"{"id": 3}"#),
            ("operationName", "One"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["user"]["email"], "grace@example.com");

    let mutation = Client::new()
        .get(server.url("/graphql"))
        .query(&[(
            "query",
            "mutation { createUser(name: \"x\", email: \"x@y\") { id } }",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn create_order_mutation_is_visible_over_rest() {
    let store = Store::seeded();
    let server = common::start_http(store.clone()).await;
    let client = Client::new();
    let body = post(
        &client,
        &server.url("/graphql"),
        json!({
            "query": "mutation($u: Int!) { createOrder(userId: $u, item: \"tape\", quantity: 7) { id userId item } }",
            "variables": { "u": 3 },
        }),
    )
    .await;
    assert_eq!(body["data"]["createOrder"]["id"], 5, "{body}");

    let order: Value = client
        .get(server.url("/api/orders/5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["item"], "tape");
    assert_eq!(store.list_orders(Some(3)).len(), 2);
}

#[tokio::test]
async fn errors_and_batches() {
    let server = common::start_http(Store::seeded()).await;
    let client = Client::new();
    let url = server.url("/graphql");

    let refused = post(
        &client,
        &url,
        json!({ "query": "mutation { createOrder(userId: 99, item: \"x\", quantity: 1) { id } }" }),
    )
    .await;
    assert_eq!(
        refused["errors"][0]["message"], "user 99 not found",
        "{refused}"
    );

    let invalid = post(&client, &url, json!({ "query": "{ nosuchfield }" })).await;
    assert!(invalid["errors"].as_array().is_some_and(|e| !e.is_empty()));

    let batch = post(
        &client,
        &url,
        json!([{ "query": "{ user(id: 1) { name } }" }, { "query": "{ order(id: 999) { id } }" }]),
    )
    .await;
    assert_eq!(batch[0]["data"]["user"]["name"], "Ada Lovelace");
    assert_eq!(batch[1]["data"]["order"], Value::Null);

    let garbage = client
        .post(&url)
        .header("content-type", "application/json")
        .body("[[[")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
}
