//! REST surface over real sockets, with HTTP/1.1 and h2c clients.

mod common;

use apiguard_sampleapi::Store;
use reqwest::{Client, StatusCode, Version};
use serde_json::{Value, json};

#[tokio::test]
async fn lists_seeded_users_over_http1_and_h2c() {
    let server = common::start_http(Store::seeded()).await;

    let http1 = Client::new()
        .get(server.url("/api/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(http1.version(), Version::HTTP_11);
    assert_eq!(http1.status(), StatusCode::OK);
    let users: Vec<Value> = http1.json().await.unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(users[0]["name"], "Ada Lovelace");

    let h2c = Client::builder().http2_prior_knowledge().build().unwrap();
    let http2 = h2c.get(server.url("/api/users/2")).send().await.unwrap();
    assert_eq!(http2.version(), Version::HTTP_2);
    let user: Value = http2.json().await.unwrap();
    assert_eq!(user["email"], "alan@example.com");
}

#[tokio::test]
async fn user_lifecycle() {
    let server = common::start_http(Store::empty()).await;
    let client = Client::new();

    let created = client
        .post(server.url("/api/users"))
        .json(&json!({ "name": "Linus", "email": "linus@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["location"], "/api/users/1");

    let replaced = client
        .put(server.url("/api/users/1"))
        .json(&json!({ "name": "Linus T", "email": "lt@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    let user: Value = replaced.json().await.unwrap();
    assert_eq!(
        user,
        json!({ "id": 1, "name": "Linus T", "email": "lt@example.com" })
    );

    let deleted = client
        .delete(server.url("/api/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let gone = client.get(server.url("/api/users/1")).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": "not_found", "message": "user 1 not found" })
    );
}

#[tokio::test]
async fn orders_create_list_and_filter() {
    let server = common::start_http(Store::seeded()).await;
    let client = Client::new();

    let created = client
        .post(server.url("/api/orders"))
        .json(&json!({ "user_id": 2, "item": "enigma", "quantity": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let order: Value = created.json().await.unwrap();
    assert_eq!(order["id"], 5);

    let fetched: Value = client
        .get(server.url("/api/orders/5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, order);

    let of_user: Vec<Value> = client
        .get(server.url("/api/orders?user_id=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(of_user.len(), 2);
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let server = common::start_http(Store::seeded()).await;
    let client = Client::new();

    let cases = [
        (
            client.get(server.url("/api/users/abc")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            client.get(server.url("/api/orders/999")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            client.get(server.url("/api/orders?user_id=x")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            client.get(server.url("/nowhere")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            client.patch(server.url("/api/users/1")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            client
                .post(server.url("/api/users"))
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            client
                .post(server.url("/api/users"))
                .json(&json!({ "name": "x", "email": "no-at" })),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            client
                .post(server.url("/api/orders"))
                .json(&json!({ "user_id": 1, "item": "x", "quantity": 0 })),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            client
                .post(server.url("/api/orders"))
                .json(&json!({ "user_id": 77, "item": "x", "quantity": 1 })),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (request, status, kind) in cases {
        let response = request.send().await.unwrap();
        let url = response.url().clone();
        assert_eq!(response.status(), status, "{url}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{url}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], kind, "{url}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{url}"
        );
    }
}

#[tokio::test]
async fn healthz_answers() {
    let server = common::start_http(Store::empty()).await;
    let body: Value = Client::new()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({ "status": "ok" }));
}
