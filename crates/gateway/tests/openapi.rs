//! OpenAPI validation end to end: the gateway in front of the real sample API with its
//! specification (examples/sampleapi.openapi.yaml). Requests that violate it are refused
//! with problem+json naming the field; valid ones pass; unknown endpoints follow the
//! configured policy; responses are checked for undeclared data; a broken specification
//! is refused at reload.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

fn example_spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sampleapi.openapi.yaml")
}

async fn sample_api() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(apiguard_sampleapi::serve_http(
        listener,
        std::future::pending(),
    ));
    addr
}

fn config(api: SocketAddr, spec: &Path, unknown: &str, responses: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  api:
    targets: ["{api}"]
    openapi:
      spec: "{spec}"
      unknown_endpoints: {unknown}
{responses}
routes:
  - id: api
    match: {{path: {{prefix: /api}}}}
    upstream: api
  - id: tuning
    match: {{path: {{prefix: /api/orders}}, headers: {{x-tuning: "1"}}}}
    upstream: api
    openapi: {{mode: monitor}}
access_log:
  enabled: false
reload:
  watch: false
"#,
        spec = spec.display()
    )
}

async fn call(gw: &Harness, method: &str, path: &str, content_type: &str, body: &str) -> Reply {
    let mut request = Request::builder().method(method).uri(gw.url(path));
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    send(
        &h1_client(),
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

/// The `invalid-params` of a problem answer as (name, reason) pairs.
fn invalid(reply: &Reply) -> Vec<(String, String)> {
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let body = reply.json();
    assert_eq!(
        body["detail"],
        "the request does not match the API specification"
    );
    body["invalid-params"]
        .as_array()
        .expect("invalid-params")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn requests_that_violate_the_specification_are_refused_naming_the_field() {
    let api = sample_api().await;
    let gw = start(&config(api, &example_spec(), "block", "")).await;
    let json = "application/json";

    // Valid requests reach the API.
    assert_eq!(
        call(&gw, "GET", "/api/users/1", "", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&gw, "GET", "/api/orders?user_id=1", "", "")
            .await
            .status,
        StatusCode::OK
    );
    let created = call(
        &gw,
        "POST",
        "/api/users",
        json,
        r#"{"name":"Ada","email":"ada@example.com"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    // A bad parameter type.
    let reply = call(&gw, "GET", "/api/users/abc", "", "").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        invalid(&reply),
        [("path:id".into(), "must be of type integer".into())]
    );
    let reply = call(&gw, "GET", "/api/orders?user_id=0", "", "").await;
    assert_eq!(
        invalid(&reply),
        [("query:user_id".into(), "must be at least 1".into())]
    );

    // A missing required field, and a field the schema does not allow.
    let reply = call(
        &gw,
        "POST",
        "/api/users",
        json,
        r#"{"name":"Ada","role":"admin"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let fields = invalid(&reply);
    assert!(
        fields.contains(&("body.email".into(), "is required".into())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("body.role".into(), "is not a declared property".into())),
        "{fields:?}"
    );
    let reply = call(
        &gw,
        "POST",
        "/api/orders",
        json,
        r#"{"user_id":1,"item":"x","quantity":"2"}"#,
    )
    .await;
    assert_eq!(
        invalid(&reply),
        [("body.quantity".into(), "must be of type integer".into())]
    );

    // A wrong content type.
    let reply = call(&gw, "POST", "/api/users", "text/plain", "name=Ada").await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        invalid(&reply),
        [(
            "header:content-type".into(),
            "must be one of application/json".into()
        )]
    );
    let reply = call(&gw, "POST", "/api/users", json, "").await;
    assert_eq!(invalid(&reply), [("body".into(), "is required".into())]);

    // Unknown endpoints in block mode: 404 for a path, 405 for a method.
    let reply = call(&gw, "GET", "/api/admin/users", "", "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        invalid(&reply),
        [("path".into(), "is not in the API specification".into())]
    );
    let reply = call(&gw, "PATCH", "/api/users/1", json, "{}").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(invalid(&reply)[0].0, "method");
    // Dot segments are resolved before matching, as for routing.
    let reply = call(&gw, "GET", "/api/users/../admin", "", "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // A route in monitor mode lets the same violation through (the API answers itself).
    let reply = send(
        &h1_client(),
        Request::get(gw.url("/api/orders?user_id=zero"))
            .header("x-tuning", "1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.headers["content-type"], "application/json",
        "the API's own answer"
    );
    assert!(
        metric(
            &gw,
            "apiguard_findings_total{class=\"openapi\",rule=\"openapi.parameter\"}"
        )
        .await
        .unwrap_or(0.0)
            >= 3.0
    );
}

#[tokio::test]
async fn unknown_endpoints_are_allowed_or_logged_as_configured() {
    let api = sample_api().await;
    let gw = start(&config(api, &example_spec(), "log", "")).await;
    let mut events = gw.gateway.subscribe();
    let reply = call(&gw, "GET", "/api/nowhere", "", "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.json()["error"],
        "not_found",
        "the API's own answer: it was let through"
    );
    let rule = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if let apiguard_model::EventKind::RequestInspected { findings, .. } = &event.kind
                && let Some(f) = findings.iter().find(|f| f.class == "openapi")
            {
                return f.rule_id.to_string();
            }
        }
    })
    .await
    .expect("a finding for the unknown endpoint");
    assert_eq!(rule, "openapi.unknown_endpoint");
}

#[tokio::test]
async fn responses_with_undeclared_fields_are_stopped_in_enforce_mode() {
    let api = sample_api().await;
    let dir = tempfile::tempdir().unwrap();
    // The same API, as OpenAPI 3.0, whose User does not declare `email`: every user the API
    // returns leaks a field the contract does not have.
    let spec = std::fs::read_to_string(example_spec())
        .unwrap()
        .replace("openapi: 3.1.0", "openapi: 3.0.3")
        .replace(
            "      required: [id, name, email]\n      properties:\n        id: {type: integer}\n        name: {type: string}\n        email: {type: string}\n",
            "      required: [id, name]\n      properties:\n        id: {type: integer}\n        name: {type: string, nullable: true}\n",
        );
    let spec_path = dir.path().join("narrow.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let yaml = config(api, &spec_path, "allow", "      responses: {mode: enforce}");
    let gw = start(&yaml).await;
    let mut events = gw.gateway.subscribe();
    let reply = call(&gw, "GET", "/api/users/1", "", "").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = reply.json();
    assert_eq!(
        body["detail"],
        "the upstream response does not match the API specification"
    );
    assert!(
        !String::from_utf8_lossy(&reply.body).contains('@'),
        "no data leaked"
    );
    let fields = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if let apiguard_model::EventKind::RequestInspected { findings, .. } = &event.kind
                && findings.iter().any(|f| f.class == "openapi")
            {
                return findings
                    .iter()
                    .map(|f| f.target.clone())
                    .collect::<Vec<_>>();
            }
        }
    })
    .await
    .expect("a response finding");
    assert_eq!(fields, ["response.body.email"]);
    // Orders match their schema and pass untouched; errors are declared too.
    let orders = call(&gw, "GET", "/api/orders/1", "", "").await;
    assert_eq!(orders.status, StatusCode::OK);
    assert_eq!(orders.json()["id"], 1);
    assert_eq!(
        call(&gw, "GET", "/api/orders/999", "", "").await.status,
        StatusCode::NOT_FOUND
    );

    // In monitor mode the same response is passed on and only reported.
    let monitored = yaml.replace("responses: {mode: enforce}", "responses: {mode: monitor}");
    gw.write_config(&monitored);
    let reload = send(
        &h1_client(),
        Request::post(gw.admin_url("/config/reload"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reload.status, StatusCode::OK);
    let reply = call(&gw, "GET", "/api/users/1", "", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["email"].is_string());
}

#[tokio::test]
async fn a_broken_specification_is_refused_with_its_place_and_the_old_one_keeps_serving() {
    let api = sample_api().await;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("api.yaml");
    std::fs::copy(example_spec(), &spec_path).unwrap();
    let gw = start(&config(api, &spec_path, "block", "")).await;
    std::fs::write(&spec_path, "openapi: 3.1.0\npaths:\n  /users:\n    get:\n      parameters:\n        - {name: x, in: body}\n").unwrap();
    let reload = send(
        &h1_client(),
        Request::post(gw.admin_url("/config/reload"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reload.status, StatusCode::UNPROCESSABLE_ENTITY);
    let problems = reload.json()["problems"].to_string();
    assert!(
        problems.contains("api.yaml: at #/paths/~1users/get/parameters/0"),
        "{problems}"
    );
    assert!(problems.contains("`in` must be"), "{problems}");
    std::fs::write(&spec_path, "openapi: 3.1.0\npaths: {\n").unwrap();
    let reload = send(
        &h1_client(),
        Request::post(gw.admin_url("/config/reload"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reload.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reload.json()["problems"]
            .to_string()
            .contains("invalid YAML")
    );
    // The compiled specification in effect still validates.
    let reply = call(&gw, "GET", "/api/users/abc", "", "").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        call(&gw, "GET", "/api/users/1", "", "").await.status,
        StatusCode::OK
    );
}
