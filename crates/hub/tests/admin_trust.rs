//! The operator sees each participant's trust (score, the weight its reports carry,
//! corroborations, contradictions) through the admin API, and it moves as the trust model
//! says: up when an organisation's report is corroborated by another's, down when a
//! promotion it contributed to is withdrawn as a false positive. Admin-only, like the rest
//! of /admin.

mod common;

use std::time::Duration;

use apiguard_hub::Hub;
use serde_json::{Value, json};

async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> (u16, Value) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admins_see_trust_move_with_corroboration_and_contradiction() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&format!("{}trust:\n  k: 2\n", common::admin_line()));
    settings.store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(settings).await.unwrap();
    let base = format!("http://{}", hub.local_addr());
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for (name, organisation) in [("alpha", "Alpha"), ("beta", "Beta"), ("gamma", "Gamma")] {
        let (id, key) = common::register(
            &client,
            &base,
            json!({"name": name, "organisation": organisation}),
        )
        .await;
        ids.push(id);
        keys.push(key);
    }
    let trust_of = |id: &str| format!("{base}/admin/participants/{id}/trust");
    let admin = Some(common::ADMIN_TOKEN);

    let (status, fresh) = get(&client, trust_of(&ids[0]), admin).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["name"], "alpha");
    assert_eq!(
        fresh["trust"]["score"], 0.5,
        "a new participant: trust.initial"
    );
    assert_eq!(fresh["trust"]["weight"], 1.0);
    assert_eq!(fresh["trust"]["corroborations"], 0);
    assert_eq!(fresh["trust"]["contradictions"], 0);

    // Two organisations report one address: promoted, both corroborated.
    for key in &keys[..2] {
        let response = client
            .post(format!("{base}/v1/reports"))
            .bearer_auth(key)
            .json(&json!({"attack": "sqli", "source_ip": "203.0.113.50"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let received = common::collect_feed(&client, &base, &keys[2], 1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1, "gamma receives the promotion");
    let (_, corroborated) = get(&client, trust_of(&ids[0]), admin).await;
    assert_eq!(corroborated["trust"]["corroborations"], 1, "{corroborated}");
    let raised = corroborated["trust"]["score"].as_f64().unwrap();
    assert!(raised > 0.5, "{corroborated}");

    // The operator withdraws it as a false positive: its reporters are contradicted.
    let response = client
        .post(format!("{base}/admin/withdrawals"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"indicator": "203.0.113.50"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, contradicted) = get(&client, trust_of(&ids[1]), admin).await;
    assert_eq!(contradicted["trust"]["corroborations"], 1, "{contradicted}");
    assert_eq!(contradicted["trust"]["contradictions"], 1, "{contradicted}");
    assert!(contradicted["trust"]["score"].as_f64().unwrap() < raised);

    // The listing carries the same, for everyone.
    let (status, listing) = get(&client, format!("{base}/admin/participants"), admin).await;
    assert_eq!(status, 200);
    let by_name = |name: &str| -> Value {
        listing["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["trust"]
            .clone()
    };
    assert_eq!(by_name("beta"), contradicted["trust"]);
    assert_eq!(by_name("gamma")["corroborations"], 0);
    assert_eq!(by_name("gamma")["score"], 0.5);

    // Admin only; an unknown participant is a 404.
    let (status, _) = get(&client, trust_of(&ids[0]), None).await;
    assert_eq!(status, 401);
    let (status, _) = get(&client, trust_of(&ids[0]), Some(keys[0].as_str())).await;
    assert_eq!(status, 401, "a participant's key is not the admin token");
    let (status, missing) = get(&client, trust_of("no-such-participant"), admin).await;
    assert_eq!(status, 404, "{missing}");
    common::stop_and_clean(hub).await;
}
