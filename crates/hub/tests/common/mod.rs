//! Helpers shared by the hub's integration tests: settings, a PostgreSQL schema of the test's
//! own, and RabbitMQ settings under a prefix of the test's own.

#![allow(dead_code)]

use std::str::FromStr;

use apiguard_hub::{HubConfig, Settings, Store};
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

pub const RABBITMQ: &str = "127.0.0.1:5672";
pub const POSTGRES: &str = "127.0.0.1:5432";

pub fn postgres_url() -> String {
    std::env::var("APIGUARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("APIGUARD_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Settings from YAML lines added to a minimal config. Tests of delivery (not of the trust
/// model) run with `trust.k: 1`, set here explicitly: one reporter's report is published.
/// Give a `trust:` section in `extra` to choose otherwise.
///
/// The store is an in-memory SQLite database unless `extra` names one: the config's default
/// (`sqlite://apiguard-hub.db`) is relative to the working directory, which for a test is
/// the crate's source folder. Tests that store much set `settings.store` to a file in a
/// temporary directory of their own.
pub fn settings(extra: &str) -> Settings {
    let trust = if extra.contains("trust:") {
        ""
    } else {
        "trust:\n  k: 1\n"
    };
    let store = if extra.contains("store:") {
        ""
    } else {
        "store: \"sqlite::memory:\"\n"
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nsecret: test-secret-0123456789abcdef0123456789\n{store}{extra}{trust}"
    );
    HubConfig::parse(&yaml).unwrap().settings().unwrap()
}

/// Settings on the real RabbitMQ with a unique prefix.
pub fn rabbit_settings(extra: &str) -> Settings {
    let prefix = format!("apiguard-test.{}", Uuid::now_v7().simple());
    settings(&format!(
        "broker:\n  url: {}\n  prefix: {prefix}\n  timeout: 3s\n{extra}",
        amqp_url()
    ))
}

/// A PostgreSQL store in a schema of its own, dropped by [`PgSchema::drop`].
pub struct PgSchema {
    pub name: String,
}

pub async fn postgres_store() -> (Store, PgSchema) {
    let name = format!("hub_test_{}", Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(&postgres_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let options = PgConnectOptions::from_str(&postgres_url())
        .unwrap()
        .options([("search_path", name.as_str())]);
    let store = Store::connect_postgres(options).await.unwrap();
    (store, PgSchema { name })
}

impl PgSchema {
    pub async fn drop(self) {
        let admin = sqlx::PgPool::connect(&postgres_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    }
}

pub const ADMIN_TOKEN: &str = "admin-token-for-the-hub-tests";

/// The config line that turns the admin API on with [`ADMIN_TOKEN`].
pub fn admin_line() -> String {
    use sha2::Digest;
    format!(
        "admin_token_sha256: {}\n",
        apiguard_hub::auth::hex(&sha2::Sha256::digest(ADMIN_TOKEN.as_bytes()))
    )
}

/// Registers a participant through the admin API; answers (id, API key).
pub async fn register(
    client: &reqwest::Client,
    base: &str,
    body: serde_json::Value,
) -> (String, String) {
    let response = client
        .post(format!("{base}/admin/participants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let answer: serde_json::Value = response.json().await.unwrap();
    (
        answer["id"].as_str().unwrap().to_owned(),
        answer["api_key"].as_str().unwrap().to_owned(),
    )
}

/// Polls a participant's feed until `want` reports arrived or `within` passed.
pub async fn collect_feed(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    want: usize,
    within: std::time::Duration,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < want && std::time::Instant::now() < deadline {
        let response = client
            .get(format!("{base}/v1/feed?max=100&wait_ms=500"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: serde_json::Value = response.json().await.unwrap();
        out.extend(answer["reports"].as_array().unwrap().iter().cloned());
    }
    out
}

/// Stops a hub and, on RabbitMQ, deletes the queues and exchange it declared.
pub async fn stop_and_clean(hub: apiguard_hub::Hub) {
    let bus = hub.state().bus.clone();
    hub.shutdown().await;
    if let apiguard_hub::bus::Bus::Rabbit(bus) = bus {
        bus.delete_topology().await.unwrap();
    }
}

/// A hub on a SQLite file in `dir`, with participants registered (name, organisation):
/// answers the hub, its base URL, a client and each participant's API key, in order.
pub async fn start_with(
    mut settings: Settings,
    dir: &tempfile::TempDir,
    participants: &[(&str, &str)],
) -> (apiguard_hub::Hub, String, reqwest::Client, Vec<String>) {
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = apiguard_hub::Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let client = reqwest::Client::new();
    let mut keys = Vec::new();
    for (name, organisation) in participants {
        let body = serde_json::json!({"name": name, "organisation": organisation});
        keys.push(register(&client, &base, body).await.1);
    }
    (hub, base, client, keys)
}
