//! The stage over requests built in memory (the gateway's integration tests send real ones).

use std::net::SocketAddr;
use std::time::Duration;

use apiguard_model::{AuthMethod, ClientInfo, Identity};
use bytes::Bytes;
use http::{HeaderMap, Uri, Version};

use super::*;

fn client() -> ClientInfo {
    ClientInfo {
        peer: SocketAddr::from(([192, 0, 2, 7], 40000)),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    }
}

struct Sent {
    outcome: Outcome,
    ctx: RequestContext,
}

impl Sent {
    /// The refusing rule, or `None` when the request passes.
    fn rule(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Continue => None,
            Outcome::Block { finding, .. } => Some(&finding.rule_id),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    fn status(&self) -> u16 {
        match &self.outcome {
            Outcome::Block { status, .. } => *status,
            _ => 200,
        }
    }

    fn detail(&self) -> String {
        match &self.outcome {
            Outcome::Block { finding, .. } => finding.evidence.clone(),
            _ => String::new(),
        }
    }
}

fn post(stage: &GraphqlStage, content_type: &str, body: &str, who: Option<&str>) -> Sent {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
    let body = Bytes::from(body.to_owned());
    send(stage, Method::POST, "/graphql", &headers, Some(&body), who)
}

fn json(stage: &GraphqlStage, body: serde_json::Value) -> Sent {
    post(stage, "application/json", &body.to_string(), None)
}

fn query(stage: &GraphqlStage, doc: &str) -> Sent {
    json(stage, serde_json::json!({ "query": doc }))
}

fn send(
    stage: &GraphqlStage,
    method: Method,
    uri: &str,
    headers: &HeaderMap,
    body: Option<&Bytes>,
    who: Option<&str>,
) -> Sent {
    let uri: Uri = uri.parse().unwrap();
    let client = client();
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers,
        client: &client,
        route: "graphql",
        request_id: "test",
        body,
    };
    let mut ctx = RequestContext {
        identity: who.map(|subject| Identity {
            subject: subject.into(),
            method: AuthMethod::ApiKey,
            claims: Default::default(),
        }),
        ..RequestContext::default()
    };
    let outcome = stage.inspect(&view, &mut ctx);
    Sent { outcome, ctx }
}

fn stage(limits: GraphqlLimits) -> GraphqlStage {
    GraphqlStage::new(GraphqlSettings {
        limits,
        production: true,
        ..GraphqlSettings::default()
    })
}

/// `depth` fields nested: `{ a { a { ... } } }`.
fn nested(depth: usize) -> String {
    format!("{}{}", "{ a ".repeat(depth), "}".repeat(depth))
}

#[test]
fn each_limit_refuses_just_over_and_passes_at_the_limit() {
    let limits = GraphqlLimits {
        max_depth: 4,
        max_aliases: 2,
        max_root_fields: 3,
        max_batch: 2,
        max_tokens: 40,
        max_document_bytes: 200,
        max_request_bytes: 400,
        max_cost: Some(50),
    };
    let s = stage(limits);
    assert_eq!(query(&s, &nested(4)).rule(), None);
    assert_eq!(query(&s, &nested(5)).rule(), Some("graphql.depth"));
    assert_eq!(query(&s, "{ x: a y: b }").rule(), None);
    assert_eq!(
        query(&s, "{ x: a y: b z: c }").rule(),
        Some("graphql.aliases")
    );
    assert_eq!(query(&s, "{ a b c }").rule(), None);
    assert_eq!(query(&s, "{ a b c d }").rule(), Some("graphql.root_fields"));
    // 40 tokens: `{` + 38 names + `}`; one more is over.
    let names = |n: usize| format!("{{ a {{ {} }} }}", "b ".repeat(n));
    assert_eq!(query(&s, &names(35)).rule(), None);
    assert_eq!(query(&s, &names(36)).rule(), Some("graphql.tokens"));
    let at_limit = format!("{{ a{}}}", " ".repeat(196));
    assert_eq!(at_limit.len(), 200);
    assert_eq!(query(&s, &at_limit).rule(), None);
    let long = format!("{{ a{}}}", " ".repeat(197));
    assert_eq!(query(&s, &long).rule(), Some("graphql.document_size"));
    let sent = query(&s, &long);
    assert_eq!(sent.status(), 413);
    assert!(sent.detail().contains("200 bytes"), "{}", sent.detail());
    // Cost: users(first: 7) { a b c d e f } costs 1 + 7 * 6 = 43; first: 9 costs 55.
    assert_eq!(
        query(&s, "{ users(first: 7) { a b c d e f } }").rule(),
        None
    );
    let costly = query(&s, "{ users(first: 9) { a b c d e f } }");
    assert_eq!(costly.rule(), Some("graphql.cost"));
    assert!(costly.detail().contains("55"), "{}", costly.detail());
    // Batches.
    let two = serde_json::json!([{ "query": "{ a }" }, { "query": "{ b }" }]);
    assert_eq!(json(&s, two).rule(), None);
    let three =
        serde_json::json!([{ "query": "{ a }" }, { "query": "{ b }" }, { "query": "{ c }" }]);
    assert_eq!(json(&s, three).rule(), Some("graphql.batch"));
    let bad_second = serde_json::json!([{ "query": "{ a }" }, { "query": nested(5) }]);
    let sent = json(&s, bad_second);
    assert_eq!(sent.rule(), Some("graphql.depth"));
    assert!(
        sent.detail().starts_with("operation 1 of the batch"),
        "{}",
        sent.detail()
    );
    // The whole body.
    let big = format!("{{\"query\": \"{{ a }}\", \"x\": \"{}\"}}", "y".repeat(400));
    assert_eq!(post(&s, "application/json", &big, None).status(), 413);
}

#[test]
fn every_transport_is_inspected() {
    let s = stage(GraphqlLimits {
        max_depth: 2,
        ..GraphqlLimits::default()
    });
    let deep = nested(3);
    assert_eq!(
        post(&s, "application/graphql", &deep, None).rule(),
        Some("graphql.depth")
    );
    let get = |qs: &str| {
        send(
            &s,
            Method::GET,
            &format!("/graphql?{qs}"),
            &HeaderMap::new(),
            None,
            None,
        )
    };
    assert_eq!(
        get("query=%7B+a+%7B+a+%7B+a+%7D+%7D+%7D").rule(),
        Some("graphql.depth")
    );
    assert_eq!(get("query=%7B+a+%7D").rule(), None);
    // Not an operation: passes.
    assert_eq!(get("x=1").rule(), None);
    let options = send(
        &s,
        Method::OPTIONS,
        "/graphql",
        &HeaderMap::new(),
        None,
        None,
    );
    assert_eq!(options.rule(), None);
    assert_eq!(
        post(&s, "text/plain", "{ a }", None).rule(),
        Some("graphql.content_type")
    );
    assert_eq!(
        post(&s, "application/json", "{", None).rule(),
        Some("graphql.request")
    );
    assert_eq!(
        post(&s, "application/json", "", None).rule(),
        Some("graphql.request")
    );
    assert_eq!(query(&s, "{ a ").rule(), Some("graphql.syntax"));
    assert_eq!(query(&s, "{ ...F }").rule(), Some("graphql.document"));
}

#[test]
fn introspection_only_in_production_mode() {
    let doc = "{ __schema { types { name } } }";
    let prod = stage(GraphqlLimits::default());
    let sent = query(&prod, doc);
    assert_eq!(sent.rule(), Some("graphql.introspection_disabled"));
    assert_eq!(sent.status(), 403);
    assert_eq!(query(&prod, "{ users { __typename } }").rule(), None);
    let dev = GraphqlStage::new(GraphqlSettings::default());
    assert_eq!(query(&dev, doc).rule(), None);
}

#[test]
fn persisted_query_allowlist() {
    let allowed = "query Orders { orders { id } }";
    let list =
        PersistedQueries::from_files(&[("allowed.graphql".into(), allowed.as_bytes().to_vec())])
            .unwrap();
    let s = GraphqlStage::new(GraphqlSettings {
        persisted: Some(Arc::new(list)),
        ..GraphqlSettings::default()
    });
    let hex: String = document_hash(allowed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let apq =
        |hash: &str| serde_json::json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    assert_eq!(query(&s, allowed).rule(), None);
    assert_eq!(
        json(&s, serde_json::json!({"extensions": apq(&hex)})).rule(),
        None
    );
    assert_eq!(
        json(
            &s,
            serde_json::json!({"query": allowed, "extensions": apq(&hex)})
        )
        .rule(),
        None
    );
    let other = query(&s, "query Orders { orders { id user { email } } }");
    assert_eq!(other.rule(), Some("graphql.persisted_query"));
    assert_eq!(other.status(), 403);
    let unknown = json(&s, serde_json::json!({"extensions": apq(&"0".repeat(64))}));
    assert_eq!(unknown.status(), 403);
    let mismatch = json(
        &s,
        serde_json::json!({"query": "{ a }", "extensions": apq(&hex)}),
    );
    assert_eq!(mismatch.status(), 400);
}

#[test]
fn automatic_persisted_queries_without_an_allowlist_reuse_the_known_cost() {
    let s = GraphqlStage::new(GraphqlSettings {
        limits: GraphqlLimits {
            max_cost: None,
            ..GraphqlLimits::default()
        },
        budget: Some(Arc::new(CostBudget::new(BudgetSettings {
            capacity: 30,
            window: Duration::from_secs(3600),
            max_keys: 100,
        }))),
        ..GraphqlSettings::default()
    });
    let doc = "{ users(first: 20) { id } }"; // cost 21
    let hex: String = document_hash(doc)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ext = serde_json::json!({"persistedQuery": {"version": 1, "sha256Hash": hex}});
    let full = post(
        &s,
        "application/json",
        &serde_json::json!({"query": doc, "extensions": ext}).to_string(),
        Some("a"),
    );
    assert_eq!(full.rule(), None);
    // The hash alone now costs 21 too: 9 are left.
    let again = post(
        &s,
        "application/json",
        &serde_json::json!({"extensions": ext}).to_string(),
        Some("a"),
    );
    assert_eq!(again.rule(), Some("graphql.budget"));
}

#[test]
fn the_budget_is_per_identity_and_says_when_to_retry() {
    let s = GraphqlStage::new(GraphqlSettings {
        budget: Some(Arc::new(CostBudget::new(BudgetSettings {
            capacity: 100,
            window: Duration::from_secs(100),
            max_keys: 100,
        }))),
        ..GraphqlSettings::default()
    });
    let body = serde_json::json!({"query": "{ users(first: 29) { id name } }"}) // 1 + 29 * 2 = 59
        .to_string();
    assert_eq!(
        post(&s, "application/json", &body, Some("alice")).rule(),
        None
    );
    let refused = post(&s, "application/json", &body, Some("alice"));
    assert_eq!(refused.rule(), Some("graphql.budget"));
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.ctx.response_headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((17..=19).contains(&retry), "{retry}");
    assert_eq!(
        post(&s, "application/json", &body, Some("bob")).rule(),
        None
    );
    // Anonymous requests spend their address's budget.
    assert_eq!(post(&s, "application/json", &body, None).rule(), None);
    assert_eq!(
        post(&s, "application/json", &body, None).rule(),
        Some("graphql.budget")
    );
    // A query costlier than the whole budget can never pass: 400, not 429.
    let huge = serde_json::json!({"query": "{ users(first: 200) { id } }"}).to_string();
    assert_eq!(
        post(&s, "application/json", &huge, Some("carol")).status(),
        400
    );
}
