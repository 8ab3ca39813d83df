//! The cost per request of the policy stages: one Cedar authorisation decision, and one
//! OpenAPI validation (parameters; a JSON body against its schema).
//!
//! `cargo bench -p apiguard-policy --bench authz`

use std::sync::Arc;

use apiguard_model::{AuthMethod, ClientInfo, Identity, RequestContext, RequestView, Stage};
use apiguard_policy::authz::{AuthzMode, AuthzStage, Grants, Source, compile};
use apiguard_policy::openapi::{OpenApiMode, OpenApiStage, Spec, UnknownEndpoints};
use criterion::{Criterion, criterion_group, criterion_main};

const POLICIES: &str = include_str!("../../../examples/policies/api.cedar");
const CLAIMS: &str = include_str!("../../../examples/policies/claims.cedarschema");
const SPEC: &str = include_str!("../../../examples/sampleapi.openapi.yaml");

struct Req {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    client: ClientInfo,
    body: Option<bytes::Bytes>,
}

impl Req {
    fn new(method: &str, uri: &str, content_type: Option<&str>, body: Option<&str>) -> Req {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "api.example.com".parse().unwrap());
        headers.insert(http::header::USER_AGENT, "bench/1.0".parse().unwrap());
        if let Some(ct) = content_type {
            headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        Req {
            method: method.parse().unwrap(),
            uri: uri.parse().unwrap(),
            headers,
            client: ClientInfo {
                peer: "10.20.1.2:40000".parse().unwrap(),
                tls: true,
                client_cert_subject: None,
                client_cert_sans: Vec::new(),
            },
            body: body.map(|b| bytes::Bytes::from(b.to_owned())),
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            version: http::Version::HTTP_11,
            headers: &self.headers,
            client: &self.client,
            route: "orders",
            request_id: "bench",
            body: self.body.as_ref(),
        }
    }
}

fn run(stage: &dyn Stage, request: &Req, identity: Option<&Identity>) -> bool {
    let mut ctx = RequestContext {
        identity: identity.cloned(),
        ..RequestContext::default()
    };
    matches!(
        stage.inspect(&request.view(), &mut ctx),
        apiguard_model::Outcome::Continue
    )
}

fn authz(c: &mut Criterion) {
    let policies = compile(
        &[Source {
            file: "api.cedar",
            text: POLICIES,
        }],
        Some(&Source {
            file: "claims.cedarschema",
            text: CLAIMS,
        }),
    )
    .expect("the example policies compile");
    let policies = Arc::new(policies);
    let stage = |cache: usize| {
        AuthzStage::new(
            "orders",
            policies.clone(),
            Arc::new(Grants::default()),
            Arc::new(()),
            AuthzMode::Enforce,
        )
        .with_decision_cache(cache)
    };
    // Every request evaluated by Cedar (what a cache miss costs).
    let uncached = stage(0);
    // The same request again: answered by the route's decision cache.
    let cached = stage(apiguard_policy::authz::DECISION_CACHE_CAPACITY);
    let get = Req::new("GET", "/api/orders/7", None, None);
    let staff = Identity {
        subject: "alice".into(),
        method: AuthMethod::Jwt,
        claims: serde_json::json!({
            "iss": "https://idp.example.com", "aud": "api", "exp": 1_900_000_000,
            "groups": ["staff", "eu"], "tenant": "acme", "level": 4, "scope": "orders:read"
        })
        .as_object()
        .unwrap()
        .clone(),
    };
    for stage in [&uncached, &cached] {
        assert!(run(stage, &get, Some(&staff)), "staff may read orders");
        assert!(!run(stage, &get, None), "anonymous may not");
    }
    let mut group = c.benchmark_group("authz");
    group.bench_function("cedar_decision_identity_allow", |b| {
        b.iter(|| run(&uncached, &get, Some(&staff)))
    });
    group.bench_function("cedar_decision_anonymous_deny", |b| {
        b.iter(|| run(&uncached, &get, None))
    });
    group.bench_function("cached_decision_identity_allow", |b| {
        b.iter(|| run(&cached, &get, Some(&staff)))
    });
    group.bench_function("cached_decision_anonymous_deny", |b| {
        b.iter(|| run(&cached, &get, None))
    });
    group.finish();
}

fn openapi(c: &mut Criterion) {
    let spec = Arc::new(Spec::parse(SPEC, None).expect("the example spec compiles"));
    let stage = OpenApiStage {
        spec,
        mode: OpenApiMode::Enforce,
        unknown: UnknownEndpoints::Block,
        body_limit: 1024 * 1024,
    };
    let get = Req::new("GET", "/api/orders?user_id=42", None, None);
    let order = r#"{"user_id": 42, "item": "a hardcover copy of The Rust Programming Language, second edition", "quantity": 3}"#;
    let post = Req::new("POST", "/api/orders", Some("application/json"), Some(order));
    let bad = Req::new(
        "POST",
        "/api/orders",
        Some("application/json"),
        Some(r#"{"user_id": "42", "item": "", "quantity": 0, "note": "x"}"#),
    );
    assert!(run(&stage, &get, None));
    assert!(run(&stage, &post, None));
    assert!(!run(&stage, &bad, None));
    let mut group = c.benchmark_group("openapi");
    group.bench_function("get_with_query_parameter", |b| {
        b.iter(|| run(&stage, &get, None))
    });
    group.bench_function("post_json_body_valid", |b| {
        b.iter(|| run(&stage, &post, None))
    });
    group.bench_function("post_json_body_four_violations", |b| {
        b.iter(|| run(&stage, &bad, None))
    });
    group.finish();
}

criterion_group!(benches, authz, openapi);
criterion_main!(benches);
