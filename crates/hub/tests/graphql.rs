//! GraphQL ingest (`report`, `reportBatch`) has the same semantics as REST, and the `feed`
//! query pages through the stored reports the caller's subscription accepts.

mod common;

use std::time::Duration;

use apiguard_hub::{Hub, NewParticipant, Settings, Subscription};
use apiguard_model::threat::AttackClass;
use serde_json::{Value, json};

const REPORT: &str = "mutation($input: ReportInput!) { report(input: $input) { id status error } }";
const FEED: &str = "query($after: Int!) { feed(after: $after, limit: 50) { cursor reports } }";

async fn graphql(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    query: &str,
    variables: Value,
) -> Value {
    let response = client
        .post(format!("{base}/graphql"))
        .bearer_auth(key)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn start(settings: Settings, dir: &tempfile::TempDir) -> (Hub, String, [String; 3]) {
    let mut settings = settings;
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let mut keys = Vec::new();
    for (name, subscription) in [
        ("zeta", Subscription::default()),
        ("eta", Subscription::default()),
        (
            "theta",
            Subscription {
                classes: vec![AttackClass::Xss],
                ..Subscription::default()
            },
        ),
    ] {
        let (_, key) = hub
            .register(NewParticipant {
                name: name.into(),
                organisation: format!("{name} corp"),
                subscription,
                ..NewParticipant::default()
            })
            .await
            .unwrap();
        keys.push(key);
    }
    let base = format!("http://{}", hub.local_addr());
    (hub, base, keys.try_into().unwrap())
}

async fn mutation_and_feed_query(settings: Settings) {
    let dir = tempfile::tempdir().unwrap();
    let (hub, base, [zeta, eta, theta]) = start(settings, &dir).await;
    let client = reqwest::Client::new();
    let input = json!({
        "attack": "credential_stuffing",
        "severity": "HIGH",
        "action": "RATE_LIMITED",
        "sourceIp": "2001:db8:5:6:7:8:9:a",
        "method": "POST",
        "path": "/login",
        "count": 250,
        "description": "zeta corp login page"
    });
    let answer = graphql(&client, &base, &zeta, REPORT, json!({"input": input})).await;
    assert!(answer["errors"].is_null(), "{answer}");
    assert_eq!(answer["data"]["report"]["status"], "accepted");
    let id = answer["data"]["report"]["id"].as_str().unwrap().to_owned();

    // Live: eta's queue. Stored: the feed query, once a worker has stored it.
    let live = common::collect_feed(&client, &base, &eta, 1, Duration::from_secs(10)).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["id"], id.as_str());
    let mut page = Value::Null;
    for _ in 0..50 {
        page = graphql(&client, &base, &eta, FEED, json!({"after": 0})).await;
        if !page["data"]["feed"]["reports"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let feed = &page["data"]["feed"];
    let reports = feed["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{page}");
    let report = &reports[0];
    assert_eq!(report["id"], id.as_str());
    assert_eq!(report["indicators"]["ip"], "2001:db8:5:6::/64");
    assert_eq!(report["action"], "rate_limited");
    assert_eq!(report["category"]["owasp"], "API2:2023");
    assert_eq!(report["count"], 250);
    assert!(!report.to_string().contains("zeta"));
    let cursor = feed["cursor"].as_i64().unwrap();
    let next = graphql(&client, &base, &eta, FEED, json!({"after": cursor})).await;
    assert!(
        next["data"]["feed"]["reports"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{next}"
    );
    assert_eq!(next["data"]["feed"]["cursor"], cursor);

    // theta subscribed to XSS only: the stored feed filters for it too.
    let filtered = graphql(&client, &base, &theta, FEED, json!({"after": 0})).await;
    assert!(
        filtered["data"]["feed"]["reports"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{filtered}"
    );
    common::stop_and_clean(hub).await;
}

#[tokio::test]
async fn graphql_reports_reach_the_feeds_through_rabbitmq() {
    if !apiguard_testkit::require_service("RabbitMQ", common::RABBITMQ) {
        return;
    }
    mutation_and_feed_query(common::rabbit_settings("")).await;
}

#[tokio::test]
async fn graphql_reports_reach_the_feeds_in_embedded_mode() {
    mutation_and_feed_query(common::settings("")).await;
}

#[tokio::test]
async fn graphql_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, base, [zeta, ..]) = start(common::settings(""), &dir).await;
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": FEED, "variables": {"after": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let answer = graphql(
        &client,
        &base,
        &zeta,
        REPORT,
        json!({"input": {"attack": "sqli"}}),
    )
    .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{answer}"
    );
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("indicator"),
        "{answer}"
    );

    let batch = "mutation($inputs: [ReportInput!]!) { reportBatch(inputs: $inputs) { id status } }";
    let inputs = json!([
        {"attack": "sqli", "sourceIp": "192.0.2.1"},
        {"attack": "sqli", "sourceIp": "192.0.2.2", "confidence": 500}
    ]);
    let answer = graphql(&client, &base, &zeta, batch, json!({"inputs": inputs})).await;
    let message = answer["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("inputs[1]") && message.contains("confidence"),
        "{answer}"
    );

    let answer = graphql(
        &client,
        &base,
        &zeta,
        "{ feed(limit: 100000) { cursor } }",
        json!({}),
    )
    .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{answer}"
    );
    common::stop_and_clean(hub).await;
}

/// Reports `count` addresses over GraphQL and waits until `reader` has them all in its feed;
/// answers the cursor after them.
async fn report_and_read(
    client: &reqwest::Client,
    base: &str,
    [reporter, reader]: [&str; 2],
    first_octet: u8,
    count: u8,
) -> i64 {
    for n in 0..count {
        let input = json!({"attack": "sqli", "sourceIp": format!("203.0.{first_octet}.{}", n + 1)});
        let answer = graphql(client, base, reporter, REPORT, json!({ "input": input })).await;
        assert_eq!(answer["data"]["report"]["status"], "accepted", "{answer}");
    }
    let mut seen = 0;
    let mut cursor = 0;
    for _ in 0..100 {
        let answer = graphql(client, base, reader, FEED, json!({ "after": cursor })).await;
        seen += answer["data"]["feed"]["reports"].as_array().unwrap().len();
        cursor = answer["data"]["feed"]["cursor"].as_i64().unwrap();
        if seen >= usize::from(count) {
            return cursor;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("only {seen} of {count} reports reached the feed");
}

/// A cursor the log cannot continue from is refused clearly, never silently restarted or
/// stuck: one from before what the log keeps (pruned), and one past its end (another or a
/// reset store). 0 keeps meaning "from the oldest item kept".
#[tokio::test]
async fn graphql_feed_refuses_pruned_and_unknown_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, base, [zeta, eta, _]) = start(common::settings(""), &dir).await;
    let client = reqwest::Client::new();
    let old = report_and_read(&client, &base, [&zeta, &eta], 1, 3).await;
    assert!(old > 0);

    let answer = graphql(&client, &base, &eta, FEED, json!({ "after": old + 1000 })).await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "FEED_CURSOR_UNKNOWN",
        "{answer}"
    );
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("after: 0"),
        "the error says how to go on: {answer}"
    );

    // Everything so far passes the retention (pruned as the sweep would), then more comes.
    let pruned = hub
        .state()
        .pipeline
        .store
        .prune_feed(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    report_and_read(&client, &base, [&zeta, &eta], 2, 2).await;

    let answer = graphql(&client, &base, &eta, FEED, json!({ "after": 1 })).await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "FEED_CURSOR_EXPIRED",
        "{answer}"
    );
    let oldest = answer["errors"][0]["extensions"]["oldest"]
        .as_i64()
        .unwrap();
    assert_eq!(oldest, old, "continue from the last item pruned");
    // The cursor right after the pruned part, and 0, both go on with what is kept.
    for after in [oldest, 0] {
        let answer = graphql(&client, &base, &eta, FEED, json!({ "after": after })).await;
        let ips: Vec<&str> = answer["data"]["feed"]["reports"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|r| r["indicators"]["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips, vec!["203.0.2.1", "203.0.2.2"], "after {after}");
    }
    // A consumer that kept its cursor up to the pruned part loses nothing: it goes on.
    let answer = graphql(&client, &base, &eta, FEED, json!({ "after": old })).await;
    assert!(answer["errors"].is_null(), "{answer}");
    common::stop_and_clean(hub).await;
}
