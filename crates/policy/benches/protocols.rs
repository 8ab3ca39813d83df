//! Cost per request of protocol inspection (stage 7):
//! `cargo bench -p apiguard-policy --bench protocols`.
//!
//! - `graphql/scan`: the bounded pre-scan of a typical query (tokens, nesting);
//! - `graphql/measure`: pre-scan, parse (async-graphql-parser) and the limits walker;
//! - `graphql/stage_post`: the whole GraphQL stage on a `POST` JSON request (body parsing,
//!   measuring, cost budget);
//! - `graphql/response_clean`: a 2 KiB response checked for field suggestions (none);
//! - `grpc/message`: one protobuf message framed, decoded with its descriptor and its string
//!   fields collected.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiguard_model::{ClientInfo, RequestContext, RequestView, Stage};
use apiguard_policy::graphql::{
    BudgetSettings, CostBudget, GraphqlSettings, GraphqlStage, scan_document, strip_suggestions,
};
use apiguard_policy::grpc::{Descriptors, GrpcSettings, MessageInspector};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri, Version, header};

/// A typical client query: named, with variables, aliases, a fragment and nested lists.
const TYPICAL: &str = r#"query Dashboard($user: ID!, $first: Int = 20) {
  me: user(id: $user) {
    ...UserFields
    orders(first: $first) {
      id
      item
      quantity
      user { id name }
    }
  }
  recent: orders(first: 5) { id item }
  __typename
}
fragment UserFields on User {
  id
  name
  email
}"#;

fn client() -> ClientInfo {
    ClientInfo {
        peer: SocketAddr::from(([192, 0, 2, 1], 40000)),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    }
}

fn graphql(c: &mut Criterion) {
    let mut group = c.benchmark_group("graphql");
    let stage = GraphqlStage::new(GraphqlSettings {
        production: true,
        budget: Some(Arc::new(CostBudget::new(BudgetSettings {
            capacity: u64::MAX / 2,
            window: Duration::from_secs(1),
            max_keys: 1000,
        }))),
        ..GraphqlSettings::default()
    });
    let variables = serde_json::json!({"user": "7", "first": 20});
    let variables = variables.as_object().unwrap();
    assert!(
        stage
            .measure_document(TYPICAL, None, Some(variables))
            .is_ok()
    );
    group.bench_function("scan", |b| {
        b.iter(|| black_box(scan_document(black_box(TYPICAL), 5000)))
    });
    group.bench_function("measure", |b| {
        b.iter(|| black_box(stage.measure_document(black_box(TYPICAL), None, Some(variables))))
    });

    let body = Bytes::from(
        serde_json::json!({"query": TYPICAL, "operationName": "Dashboard", "variables": variables})
            .to_string(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let uri: Uri = "/graphql".parse().unwrap();
    let client = client();
    let view = RequestView {
        method: &Method::POST,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &headers,
        client: &client,
        route: "graphql",
        request_id: "bench",
        body: Some(&body),
    };
    assert!(matches!(
        stage.inspect(&view, &mut RequestContext::default()),
        apiguard_model::Outcome::Continue
    ));
    group.bench_function("stage_post", |b| {
        b.iter(|| {
            let mut ctx = RequestContext::default();
            black_box(stage.inspect(black_box(&view), &mut ctx))
        })
    });

    let orders: Vec<_> = (0..20)
        .map(|i| serde_json::json!({"id": i, "item": format!("item {i}"), "quantity": 1, "user": {"id": 7, "name": "Alice"}}))
        .collect();
    let response = serde_json::json!({"data": {"me": {"id": 7, "name": "Alice", "email": "alice@example.com", "orders": orders}}}).to_string();
    assert!(response.len() > 1500);
    group.bench_function("response_clean", |b| {
        b.iter(|| black_box(strip_suggestions(black_box(response.as_bytes()))))
    });
    group.finish();
}

fn grpc(c: &mut Criterion) {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/sample.proto");
    let descriptors = Arc::new(Descriptors::from_protos(&[proto], &[]).unwrap());
    let settings = GrpcSettings {
        descriptors: Some(descriptors),
        ..GrpcSettings::default()
    };
    // NewOrder { user_id: 7, item: "two blue widgets, gift wrapped", quantity: 2 }.
    let item = b"two blue widgets, gift wrapped";
    let mut message = vec![0x08, 7, 0x12, item.len() as u8];
    message.extend_from_slice(item);
    message.extend_from_slice(&[0x18, 2]);
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let path = "/apiguard.sample.v1.Orders/CreateOrders";
    let mut group = c.benchmark_group("grpc");
    group.bench_function("message", |b| {
        b.iter(|| {
            let mut inspector = MessageInspector::new(&settings, path);
            let mut count = 0;
            inspector
                .feed(black_box(&framed), |fields| {
                    count += fields.len();
                    Ok(())
                })
                .unwrap();
            black_box(count)
        })
    });
    group.finish();
}

criterion_group!(benches, graphql, grpc);
criterion_main!(benches);
