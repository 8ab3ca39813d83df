use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use apiguard_model::{AuthMethod, ClientInfo, Outcome, RequestContext, RequestView, Stage};
use apiguard_testkit::jwt::{TestSigner, jwks, now_secs};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;

const ISS: &str = "https://idp.test/";
const AUD: &str = "orders";

fn client(ip: &str) -> ClientInfo {
    ClientInfo {
        peer: SocketAddr::new(ip.parse().unwrap(), 40000),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    }
}

fn inspect(
    stage: &dyn Stage,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> (Outcome, RequestContext) {
    let method = Method::GET;
    let uri: Uri = "/orders/1".parse().unwrap();
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers,
        client,
        route: "orders",
        request_id: "test",
        body: None,
    };
    let mut ctx = RequestContext::default();
    let outcome = stage.inspect(&view, &mut ctx);
    (outcome, ctx)
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn static_keys(signers: &[&TestSigner]) -> KeySource {
    let (set, skipped) = KeySet::from_jwks(jwks(signers).to_string().as_bytes()).unwrap();
    assert_eq!(skipped, 0);
    KeySource::Static(Arc::new(set))
}

fn provider(name: &str, keys: KeySource, algorithms: Vec<Algorithm>) -> JwtProvider {
    JwtProvider::new(JwtSettings {
        name: name.into(),
        issuers: vec![ISS.into()],
        audiences: vec![AUD.into()],
        algorithms,
        leeway: Duration::from_secs(30),
        header: http::header::AUTHORIZATION,
        subject_claim: "sub".into(),
        keys,
    })
}

fn claims(exp_offset: i64) -> serde_json::Value {
    let now = now_secs() as i64;
    json!({"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "exp": now + exp_offset, "role": "admin"})
}

#[test]
fn asymmetric_tokens_verify_and_carry_their_claims() {
    for signer in [
        TestSigner::es256("ec-1"),
        TestSigner::eddsa("ed-1"),
        TestSigner::rs256("rsa-1"),
    ] {
        let jwt = provider("idp", static_keys(&[&signer]), DEFAULT_ALGORITHMS.to_vec());
        let identity = jwt
            .verify(&signer.sign(&claims(300)))
            .unwrap_or_else(|f| panic!("{:?}: {f:?}", signer.alg));
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.method, AuthMethod::Jwt);
        assert_eq!(identity.claims["role"], "admin");
    }
}

#[test]
fn hs256_verifies_with_its_secret_only() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let signer = TestSigner::hs256(secret);
    let jwt = provider(
        "hs",
        KeySource::Static(Arc::new(KeySet::single(DecodingKey::from_secret(secret)))),
        vec![Algorithm::HS256],
    );
    assert!(jwt.verify(&signer.sign(&claims(300))).is_ok());
    let other = TestSigner::hs256(b"another secret of thirty-two bytes!!");
    assert_eq!(
        jwt.verify(&other.sign(&claims(300))),
        Err(Failure::BadSignature)
    );
}

#[test]
fn every_token_failure_has_its_reason() {
    let signer = TestSigner::es256("k1");
    let jwt = provider("idp", static_keys(&[&signer]), DEFAULT_ALGORITHMS.to_vec());
    let now = now_secs() as i64;

    assert_eq!(
        jwt.verify(&signer.sign(&claims(-120))),
        Err(Failure::Expired)
    );
    // Within the 30 s clock skew: still accepted.
    assert!(jwt.verify(&signer.sign(&claims(-10))).is_ok());
    let mut early = claims(300);
    early["nbf"] = json!(now + 120);
    assert_eq!(jwt.verify(&signer.sign(&early)), Err(Failure::NotYetValid));
    let mut wrong_aud = claims(300);
    wrong_aud["aud"] = json!("billing");
    assert_eq!(
        jwt.verify(&signer.sign(&wrong_aud)),
        Err(Failure::WrongAudience)
    );
    let mut no_aud = claims(300);
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        jwt.verify(&signer.sign(&no_aud)),
        Err(Failure::WrongAudience)
    );
    let mut wrong_iss = claims(300);
    wrong_iss["iss"] = json!("https://evil.test/");
    assert_eq!(
        jwt.verify(&signer.sign(&wrong_iss)),
        Err(Failure::WrongIssuer)
    );
    let mut no_sub = claims(300);
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(jwt.verify(&signer.sign(&no_sub)), Err(Failure::Claims));
    let mut no_exp = claims(300);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(jwt.verify(&signer.sign(&no_exp)), Err(Failure::Claims));

    // Same kid, another key: the signature does not verify.
    let impostor = TestSigner::es256("k1");
    assert_eq!(
        jwt.verify(&impostor.sign(&claims(300))),
        Err(Failure::BadSignature)
    );
    // A tampered payload.
    let token = signer.sign(&claims(300));
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = signer.sign(&json!({"sub": "mallory", "iss": ISS, "aud": AUD, "exp": now + 300}));
    let forged_payload = forged.split('.').nth(1).unwrap().to_owned();
    parts[1] = &forged_payload;
    assert_eq!(jwt.verify(&parts.join(".")), Err(Failure::BadSignature));

    let unknown = TestSigner::es256("k2");
    assert_eq!(
        jwt.verify(&unknown.sign(&claims(300))),
        Err(Failure::UnknownKey)
    );
    // HS256 is not accepted by an asymmetric provider (algorithm confusion).
    let hs = TestSigner::hs256(b"0123456789abcdef0123456789abcdef");
    assert_eq!(jwt.verify(&hs.sign(&claims(300))), Err(Failure::Algorithm));
    // An EC key named by an RS256 token.
    let rsa = provider(
        "idp",
        static_keys(&[&signer]),
        vec![Algorithm::RS256, Algorithm::ES256],
    );
    let rs_token = TestSigner::rs256("k1").sign(&claims(300));
    assert_eq!(rsa.verify(&rs_token), Err(Failure::Algorithm));

    for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."] {
        assert_eq!(jwt.verify(garbage), Err(Failure::Malformed), "{garbage}");
    }
}

#[test]
fn bearer_tokens_are_taken_from_the_configured_header() {
    let signer = TestSigner::es256("k1");
    let jwt = provider("idp", static_keys(&[&signer]), DEFAULT_ALGORITHMS.to_vec());
    let mut headers = HeaderMap::new();
    assert_eq!(jwt.token(&headers), None);
    headers.insert(
        "authorization",
        HeaderValue::from_static("Basic dXNlcjpwYXNz"),
    );
    assert_eq!(
        jwt.token(&headers),
        None,
        "a Basic credential is not a token"
    );
    headers.insert(
        "authorization",
        HeaderValue::from_static("bearer abc.def.ghi"),
    );
    assert_eq!(jwt.token(&headers), Some("abc.def.ghi"));
    headers.insert("authorization", HeaderValue::from_static("Bearer"));
    assert_eq!(jwt.token(&headers), Some(""));
}

fn stage(providers: Vec<Provider>, optional: bool) -> AuthnStage {
    AuthnStage::new(
        providers.into_iter().map(Arc::new).collect(),
        optional,
        None,
        AuthnMetrics::new(),
    )
}

fn api_keys() -> ApiKeyProvider {
    let digest: [u8; 32] = Sha256::digest(b"s3cr3t-key-billing").into();
    let mut attributes = serde_json::Map::new();
    attributes.insert("team".into(), json!("billing"));
    ApiKeyProvider::new(
        "partners".into(),
        HeaderName::from_static("x-api-key"),
        vec![ApiKey {
            name: "billing".into(),
            sha256: digest,
            attributes,
        }],
    )
}

#[test]
fn the_stage_sets_the_identity_or_challenges() {
    let signer = TestSigner::es256("k1");
    let authn = stage(
        vec![
            Provider::Jwt(provider(
                "idp",
                static_keys(&[&signer]),
                DEFAULT_ALGORITHMS.to_vec(),
            )),
            Provider::ApiKeys(api_keys()),
        ],
        false,
    );
    let peer = client("198.51.100.7");

    let (outcome, ctx) = inspect(&authn, &bearer(&signer.sign(&claims(300))), &peer);
    assert!(matches!(outcome, Outcome::Continue));
    assert_eq!(ctx.identity.as_ref().unwrap().subject, "alice");

    let (outcome, ctx) = inspect(&authn, &HeaderMap::new(), &peer);
    let Outcome::Challenge(finding) = outcome else {
        panic!("no credentials must be challenged, got {outcome:?}")
    };
    assert_eq!(finding.rule_id, "authn.missing");
    let challenges: Vec<_> = ctx
        .response_headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        challenges,
        [
            "Bearer realm=\"apiguard\"",
            "ApiKey realm=\"apiguard\", header=\"x-api-key\""
        ]
    );

    let (outcome, ctx) = inspect(&authn, &bearer(&signer.sign(&claims(-300))), &peer);
    assert!(matches!(outcome, Outcome::Challenge(ref f) if f.rule_id == "authn.expired"));
    let challenge = ctx.response_headers[http::header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("expired"), "{challenge}");

    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("s3cr3t-key-billing"));
    let (outcome, ctx) = inspect(&authn, &headers, &peer);
    assert!(matches!(outcome, Outcome::Continue));
    let identity = ctx.identity.unwrap();
    assert_eq!(
        (identity.subject.as_str(), identity.method),
        ("billing", AuthMethod::ApiKey)
    );
    assert_eq!(identity.claims["team"], "billing");

    headers.insert("x-api-key", HeaderValue::from_static("s3cr3t-key-billinG"));
    let (outcome, _) = inspect(&authn, &headers, &peer);
    assert!(matches!(outcome, Outcome::Challenge(ref f) if f.rule_id == "authn.unknown_api_key"));
}

#[test]
fn optional_routes_let_anonymous_requests_through_but_not_bad_credentials() {
    let signer = TestSigner::es256("k1");
    let authn = stage(
        vec![Provider::Jwt(provider(
            "idp",
            static_keys(&[&signer]),
            DEFAULT_ALGORITHMS.to_vec(),
        ))],
        true,
    );
    let peer = client("198.51.100.7");
    let (outcome, ctx) = inspect(&authn, &HeaderMap::new(), &peer);
    assert!(matches!(outcome, Outcome::Continue));
    assert!(ctx.identity.is_none());
    let (outcome, _) = inspect(&authn, &bearer("not-a-token"), &peer);
    assert!(matches!(outcome, Outcome::Challenge(ref f) if f.rule_id == "authn.malformed"));
}

#[test]
fn several_jwt_providers_split_tokens_by_issuer() {
    let first = TestSigner::es256("a");
    let second = TestSigner::eddsa("b");
    let other = JwtProvider::new(JwtSettings {
        name: "partner".into(),
        issuers: vec!["https://partner.test/".into()],
        audiences: vec![AUD.into()],
        algorithms: DEFAULT_ALGORITHMS.to_vec(),
        leeway: Duration::from_secs(30),
        header: http::header::AUTHORIZATION,
        subject_claim: "sub".into(),
        keys: static_keys(&[&second]),
    });
    let authn = stage(
        vec![
            Provider::Jwt(provider(
                "idp",
                static_keys(&[&first]),
                DEFAULT_ALGORITHMS.to_vec(),
            )),
            Provider::Jwt(other),
        ],
        false,
    );
    let peer = client("198.51.100.7");
    let mut partner_claims = claims(300);
    partner_claims["iss"] = json!("https://partner.test/");
    partner_claims["sub"] = json!("bob");
    let (outcome, ctx) = inspect(&authn, &bearer(&second.sign(&partner_claims)), &peer);
    assert!(matches!(outcome, Outcome::Continue), "{outcome:?}");
    assert_eq!(ctx.identity.unwrap().subject, "bob");
    let (_, ctx) = inspect(&authn, &bearer(&first.sign(&claims(300))), &peer);
    assert_eq!(ctx.identity.unwrap().subject, "alice");
    let mut stranger = claims(300);
    stranger["iss"] = json!("https://stranger.test/");
    let (outcome, _) = inspect(&authn, &bearer(&first.sign(&stranger)), &peer);
    assert!(matches!(outcome, Outcome::Challenge(ref f) if f.rule_id == "authn.wrong_issuer"));
}

#[test]
fn client_certificates_are_accepted_by_subject_or_san() {
    let mtls = MtlsProvider {
        name: "internal".into(),
        subjects: vec!["CN=billing,O=Example".into()],
        sans: vec!["URI:spiffe://example.org/ns/prod/*".into()],
    };
    let authn = stage(vec![Provider::Mtls(mtls)], false);
    let mut peer = client("10.0.0.5");
    peer.tls = true;
    peer.client_cert_subject = Some("CN=billing,O=Example".into());
    let (outcome, ctx) = inspect(&authn, &HeaderMap::new(), &peer);
    assert!(matches!(outcome, Outcome::Continue));
    let identity = ctx.identity.unwrap();
    assert_eq!(
        (identity.subject.as_str(), identity.method),
        ("CN=billing,O=Example", AuthMethod::Mtls)
    );

    peer.client_cert_subject = Some("CN=other".into());
    peer.client_cert_sans = vec!["URI:spiffe://example.org/ns/prod/sa/orders".into()];
    let (outcome, ctx) = inspect(&authn, &HeaderMap::new(), &peer);
    assert!(matches!(outcome, Outcome::Continue));
    assert_eq!(
        ctx.identity.unwrap().claims["sans"][0],
        "URI:spiffe://example.org/ns/prod/sa/orders"
    );

    peer.client_cert_sans = vec!["URI:spiffe://example.org/ns/dev/sa/orders".into()];
    let (outcome, _) = inspect(&authn, &HeaderMap::new(), &peer);
    assert!(matches!(outcome, Outcome::Challenge(ref f) if f.rule_id == "authn.certificate"));

    let (outcome, _) = inspect(&authn, &HeaderMap::new(), &client("10.0.0.5"));
    assert!(matches!(outcome, Outcome::Challenge(ref f) if f.rule_id == "authn.missing"));
}

fn identity(subject: &str) -> Identity {
    Identity {
        subject: subject.into(),
        method: AuthMethod::ApiKey,
        claims: serde_json::Map::new(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn continuous_verification_challenges_a_new_country_and_follows_a_new_network() {
    let db = IpDatabase::parse(
        "network,country\n198.51.100.0/24,FR\n203.0.113.0/24,DE\n192.0.2.0/24,FR\n",
    )
    .unwrap();
    let continuous = Continuous::new(AuthnMetrics::new());
    continuous.configure(Some(ContinuousSettings {
        ip_database: Some(Arc::new(db)),
        ..ContinuousSettings::default()
    }));
    let key = identity("billing");
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.7"), 0, 1_000),
        Ok(())
    );
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.8"), 0, 2_000),
        Ok(())
    );
    assert_eq!(
        continuous.check_at(&key, ip("203.0.113.9"), 0, 3_000),
        Err(Failure::NewCountry)
    );
    // A challenge leaves the credential usable from where it was.
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.7"), 0, 4_000),
        Ok(())
    );
    // Same country, other network: allowed by default, and followed.
    assert_eq!(continuous.check_at(&key, ip("192.0.2.1"), 0, 5_000), Ok(()));
    assert_eq!(continuous.check_at(&key, ip("192.0.2.2"), 0, 6_000), Ok(()));
    // Another credential has its own context.
    assert_eq!(
        continuous.check_at(&identity("ops"), ip("203.0.113.9"), 0, 7_000),
        Ok(())
    );
}

#[test]
fn continuous_verification_revokes_on_risk_until_the_revocation_ends() {
    let continuous = Continuous::new(AuthnMetrics::new());
    continuous.configure(Some(ContinuousSettings {
        on_risk: ContextAction::Revoke,
        risk_threshold: 10,
        revoke_for: Duration::from_secs(60),
        ..ContinuousSettings::default()
    }));
    let key = identity("billing");
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.7"), 0, 1_000),
        Ok(())
    );
    continuous.observe_at(&key, 5, 1_100);
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.7"), 0, 1_200),
        Ok(())
    );
    continuous.observe_at(&key, 8, 1_300);
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.7"), 0, 1_400),
        Err(Failure::Risk)
    );
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.7"), 0, 30_000),
        Err(Failure::Revoked)
    );
    // After revoke_for, and with the risk decayed (half-life 10 min, so check much later).
    let later = 1_400 + 3 * 3_600_000;
    assert_eq!(
        continuous.check_at(&key, ip("198.51.100.7"), 0, later),
        Ok(())
    );
}

#[test]
fn ip_databases_reject_what_they_cannot_use() {
    let db = IpDatabase::parse("# comment\n2001:db8::/32, de\n10.0.0.1,US\n").unwrap();
    assert_eq!(db.country(ip("2001:db8::1")), Some(*b"DE"));
    assert_eq!(db.country(ip("10.0.0.1")), Some(*b"US"));
    assert_eq!(db.country(ip("::ffff:10.0.0.1")), Some(*b"US"));
    assert_eq!(db.country(ip("10.0.0.2")), None);
    assert!(
        IpDatabase::parse("10.0.0.0/8,FR\n10.1.0.0/16,DE\n")
            .unwrap_err()
            .contains("overlaps")
    );
    assert!(
        IpDatabase::parse("10.0.0.1/8,FR\n")
            .unwrap_err()
            .contains("line 1")
    );
    assert!(
        IpDatabase::parse("10.0.0.0/8,France\n")
            .unwrap_err()
            .contains("two-letter")
    );
    assert!(IpDatabase::parse("nonsense\n").is_err());
}

#[test]
fn sha256_hex_is_parsed_strictly() {
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    assert_eq!(parse_sha256_hex(hex).unwrap()[0], 0x9f);
    assert_eq!(parse_sha256_hex(&hex.to_uppercase()).unwrap()[31], 0x08);
    assert!(parse_sha256_hex(&hex[1..]).is_err());
    assert!(parse_sha256_hex(&"é".repeat(40)).is_err());
}

#[test]
fn jwks_documents_skip_unusable_keys() {
    let good = TestSigner::es256("good");
    let mut document = jwks(&[&good]);
    let keys = document["keys"].as_array_mut().unwrap();
    keys.push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}));
    keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}));
    keys.push(json!({"kty": "weird"}));
    let (set, skipped) = KeySet::from_jwks(document.to_string().as_bytes()).unwrap();
    assert_eq!((set.keys.len(), skipped), (1, 3));
    assert!(matches!(
        set.find(Some("good"), Algorithm::ES256),
        Lookup::Found(_)
    ));
    assert!(matches!(
        set.find(Some("sym"), Algorithm::HS256),
        Lookup::NotFound
    ));
    assert!(KeySet::from_jwks(b"[]").is_err());
}
