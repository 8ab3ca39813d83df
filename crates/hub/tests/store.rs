//! The participant registry and report store behave the same on SQLite and PostgreSQL.

mod common;

use apiguard_hub::auth::{generate_api_key, hash_api_key};
use apiguard_hub::store::StoredReport;
use apiguard_hub::{HubError, NewParticipant, Store, Subscription};
use apiguard_model::threat::{AttackClass, ThreatSeverity};
use uuid::Uuid;

fn new_participant(name: &str) -> NewParticipant {
    NewParticipant {
        name: name.to_owned(),
        organisation: format!("{name} Holdings Ltd"),
        own_networks: vec!["198.51.100.0/24".parse().unwrap()],
        own_hosts: vec![format!("api.{name}.test")],
        subscription: Subscription {
            classes: vec![AttackClass::Sqli],
            min_severity: ThreatSeverity::High,
            address_kinds: vec![],
        },
    }
}

fn report(participant: &str, ip: &str, received_at_ms: i64) -> StoredReport {
    StoredReport {
        id: Uuid::now_v7(),
        participant_id: participant.to_owned(),
        ip: Some(ip.to_owned()),
        class: "sqli".into(),
        severity: "high".into(),
        received_at_ms,
        valid_until_ms: received_at_ms + 3_600_000,
        body: "{}".into(),
    }
}

/// Everything a user of the registry and store relies on, on one backend.
async fn exercise(store: &Store) {
    // Registration round-trips every field; names are unique.
    let alpha = store
        .add_participant(&new_participant("alpha"))
        .await
        .unwrap();
    let beta = store
        .add_participant(&new_participant("beta"))
        .await
        .unwrap();
    assert_eq!(store.participant(&alpha.id).await.unwrap().unwrap(), alpha);
    let err = store
        .add_participant(&new_participant("alpha"))
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::Conflict(_)), "{err}");
    let err = store
        .add_participant(&new_participant("bad name with spaces"))
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::Invalid(_)), "{err}");
    assert_eq!(store.participants().await.unwrap().len(), 2);

    // Keys: found by hash only; an unknown key finds nobody.
    let key = generate_api_key().unwrap();
    store
        .add_api_key(&alpha.id, &hash_api_key(&key))
        .await
        .unwrap();
    let found = store
        .participant_by_key_hash(&hash_api_key(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, alpha.id);
    assert!(
        store
            .participant_by_key_hash(&hash_api_key(&generate_api_key().unwrap()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.participant_by_key_hash(&key).await.unwrap().is_none());

    // Reports: de-duplicated by id, published flag, corroboration by distinct participants.
    let now = chrono::Utc::now().timestamp_millis();
    let first = report(&alpha.id, "203.0.113.7", now);
    assert!(store.insert_report(&first).await.unwrap());
    assert!(
        !store.insert_report(&first).await.unwrap(),
        "a duplicate id is stored once"
    );
    assert_eq!(
        store.report_state(first.id).await.unwrap(),
        Some(("{}".to_owned(), false, alpha.id.clone()))
    );
    store.mark_published(first.id).await.unwrap();
    assert!(store.report_state(first.id).await.unwrap().unwrap().1);
    assert!(store.report_state(Uuid::now_v7()).await.unwrap().is_none());

    assert!(
        store
            .insert_report(&report(&alpha.id, "203.0.113.7", now))
            .await
            .unwrap()
    );
    assert!(
        store
            .insert_report(&report(&beta.id, "203.0.113.7", now))
            .await
            .unwrap()
    );
    assert!(
        store
            .insert_report(&report(&beta.id, "203.0.113.7", now - 10 * 86_400_000))
            .await
            .unwrap()
    );
    // From gamma's point of view two other organisations reported it recently (alpha
    // twice counts once); beta's old report is outside the window for `since`.
    assert_eq!(
        store
            .other_reporters("203.0.113.7", now - 1000, "gamma")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .other_reporters("203.0.113.7", now - 1000, &alpha.id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .other_reporters("192.0.2.1", 0, "gamma")
            .await
            .unwrap(),
        0
    );

    let page = store.reports_after(0, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = store.reports_after(page[1].0, 100).await.unwrap();
    assert_eq!(rest.len(), 2);
}

#[tokio::test]
async fn registry_and_reports_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = Store::connect(&url).await.unwrap();
    exercise(&store).await;
    store.close().await;
    // The data survives reopening the file.
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.participants().await.unwrap().len(), 2);
}

#[tokio::test]
async fn registry_and_reports_on_postgres() {
    if !apiguard_testkit::require_service("PostgreSQL", common::POSTGRES) {
        return;
    }
    let (store, schema) = common::postgres_store().await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn a_bad_store_url_is_refused_with_a_reason() {
    let err = Store::connect("mysql://x").await.unwrap_err();
    assert!(err.to_string().contains("sqlite://"), "{err}");
}
