//! Protocol inspection (stage 7) through the gateway with real clients and the sample API as
//! upstream: GraphQL limits, cost budgets, introspection, suggestions and persisted queries;
//! gRPC method allowlists, reflection, message sizes, and attack detection inside protobuf
//! string fields.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiguard_sampleapi::proto::orders_client::OrdersClient;
use apiguard_sampleapi::proto::{ChatMessage, GetOrderRequest, ListOrdersRequest, NewOrder};
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// GraphQL
// ---------------------------------------------------------------------------------------

async fn graphql_upstream() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(apiguard_sampleapi::serve_http(listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A gateway in front of the sample API whose `/graphql` route has `graphql_yaml` (indented
/// under `graphql:`) and `route_extra` (route-level keys), with `top_extra` at the top.
async fn graphql_gateway(
    graphql_yaml: &str,
    route_extra: &str,
    top_extra: &str,
) -> (Harness, tokio::sync::oneshot::Sender<()>) {
    let (upstream, stop) = graphql_upstream().await;
    let yaml = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
upstreams:
  api:
    targets: ["{upstream}"]
{top_extra}
routes:
  - id: graphql
    match: {{path: {{exact: /graphql}}}}
    upstream: api
{route_extra}
    graphql:
{graphql_yaml}
access_log:
  enabled: false
reload:
  watch: false
"#
    );
    (start(&yaml).await, stop)
}

fn post_json(gw: &Harness, body: &Value, api_key: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::post(gw.url("/graphql")).header("content-type", "application/json");
    if let Some(key) = api_key {
        builder = builder.header("x-api-key", key);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn graphql(gw: &Harness, query: &str) -> Reply {
    send(
        &h1_client(),
        post_json(gw, &json!({ "query": query }), None),
    )
    .await
}

/// Asserts the upstream answered with data (the gateway let the operation through).
fn assert_passed(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{what}: {:?}", reply.body);
    let body = reply.json();
    assert!(
        body.get("data").is_some_and(|d| !d.is_null()) || body.is_array(),
        "{what}: no data in {body}"
    );
}

/// Asserts a problem+json refusal whose detail names `needle`.
fn assert_refused(reply: &Reply, status: u16, needle: &str) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    assert_eq!(
        reply.headers["content-type"], "application/problem+json",
        "{:?}",
        reply.body
    );
    let detail = reply.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains(needle),
        "detail {detail:?} lacks {needle:?}"
    );
}

#[tokio::test]
async fn each_graphql_limit_refuses_just_over_it_and_passes_at_it() {
    let (gw, _stop) = graphql_gateway(
        r#"      max_depth: 3
      max_aliases: 2
      max_root_fields: 3
      max_batch: 2
      max_tokens: 30
      max_document_bytes: 120"#,
        "",
        "",
    )
    .await;

    assert_passed(
        &graphql(&gw, "{ users { orders { id } } }").await,
        "depth 3",
    );
    assert_refused(
        &graphql(&gw, "{ users { orders { user { id } } } }").await,
        400,
        "depth of 4 is over the limit of 3",
    );

    assert_passed(
        &graphql(&gw, "{ a: users { id } b: users { id } }").await,
        "2 aliases",
    );
    assert_refused(
        &graphql(&gw, "{ a: users { id } b: users { id } c: users { id } }").await,
        400,
        "alias count of 3 is over the limit of 2",
    );

    assert_passed(
        &graphql(&gw, "{ users { id } orders { id } order(id: 1) { id } }").await,
        "3 root fields",
    );
    assert_refused(
        &graphql(
            &gw,
            "{ users { id } orders { id } order(id: 1) { id } user(id: 1) { id } }",
        )
        .await,
        400,
        "root field count of 4 is over the limit of 3",
    );

    // `{ users { id × n } }` is n + 5 tokens.
    let tokens = |n: usize| format!("{{ users {{ {} }} }}", "id ".repeat(n));
    assert_passed(&graphql(&gw, &tokens(25)).await, "30 tokens");
    assert_refused(&graphql(&gw, &tokens(26)).await, 400, "more than 30 tokens");

    let padded = |len: usize| {
        let doc = "{ users { id } }";
        format!("{doc}{}", " ".repeat(len - doc.len()))
    };
    assert_passed(&graphql(&gw, &padded(120)).await, "120-byte document");
    assert_refused(&graphql(&gw, &padded(121)).await, 413, "limit of 120 bytes");

    let batch = |n: usize| Value::Array(vec![json!({"query": "{ users { id } }"}); n]);
    let reply = send(&h1_client(), post_json(&gw, &batch(2), None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json().as_array().map(Vec::len), Some(2));
    assert_refused(
        &send(&h1_client(), post_json(&gw, &batch(3), None)).await,
        400,
        "batch of 3 operations is over the limit of 2",
    );

    // The same limits hold for GET and application/graphql.
    let deep = "{ users { orders { user { id } } } }";
    let get = get(
        &h1_client(),
        &gw.url(&format!(
            "/graphql?query={}",
            deep.replace(' ', "+")
                .replace('{', "%7B")
                .replace('}', "%7D")
        )),
    )
    .await;
    assert_refused(&get, 400, "depth of 4");
    let raw = Request::post(gw.url("/graphql"))
        .header("content-type", "application/graphql")
        .body(Full::new(Bytes::from(deep)))
        .unwrap();
    assert_refused(&send(&h1_client(), raw).await, 400, "depth of 4");
}

#[tokio::test]
async fn the_static_cost_limit_counts_list_fields() {
    let (gw, _stop) = graphql_gateway(
        r#"      max_cost: 42
      cost:
        list_fields: [users, orders]
        default_list_size: 10"#,
        "",
        "",
    )
    .await;
    // users: 1 + 10 × 3 = 31; orders: 1 + 10 × 1 = 11.
    assert_passed(
        &graphql(&gw, "{ users { id name email } orders { id } }").await,
        "cost 42",
    );
    assert_refused(
        &graphql(&gw, "{ users { id name email } orders { id } __typename }").await,
        400,
        "cost of 43 is over the limit of 42",
    );
}

#[tokio::test]
async fn the_cost_budget_runs_out_for_one_identity_while_another_passes() {
    use sha2::Digest;
    let hash = |key: &str| -> String {
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let top = format!(
        r#"auth:
  providers:
    keys:
      api_keys:
        keys:
          - {{name: alice, sha256: "{}"}}
          - {{name: bob, sha256: "{}"}}"#,
        hash("alice-key"),
        hash("bob-key")
    );
    let (gw, _stop) = graphql_gateway(
        r#"      cost:
        list_fields: [users]
        default_list_size: 29
      budget: {cost: 100, per: 1h}"#,
        "    auth: {providers: [keys]}",
        &top,
    )
    .await;
    // 1 + 29 × 2 = 59: one fits in 100, two do not.
    let query = json!({"query": "{ users { id name } }"});
    let client = h1_client();
    assert_passed(
        &send(&client, post_json(&gw, &query, Some("alice-key"))).await,
        "alice's first query",
    );
    let spent = send(&client, post_json(&gw, &query, Some("alice-key"))).await;
    assert_refused(&spent, 429, "cost budget of 100 per 3600s is spent");
    let retry: u64 = spent.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    assert_passed(
        &send(&client, post_json(&gw, &query, Some("bob-key"))).await,
        "bob's query",
    );
}

#[tokio::test]
async fn introspection_is_refused_in_production_mode_only() {
    let introspection = "{ __schema { queryType { name } } }";
    let (prod, _stop) = graphql_gateway("      production: true", "", "").await;
    assert_refused(
        &graphql(&prod, introspection).await,
        403,
        "introspection is disabled",
    );
    // The detection engine's own `graphql.introspection` rule blocks introspection on every
    // route; a development route excludes it.
    let exclusion = "    detect: {exclusions: [{rule: graphql.introspection}]}";
    let (dev, _stop2) = graphql_gateway("      production: false", exclusion, "").await;
    let reply = graphql(&dev, introspection).await;
    assert_passed(&reply, "introspection in development mode");
    assert_eq!(
        reply.json()["data"]["__schema"]["queryType"]["name"],
        "QueryRoot"
    );
}

#[tokio::test]
async fn field_suggestions_are_stripped_from_responses_in_production_mode() {
    let typo = "{ users { nme } }";
    let (dev, _stop) = graphql_gateway("      production: false", "", "").await;
    let message = graphql(&dev, typo).await.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("Did you mean"),
        "the upstream suggests: {message}"
    );
    let (prod, _stop2) = graphql_gateway("      production: true", "", "").await;
    let reply = graphql(&prod, typo).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(
        body["errors"][0]["message"], "Unknown field \"nme\" on type \"User\".",
        "{body}"
    );
    assert_eq!(
        reply.headers["content-length"].to_str().unwrap(),
        reply.body.len().to_string()
    );
}

#[tokio::test]
async fn only_persisted_queries_pass_when_an_allowlist_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = "query Users { users { id name } }";
    let file = dir.path().join("allowed.graphql");
    std::fs::write(&file, allowed).unwrap();
    let (gw, _stop) = graphql_gateway(
        &format!("      persisted_queries: [\"{}\"]", file.display()),
        "",
        "",
    )
    .await;
    assert_passed(&graphql(&gw, allowed).await, "the persisted document");
    assert_refused(
        &graphql(&gw, "query Users { users { id name email } }").await,
        403,
        "not in the API's persisted-query allowlist",
    );
    // Apollo's form: the hash alone (the upstream, without a persisted-query store, answers
    // with a GraphQL error; the point is that the gateway let it through).
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(allowed.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let apq =
        |hash: &str| json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
    let reply = send(&h1_client(), post_json(&gw, &apq(&hex), None)).await;
    assert_ne!(reply.headers["content-type"], "application/problem+json");
    let reply = send(&h1_client(), post_json(&gw, &apq(&"ab".repeat(32)), None)).await;
    assert_refused(&reply, 403, "persisted-query allowlist");
}

#[tokio::test]
async fn a_route_can_refuse_with_graphql_errors() {
    let (gw, _stop) = graphql_gateway("      max_depth: 2\n      refusals: graphql", "", "").await;
    let reply = graphql(&gw, "{ users { orders { id } } }").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = reply.json();
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_DEPTH");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("depth of 3 is over the limit of 2")
    );
}

// ---------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------

/// The sample service's proto, except that `GetOrder` takes a `Lookup` (field 1 is the same
/// `uint64 id`; field 2 is a string the real server ignores), so that a unary request with a
/// string field can be sent to the real upstream.
const LOOKUP_PROTO: &str = r#"
syntax = "proto3";
package apiguard.sample.v1;
service Orders {
  rpc GetOrder(Lookup) returns (Order);
  rpc ListOrders(ListOrdersRequest) returns (stream Order);
  rpc CreateOrders(stream NewOrder) returns (CreateOrdersReply);
  rpc Chat(stream ChatMessage) returns (stream ChatMessage);
}
message Lookup { uint64 id = 1; string note = 2; }
message Order { uint64 id = 1; uint64 user_id = 2; string item = 3; uint32 quantity = 4; }
message ListOrdersRequest { uint64 user_id = 1; uint32 delay_ms = 2; uint32 fail_after = 3; }
message NewOrder { uint64 user_id = 1; string item = 2; uint32 quantity = 3; }
message CreateOrdersReply { uint32 count = 1; repeated uint64 ids = 2; }
message ChatMessage { string text = 1; }
"#;

fn sample_proto() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/sample.proto")
}

struct GrpcSetup {
    gw: Harness,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// A gateway in front of the sample gRPC service, with `grpc_yaml` under the route's
/// `grpc:` (`{proto}` is replaced by the path of a proto file: `LOOKUP_PROTO`, or the
/// sample's own when `lookup` is false).
async fn grpc_gateway(grpc_yaml: &str, lookup: bool) -> GrpcSetup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(apiguard_sampleapi::serve_grpc(listener, async move {
        let _ = stopped.await;
    }));
    let dir = tempfile::tempdir().unwrap();
    let proto = if lookup {
        let path = dir.path().join("lookup.proto");
        std::fs::write(&path, LOOKUP_PROTO).unwrap();
        path
    } else {
        sample_proto()
    };
    let grpc_yaml = grpc_yaml.replace("{proto}", &proto.display().to_string());
    let yaml = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
upstreams:
  orders:
    targets: ["{upstream}"]
    protocol: h2c
routes:
  - id: orders
    upstream: orders
    grpc:
{grpc_yaml}
access_log:
  enabled: false
reload:
  watch: false
"#
    );
    GrpcSetup {
        gw: start(&yaml).await,
        _stop: stop,
        _dir: dir,
    }
}

async fn orders_client(gw: &Harness) -> OrdersClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(gw.url(""))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the gateway");
    OrdersClient::new(channel)
}

/// A gRPC call made by hand over HTTP/2: the answer's status and `grpc-status` /
/// `grpc-message` (from the head of a trailers-only answer, or from the trailers).
struct RawAnswer {
    http_status: StatusCode,
    grpc_status: Option<u32>,
    grpc_message: String,
    body: Bytes,
}

async fn raw_grpc(gw: &Harness, path: &str, message: &[u8]) -> RawAnswer {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    raw_grpc_body(gw, path, body).await
}

async fn raw_grpc_body(gw: &Harness, path: &str, body: Vec<u8>) -> RawAnswer {
    let request = Request::post(gw.url(path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), h2_client().request(request))
        .await
        .expect("answer within 20 s")
        .expect("answer");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    let pick = |name: &str, head: &HeaderMap| {
        head.get(name)
            .or_else(|| trailers.get(name))
            .map(|v| v.to_str().unwrap().to_owned())
    };
    RawAnswer {
        http_status: parts.status,
        grpc_status: pick("grpc-status", &parts.headers).map(|s| s.parse().unwrap()),
        grpc_message: pick("grpc-message", &parts.headers).unwrap_or_default(),
        body,
    }
}

/// A `Lookup` message: `id` (field 1) and `note` (field 2, shorter than 128 bytes).
fn lookup(id: u8, note: &str) -> Vec<u8> {
    assert!(id < 128 && note.len() < 128);
    let mut out = vec![0x08, id];
    if !note.is_empty() {
        out.push(0x12);
        out.push(note.len() as u8);
        out.extend_from_slice(note.as_bytes());
    }
    out
}

#[tokio::test]
async fn methods_off_the_allowlist_are_unimplemented() {
    let setup = grpc_gateway(
        r#"      proto_files: ["{proto}"]
      methods:
        - apiguard.sample.v1.Orders/GetOrder
        - apiguard.sample.v1.Orders/CreateOrders"#,
        false,
    )
    .await;
    let mut orders = orders_client(&setup.gw).await;
    let order = orders
        .get_order(GetOrderRequest { id: 1 })
        .await
        .expect("GetOrder is allowed")
        .into_inner();
    assert_eq!(order.id, 1);
    let refused = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert_eq!(
        refused.message(),
        "method apiguard.sample.v1.Orders/ListOrders is not served on this route"
    );
    // A method the service does not even have, as a trailers-only answer.
    let answer = raw_grpc(&setup.gw, "/apiguard.sample.v1.Orders/DeleteOrder", &[]).await;
    assert_eq!(answer.http_status, StatusCode::OK);
    assert_eq!(answer.grpc_status, Some(12));
    assert!(answer.body.is_empty());

    // Without a `methods` list, the descriptors' methods are the allowlist.
    let derived = grpc_gateway(r#"      proto_files: ["{proto}"]"#, false).await;
    let mut orders = orders_client(&derived.gw).await;
    let listed = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .expect("ListOrders is in the descriptors");
    assert!(listed.into_inner().next().await.is_some());
    let answer = raw_grpc(&derived.gw, "/apiguard.sample.v1.Orders/DeleteOrder", &[]).await;
    assert_eq!(answer.grpc_status, Some(12));
    assert_eq!(
        answer.grpc_message,
        "method apiguard.sample.v1.Orders/DeleteOrder is not served on this route"
    );
}

#[tokio::test]
async fn server_reflection_is_refused_unless_allowed() {
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let closed = grpc_gateway(r#"      proto_files: ["{proto}"]"#, false).await;
    let answer = raw_grpc(&closed.gw, path, &[]).await;
    assert_eq!(answer.grpc_status, Some(12));
    assert_eq!(
        answer.grpc_message,
        "server reflection is disabled on this route"
    );
    // Allowed, the request reaches the upstream (which has no reflection service and says
    // so in its own words).
    let open = grpc_gateway(
        "      proto_files: [\"{proto}\"]\n      allow_reflection: true",
        false,
    )
    .await;
    let answer = raw_grpc(&open.gw, path, &[]).await;
    assert_eq!(answer.grpc_status, Some(12));
    assert_ne!(
        answer.grpc_message,
        "server reflection is disabled on this route"
    );
}

#[tokio::test]
async fn oversize_messages_are_resource_exhausted_and_those_at_the_limit_pass() {
    let setup = grpc_gateway(
        "      proto_files: [\"{proto}\"]\n      max_message_bytes: 64",
        true,
    )
    .await;
    let gw = &setup.gw;
    // Unary: read whole before anything goes upstream. 4 + 60 bytes is the limit.
    let at_limit = lookup(1, &"n".repeat(60));
    assert_eq!(at_limit.len(), 64);
    let answer = raw_grpc(gw, "/apiguard.sample.v1.Orders/GetOrder", &at_limit).await;
    assert_eq!(answer.grpc_status, Some(0), "{}", answer.grpc_message);
    assert!(!answer.body.is_empty(), "the order came back");
    let over = lookup(1, &"n".repeat(61));
    let answer = raw_grpc(gw, "/apiguard.sample.v1.Orders/GetOrder", &over).await;
    assert_eq!(answer.http_status, StatusCode::OK);
    assert_eq!(answer.grpc_status, Some(8));
    assert_eq!(
        answer.grpc_message,
        "a request message of 65 bytes is larger than the limit of 64 bytes"
    );
    // A prefix announcing a huge message is refused before the message is sent.
    let mut huge_prefix = vec![0u8];
    huge_prefix.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let answer = raw_grpc_body(gw, "/apiguard.sample.v1.Orders/GetOrder", huge_prefix).await;
    assert_eq!(answer.grpc_status, Some(8));

    // A client stream: inspected as it flows.
    let mut orders = orders_client(gw).await;
    let order = |item: String| NewOrder {
        user_id: 1,
        item,
        quantity: 1,
    };
    let small = futures_util::stream::iter([order("a".into()), order("b".into())]);
    let created = orders.create_orders(small).await.expect("small orders");
    assert_eq!(created.into_inner().count, 2);
    let big = futures_util::stream::iter([order("a".into()), order("x".repeat(100))]);
    let refused = orders.create_orders(big).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
}

#[tokio::test]
async fn sql_injection_inside_a_protobuf_string_is_blocked_and_clean_messages_pass() {
    let setup = grpc_gateway(r#"      proto_files: ["{proto}"]"#, true).await;
    let gw = &setup.gw;
    let get_order = "/apiguard.sample.v1.Orders/GetOrder";

    // Unary.
    let clean = raw_grpc(gw, get_order, &lookup(1, "please deliver before noon")).await;
    assert_eq!(clean.grpc_status, Some(0), "{}", clean.grpc_message);
    let attack = raw_grpc(gw, get_order, &lookup(1, "1' or '1'='1")).await;
    assert_eq!(attack.http_status, StatusCode::OK);
    assert_eq!(attack.grpc_status, Some(7));
    assert_eq!(attack.grpc_message, "the request was refused by policy");

    // Client streaming: the stream stops at the attack.
    let mut orders = orders_client(gw).await;
    let order = |item: &str| NewOrder {
        user_id: 1,
        item: item.into(),
        quantity: 1,
    };
    let created = orders
        .create_orders(futures_util::stream::iter([
            order("blue widget"),
            order("red widget"),
        ]))
        .await
        .expect("clean orders");
    assert_eq!(created.into_inner().count, 2);
    let refused = orders
        .create_orders(futures_util::stream::iter([
            order("blue widget"),
            order("x' UNION SELECT password FROM users--"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // Bidirectional: the clean message is echoed, then the stream ends with the refusal.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut echoes = orders
        .chat(tokio_stream_from(rx))
        .await
        .expect("chat opens")
        .into_inner();
    tx.send(ChatMessage {
        text: "hello".into(),
    })
    .await
    .unwrap();
    assert_eq!(echoes.next().await.unwrap().unwrap().text, "hello");
    tx.send(ChatMessage {
        text: "1' or '1'='1".into(),
    })
    .await
    .unwrap();
    let end = match echoes.next().await {
        Some(Ok(m)) => panic!("the attack was echoed: {}", m.text),
        Some(Err(status)) => status,
        None => panic!("the stream ended without a status"),
    };
    assert_eq!(end.code(), tonic::Code::PermissionDenied, "{end:?}");
}

/// A receiver as a stream of messages for tonic.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<ChatMessage>,
) -> impl futures_util::Stream<Item = ChatMessage> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[test]
fn configuration_problems_are_reported_with_their_route() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apiguard.yaml");
    let yaml = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
upstreams:
  plain:
    targets: ["127.0.0.1:1"]
routes:
  - id: both
    upstream: plain
    graphql: {{max_depth: 0, budget: {{cost: 0, per: 1m}}}}
    grpc:
      proto_files: ["{}"]
      methods: ["no-slash"]
  - id: broken
    upstream: plain
    graphql:
      persisted_queries: ["{}"]
"#,
        Path::new("/nonexistent/x.proto").display(),
        Path::new("/nonexistent/allowed.graphql").display()
    );
    std::fs::write(&path, yaml).unwrap();
    let err = apiguard_gateway::validate_file(&path)
        .unwrap_err()
        .to_string();
    for needle in [
        "route `both`: give `graphql` or `grpc`, not both",
        "graphql.max_depth must be 1 to 60",
        "graphql.budget: cost, per and max_keys must be more than 0",
        "grpc needs an upstream with `protocol: h2c`",
        "grpc.proto_files",
        "cannot read the persisted-query file",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
}
