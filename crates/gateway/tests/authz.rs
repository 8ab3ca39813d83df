//! Authorisation end to end with anonymous principals: Cedar policies on route, method,
//! path, address and reputation; least privilege; just-in-time grants through the admin API
//! that expire by themselves; a reload with an invalid policy refused while the old policy
//! keeps serving.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use apiguard_model::EventKind;
use apiguard_testkit::TestUpstream;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

const POLICIES: &str = r#"// Anyone on this machine may read the public route.
@id("public-read")
permit(principal, action in ApiGuard::Action::"read", resource == ApiGuard::Route::"public")
  when { context.client_ip.isLoopback() };

// Nobody reads secrets, whatever else permits it.
@id("no-secrets")
forbid(principal, action, resource) when { context.path like "*/secret*" };

// Listed addresses get nothing.
@id("bad-reputation")
forbid(principal, action, resource) when { context.reputation.listed };
"#;

fn config(upstream: std::net::SocketAddr, dir: &Path) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
authz:
  policies: ["{dir}/api.cedar"]
  max_grant_ttl: 1h
routes:
  - id: public
    match: {{path: {{prefix: /echo/public}}}}
    upstream: backend
    detect: {{mode: detect_only}}
  - id: admin
    match: {{path: {{prefix: /echo/admin}}}}
    upstream: backend
  - id: health
    match: {{path: {{exact: /healthz}}}}
    upstream: backend
    authz: {{mode: off}}
access_log:
  enabled: false
reload:
  watch: false
"#,
        dir = dir.display()
    )
}

struct Setup {
    gw: Harness,
    upstream: TestUpstream,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let upstream = TestUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.cedar"), POLICIES).unwrap();
    let gw = start(&config(upstream.addr(), dir.path())).await;
    Setup { gw, upstream, dir }
}

async fn call(gw: &Harness, method: &str, path: &str) -> Reply {
    send(
        &h1_client(),
        Request::builder()
            .method(method)
            .uri(gw.url(path))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

async fn admin(gw: &Harness, method: &str, path: &str, body: &str) -> Reply {
    send(
        &h1_client(),
        Request::builder()
            .method(method)
            .uri(gw.admin_url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

/// Polls until `call` answers `status`, for up to 15 s.
async fn until_status(gw: &Harness, method: &str, path: &str, status: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = call(gw, method, path).await;
        if reply.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path} still answers {} instead of {status}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn policies_permit_deny_and_forbid_by_route_method_path_and_reputation() {
    let s = setup().await;
    let mut events = s.gw.gateway.subscribe();
    assert_eq!(
        call(&s.gw, "GET", "/echo/public/a").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "HEAD", "/echo/public/a").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "GET", "/healthz").await.status,
        StatusCode::OK,
        "authz off"
    );

    let before = s.upstream.request_count();
    // A write on the public route: no policy permits it (and detect-only does not open it).
    let denied = call(&s.gw, "POST", "/echo/public/a").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.headers["content-type"], "application/problem+json");
    assert_eq!(denied.json()["detail"], "the request is not authorised");
    // Least privilege: the admin route has no permitting policy at all.
    assert_eq!(
        call(&s.gw, "GET", "/echo/admin/users").await.status,
        StatusCode::FORBIDDEN
    );
    // A forbid wins over the permit.
    assert_eq!(
        call(&s.gw, "GET", "/echo/public/secret/x").await.status,
        StatusCode::FORBIDDEN
    );
    // Path conditions see the path as routed: dot segments cannot dodge the forbid.
    assert_eq!(
        call(&s.gw, "GET", "/echo/public/x/../secret/x")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.upstream.request_count(),
        before,
        "a denied request reached the upstream"
    );

    let evidence = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if let EventKind::RequestInspected { findings, .. } = &event.kind
                && let Some(f) = findings.iter().find(|f| f.rule_id == "authz.deny")
            {
                return (event.method.clone(), f.evidence.clone());
            }
        }
    })
    .await
    .expect("an authz.deny event");
    assert_eq!(evidence.0.as_deref(), Some("POST"));
    assert!(
        evidence
            .1
            .contains("ApiGuard::Anonymous::\"anonymous\" POST on route public"),
        "{}",
        evidence.1
    );

    // The reputation list (a shared indicator in monitor mode) is read by policies.
    s.gw.gateway
        .enforcement()
        .watch(apiguard_gateway::enforcement::BlockRule {
            target: "127.0.0.1".parse().unwrap(),
            until_ms: apiguard_model::event::now_ms() + 60_000,
            source: "hub".into(),
            reason: "test".into(),
            indicator: None,
            created_ms: apiguard_model::event::now_ms(),
            canary_percent: None,
        });
    assert_eq!(
        call(&s.gw, "GET", "/echo/public/a").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&s.gw, "GET", "/healthz").await.status,
        StatusCode::OK,
        "listed, not blocked"
    );
    let listed = admin(&s.gw, "GET", "/enforcement/blocks", "").await.json();
    assert_eq!(listed["watched"][0]["target"], "127.0.0.1");
    drop(s.dir);
}

#[tokio::test]
async fn a_just_in_time_grant_opens_a_route_until_it_expires_and_is_audited() {
    let s = setup().await;
    assert_eq!(
        call(&s.gw, "GET", "/echo/admin/x").await.status,
        StatusCode::FORBIDDEN
    );
    let granted = admin(
        &s.gw,
        "POST",
        "/authz/grants",
        r#"{"principal": "ApiGuard::Anonymous::\"anonymous\"", "routes": ["admin"],
            "actions": ["GET"], "client": "127.0.0.0/8", "ttl": "2s",
            "reason": "INC-7 debugging", "granted_by": "oncall"}"#,
    )
    .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{:?}", granted.body);
    let grant = granted.json()["grant"].clone();
    assert_eq!(grant["principal"], "ApiGuard::Anonymous::\"anonymous\"");
    assert_eq!(grant["client"], "127.0.0.0/8");

    assert_eq!(
        call(&s.gw, "GET", "/echo/admin/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "DELETE", "/echo/admin/x").await.status,
        StatusCode::FORBIDDEN,
        "only the granted method"
    );
    assert_eq!(
        call(&s.gw, "GET", "/echo/public/secret").await.status,
        StatusCode::FORBIDDEN,
        "a grant never overrides a forbid"
    );
    let listed = admin(&s.gw, "GET", "/authz/grants", "").await.json();
    assert_eq!(listed["grants"][0]["id"], grant["id"]);
    // The grant outlives a reload.
    assert_eq!(
        admin(&s.gw, "POST", "/config/reload", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "GET", "/echo/admin/x").await.status,
        StatusCode::OK
    );

    // It expires by itself, and the sweep audits it.
    until_status(&s.gw, "GET", "/echo/admin/x", StatusCode::FORBIDDEN).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let audit = loop {
        let audit = admin(&s.gw, "GET", "/authz/audit", "").await.json();
        let events: Vec<String> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect();
        if events == ["granted", "expired"] {
            break audit;
        }
        assert!(Instant::now() < deadline, "audit trail: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(audit["entries"][1]["grant"]["id"], grant["id"]);
    assert_eq!(audit["entries"][0]["grant"]["granted_by"], "oncall");
    assert!(
        admin(&s.gw, "GET", "/authz/grants", "").await.json()["grants"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A grant revoked early stops at once and is audited as revoked.
    let again = admin(
        &s.gw,
        "POST",
        "/authz/grants",
        r#"{"principal": {"type": "ApiGuard::Anonymous", "id": "anonymous"},
            "routes": ["*"], "actions": ["*"], "ttl": "10m", "reason": "INC-8"}"#,
    )
    .await
    .json();
    assert_eq!(
        call(&s.gw, "POST", "/echo/admin/x").await.status,
        StatusCode::OK
    );
    let id = again["grant"]["id"].as_str().unwrap();
    let revoked = admin(&s.gw, "DELETE", &format!("/authz/grants/{id}?by=alice"), "").await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(
        call(&s.gw, "POST", "/echo/admin/x").await.status,
        StatusCode::FORBIDDEN
    );
    let audit = admin(&s.gw, "GET", "/authz/audit", "").await.json();
    assert_eq!(audit["entries"][3]["event"], "revoked");
    assert_eq!(audit["entries"][3]["by"], "alice");
    assert_eq!(
        admin(&s.gw, "DELETE", &format!("/authz/grants/{id}"), "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    drop(s.dir);
}

#[tokio::test]
async fn bad_grants_get_a_clear_error() {
    let s = setup().await;
    for (body, expected) in [
        (
            r#"{"principal": "alice", "routes": ["admin"], "actions": ["GET"], "ttl": "1m", "reason": "x"}"#,
            "Cedar entity uid",
        ),
        (
            r#"{"principal": "ApiGuard::Identity::\"alice\"", "routes": ["nope"], "actions": ["GET"], "ttl": "1m", "reason": "x"}"#,
            "not in the configuration",
        ),
        (
            r#"{"principal": "ApiGuard::Identity::\"alice\"", "routes": ["admin"], "actions": ["get"], "ttl": "1m", "reason": "x"}"#,
            "upper case",
        ),
        (
            r#"{"principal": "ApiGuard::Identity::\"alice\"", "routes": ["admin"], "actions": ["GET"], "ttl": "2h", "reason": "x"}"#,
            "at most 3600s",
        ),
        (
            r#"{"principal": "ApiGuard::Identity::\"alice\"", "routes": ["admin"], "actions": ["GET"], "ttl": "1m", "reason": " "}"#,
            "reason",
        ),
        (
            r#"{"principal": "ApiGuard::Identity::\"alice\"", "routes": ["admin"], "actions": ["GET"], "ttl": "1m", "reason": "x", "client": "10.0.0.1/8"}"#,
            "host bits",
        ),
        ("{}", "expected"),
    ] {
        let reply = admin(&s.gw, "POST", "/authz/grants", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(expected), "{body}: {error}");
    }
    assert!(
        admin(&s.gw, "GET", "/authz/audit", "").await.json()["entries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    drop(s.dir);
}

#[tokio::test]
async fn a_reload_with_an_invalid_policy_is_refused_and_the_old_policy_keeps_serving() {
    let s = setup().await;
    let policy_file = s.dir.path().join("api.cedar");
    // A typo in a context attribute: it parses, but does not validate against the schema.
    std::fs::write(
        &policy_file,
        "permit(principal, action, resource == ApiGuard::Route::\"admin\")\n  when { context.risk > 1 };\n",
    )
    .unwrap();
    let rejected = admin(&s.gw, "POST", "/config/reload", "").await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    let problems = rejected.json()["problems"].to_string();
    let expected = format!("authz: {}:2:", policy_file.display());
    assert!(problems.contains(&expected), "{problems}");
    assert!(problems.contains("risk"), "{problems}");
    // A syntax error names its line and column too.
    std::fs::write(
        &policy_file,
        "permit(principal, action, resource)\nforbid(principal,);\n",
    )
    .unwrap();
    let rejected = admin(&s.gw, "POST", "/config/reload", "").await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    let problems = rejected.json()["problems"].to_string();
    assert!(
        problems.contains(&format!("{}:", policy_file.display())),
        "{problems}"
    );

    // The old policies still decide.
    assert_eq!(
        call(&s.gw, "GET", "/echo/public/a").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "GET", "/echo/admin/a").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(s.gw.gateway.snapshot().version, 1);

    // A valid change applies.
    std::fs::write(
        &policy_file,
        "permit(principal, action == ApiGuard::Action::\"GET\", resource == ApiGuard::Route::\"admin\");\n",
    )
    .unwrap();
    assert_eq!(
        admin(&s.gw, "POST", "/config/reload", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "GET", "/echo/admin/a").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "GET", "/echo/public/a").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn validate_reports_policy_problems_and_a_missing_file() {
    let upstream = TestUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("api.cedar"),
        "permit(principal, action, resource) when { context.nope };",
    )
    .unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config(upstream.addr(), dir.path())).unwrap();
    let error = apiguard_gateway::validate_file(&path)
        .unwrap_err()
        .to_string();
    assert!(error.contains("api.cedar:1:"), "{error}");
    assert!(error.contains("nope"), "{error}");
    std::fs::remove_file(dir.path().join("api.cedar")).unwrap();
    let error = apiguard_gateway::validate_file(&path)
        .unwrap_err()
        .to_string();
    // The config file's own position (the `policies:` entry) comes first.
    assert!(error.contains("gateway.yaml:10:"), "{error}");
    assert!(error.contains("cannot read"), "{error}");
}
