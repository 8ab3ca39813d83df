//! Authentication and authorisation together, end to end: identities proven by real JWTs
//! (keys from a JWKS server) and API keys reach the Cedar policies with their claims, and
//! the policies decide on them; a just-in-time grant opens what the policies do not.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use apiguard_testkit::TestUpstream;
use apiguard_testkit::jwt::{JwksServer, TestSigner, jwks, now_secs};
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

const ISS: &str = "https://idp.test/";
const AUD: &str = "orders-api";
const BILLING_KEY: &str = "billing-key-0123456789";

const CLAIMS: &str = r#"namespace ApiGuard {
  type Claims = { groups?: Set<String>, tenant?: String, team?: String };
}
"#;

const POLICIES: &str = r#"@id("staff-read")
permit(principal is ApiGuard::Identity, action in ApiGuard::Action::"read",
       resource == ApiGuard::Route::"orders")
  when { principal.claims has groups && principal.claims.groups.contains("staff") };

@id("tenant-write")
permit(principal is ApiGuard::Identity, action == ApiGuard::Action::"POST",
       resource == ApiGuard::Route::"orders")
  when { principal.auth_method == "jwt" && principal.claims has tenant
         && principal.claims.tenant == "acme" };

@id("billing-key-read")
permit(principal is ApiGuard::Identity, action == ApiGuard::Action::"GET",
       resource == ApiGuard::Route::"orders")
  when { principal.auth_method == "api_key" && principal.claims has team
         && principal.claims.team == "billing" };

@id("no-suspended")
forbid(principal is ApiGuard::Identity, action, resource)
  when { principal.claims has groups && principal.claims.groups.contains("suspended") };
"#;

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(upstream: SocketAddr, jwks_url: &str, dir: &Path) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
auth:
  providers:
    idp:
      jwt:
        issuers: ["{ISS}"]
        audiences: ["{AUD}"]
        clock_skew: 5s
        jwks:
          url: {jwks_url}
    partners:
      api_keys:
        keys:
          - name: billing
            sha256: {hash}
            attributes: {{team: billing}}
authz:
  policies: ["{dir}/api.cedar"]
  schema: "{dir}/claims.cedarschema"
routes:
  - id: orders
    match: {{path: {{prefix: /echo/orders}}}}
    upstream: backend
    auth:
      providers: [idp, partners]
access_log:
  enabled: false
reload:
  watch: false
"#,
        hash = sha256_hex(BILLING_KEY),
        dir = dir.display(),
    )
}

struct Setup {
    gw: Harness,
    signer: TestSigner,
    _jwks: JwksServer,
    _upstream: TestUpstream,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let upstream = TestUpstream::start().await.unwrap();
    let signer = TestSigner::es256("k1");
    let jwks_server = JwksServer::start(jwks(&[&signer])).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.cedar"), POLICIES).unwrap();
    std::fs::write(dir.path().join("claims.cedarschema"), CLAIMS).unwrap();
    let gw = start(&config(upstream.addr(), &jwks_server.url(), dir.path())).await;
    // The key set is fetched in the background; until then tokens get 503.
    let probe = token(&signer, "probe", json!({}), false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while call(&gw, "GET", bearer(probe.clone())).await.status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            std::time::Instant::now() < deadline,
            "the JWKS was not loaded within 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Setup {
        gw,
        signer,
        _jwks: jwks_server,
        _upstream: upstream,
        _dir: dir,
    }
}

/// A token for `sub` with extra claims, valid for an hour (or already expired).
fn token(signer: &TestSigner, sub: &str, extra: Value, expired: bool) -> String {
    let now = now_secs();
    let (iat, exp) = if expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 3600)
    };
    let mut claims =
        json!({"sub": sub, "iss": ISS, "aud": AUD, "iat": iat, "nbf": iat, "exp": exp});
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    signer.sign(&claims)
}

async fn call(gw: &Harness, method: &str, credential: Option<(&str, String)>) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(gw.url("/echo/orders/7"));
    if let Some((name, value)) = credential {
        request = request.header(name, value);
    }
    send(&h1_client(), request.body(Full::default()).unwrap()).await
}

fn bearer(token: String) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {token}")))
}

#[tokio::test]
async fn cedar_decides_on_the_claims_of_authenticated_identities() {
    let s = setup().await;
    let staff = token(&s.signer, "alice", json!({"groups": ["staff"]}), false);
    let tenant = token(&s.signer, "bob", json!({"tenant": "acme"}), false);
    let other_tenant = token(&s.signer, "carol", json!({"tenant": "globex"}), false);
    let suspended = token(
        &s.signer,
        "dave",
        json!({"groups": ["staff", "suspended"]}),
        false,
    );
    let expired = token(&s.signer, "alice", json!({"groups": ["staff"]}), true);

    // Authentication comes first: no credential, or an expired one, is a 401, not a 403.
    assert_eq!(
        call(&s.gw, "GET", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&s.gw, "GET", bearer(expired)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Group claim: staff read, but may not write.
    assert_eq!(
        call(&s.gw, "GET", bearer(staff.clone())).await.status,
        StatusCode::OK
    );
    let denied = call(&s.gw, "POST", bearer(staff)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["detail"], "the request is not authorised");

    // String claim: only tenant acme writes; a tenant claim alone does not read.
    assert_eq!(
        call(&s.gw, "POST", bearer(tenant.clone())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "GET", bearer(tenant)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&s.gw, "POST", bearer(other_tenant)).await.status,
        StatusCode::FORBIDDEN
    );

    // A forbid on a claim beats the permit the same identity otherwise has.
    assert_eq!(
        call(&s.gw, "GET", bearer(suspended)).await.status,
        StatusCode::FORBIDDEN
    );

    // An API key's configured attributes are its claims.
    let key = || Some(("x-api-key", BILLING_KEY.to_owned()));
    assert_eq!(call(&s.gw, "GET", key()).await.status, StatusCode::OK);
    assert_eq!(
        call(&s.gw, "DELETE", key()).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_just_in_time_grant_opens_a_route_for_one_authenticated_identity() {
    let s = setup().await;
    let bob = token(&s.signer, "bob", json!({"tenant": "acme"}), false);
    let erin = token(&s.signer, "erin", json!({"tenant": "acme"}), false);
    assert_eq!(
        call(&s.gw, "GET", bearer(bob.clone())).await.status,
        StatusCode::FORBIDDEN
    );

    let grant = send(
        &h1_client(),
        Request::builder()
            .method("POST")
            .uri(s.gw.admin_url("/authz/grants"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({
                    "principal": "ApiGuard::Identity::\"bob\"",
                    "routes": ["orders"],
                    "actions": ["GET"],
                    "ttl": "10m",
                    "reason": "incident 42",
                })
                .to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(grant.status, StatusCode::CREATED, "{:?}", grant.body);

    // The grant is for bob's proven identity only: another token of the same tenant, or
    // another method, stays refused.
    assert_eq!(
        call(&s.gw, "GET", bearer(bob.clone())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.gw, "GET", bearer(erin)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&s.gw, "DELETE", bearer(bob)).await.status,
        StatusCode::FORBIDDEN
    );
}
