//! A worker's batch through the real pipeline and store (SQLite, and PostgreSQL when it
//! runs): one transaction for many reports must mean the same as processing them one by
//! one: each report stored once, a copy within the batch or a redelivery of a finished one
//! not published again, a poison message dead-lettered alone, one promotion per indicator,
//! and a batch cut short after its commit finished by its redelivery.

mod common;

use std::sync::Arc;

use apiguard_hub::pipeline::{BatchOutcome, Envelope, Pipeline};
use apiguard_hub::{NewParticipant, Store};
use apiguard_model::feed::FeedItem;
use serde_json::json;
use uuid::Uuid;

fn envelope(participant: &str, ip: &str) -> Envelope {
    Envelope {
        v: 1,
        id: Uuid::now_v7(),
        participant: participant.to_owned(),
        received_at: chrono::Utc::now(),
        protocol: "rest".into(),
        report: serde_json::from_value(json!({"attack": "sqli", "source_ip": ip})).unwrap(),
    }
}

fn promoted_ips(items: &[apiguard_hub::feed::FeedRow]) -> Vec<String> {
    items
        .iter()
        .map(|row| match FeedItem::from_json(&row.body).unwrap() {
            FeedItem::Report(report) => report.indicators.ip.unwrap().to_string(),
            FeedItem::Withdrawal(w) => panic!("unexpected withdrawal {w:?}"),
        })
        .collect()
}

async fn a_batch_means_the_same_as_one_report_at_a_time(store: Store) {
    // k = 1: every report of a new indicator promotes it.
    let pipeline = Arc::new(Pipeline::new(Arc::new(common::settings("")), store));
    let alpha = pipeline
        .store
        .add_participant(&NewParticipant {
            name: "alpha".into(),
            organisation: "Alpha".into(),
            ..NewParticipant::default()
        })
        .await
        .unwrap();
    let first = envelope(&alpha.id, "203.0.113.1");
    let same_indicator = envelope(&alpha.id, "203.0.113.1");
    let other = envelope(&alpha.id, "203.0.113.2");
    let orphan = envelope("nobody", "203.0.113.3");
    let messages = [
        first.to_bytes(),
        first.to_bytes(),
        b"\xff not an envelope".to_vec(),
        same_indicator.to_bytes(),
        other.to_bytes(),
        orphan.to_bytes(),
    ];
    let views: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let mut batch = pipeline.process_batch(&views).await;
    assert_eq!(batch.outcomes[0], BatchOutcome::Done);
    assert_eq!(
        batch.outcomes[1],
        BatchOutcome::Duplicate,
        "a copy within the batch"
    );
    assert!(
        matches!(&batch.outcomes[2], BatchOutcome::Poison(r) if r.contains("unreadable envelope")),
        "{:?}",
        batch.outcomes[2]
    );
    assert_eq!(batch.outcomes[3], BatchOutcome::Done);
    assert_eq!(batch.outcomes[4], BatchOutcome::Done);
    assert!(
        matches!(&batch.outcomes[5], BatchOutcome::Poison(r) if r.contains("participant is unknown")),
        "{:?}",
        batch.outcomes[5]
    );
    assert_eq!(
        promoted_ips(&batch.items),
        vec!["203.0.113.1", "203.0.113.2"],
        "one promotion per indicator, in the order the batch brought them"
    );
    assert_eq!(batch.reports.len(), 3);
    pipeline.batch_published(&mut batch).await.unwrap();

    // A redelivery of finished reports publishes nothing again.
    let again = [first.to_bytes(), other.to_bytes()];
    let views: Vec<&[u8]> = again.iter().map(Vec::as_slice).collect();
    let redelivered = pipeline.process_batch(&views).await;
    assert_eq!(
        redelivered.outcomes,
        vec![BatchOutcome::Duplicate, BatchOutcome::Duplicate]
    );
    assert!(redelivered.items.is_empty());

    // A batch committed but never published (the worker died before the broker confirmed
    // its items): its redelivery publishes the same items, once.
    let late = envelope(&alpha.id, "203.0.113.9");
    let messages = [late.to_bytes()];
    let views: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let cut_short = pipeline.process_batch(&views).await;
    let lost_items = cut_short.items.clone();
    assert_eq!(promoted_ips(&lost_items), vec!["203.0.113.9"]);
    drop(cut_short);
    let mut resumed = pipeline.process_batch(&views).await;
    assert_eq!(resumed.outcomes, vec![BatchOutcome::Done]);
    assert_eq!(
        resumed.items, lost_items,
        "the same feed item, not a second one"
    );
    pipeline.batch_published(&mut resumed).await.unwrap();
    let once_more = pipeline.process_batch(&views).await;
    assert_eq!(once_more.outcomes, vec![BatchOutcome::Duplicate]);
    assert!(once_more.items.is_empty());
    assert_eq!(
        pipeline.store.feed_bounds().await.unwrap().end,
        lost_items[0].seq,
        "three promotions in the log, nothing more"
    );
}

#[tokio::test]
async fn a_batch_means_the_same_as_one_report_at_a_time_on_sqlite() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    a_batch_means_the_same_as_one_report_at_a_time(store).await;
}

#[tokio::test]
async fn a_batch_means_the_same_as_one_report_at_a_time_on_postgres() {
    if !apiguard_testkit::require_service("PostgreSQL", common::POSTGRES) {
        return;
    }
    let (store, schema) = common::postgres_store().await;
    a_batch_means_the_same_as_one_report_at_a_time(store.clone()).await;
    store.close().await;
    schema.drop().await;
}

/// k = 2 within one batch: two organisations' reports of an address promote it once and
/// credit both; one organisation's alone does not; an address already published only gets
/// its new report linked.
async fn a_batch_applies_the_trust_model(store: Store) {
    let settings = common::settings("trust:\n  k: 2\n");
    let pipeline = Arc::new(Pipeline::new(Arc::new(settings), store));
    let mut ids = Vec::new();
    for (name, organisation) in [("alpha", "Alpha"), ("beta", "Beta"), ("alpha-2", "alpha")] {
        let participant = pipeline
            .store
            .add_participant(&NewParticipant {
                name: name.into(),
                organisation: organisation.into(),
                ..NewParticipant::default()
            })
            .await
            .unwrap();
        ids.push(participant.id);
    }
    let (alpha, beta, alpha_two) = (&ids[0], &ids[1], &ids[2]);
    let messages = [
        envelope(alpha, "203.0.113.10").to_bytes(),
        envelope(alpha, "203.0.113.20").to_bytes(),
        // Another participant of the same organisation: still one organisation.
        envelope(alpha_two, "203.0.113.20").to_bytes(),
        envelope(beta, "203.0.113.10").to_bytes(),
    ];
    let views: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let mut batch = pipeline.process_batch(&views).await;
    assert!(batch.outcomes.iter().all(|o| *o == BatchOutcome::Done));
    assert_eq!(promoted_ips(&batch.items), vec!["203.0.113.10"]);
    let origins = &batch.items[0].origins;
    assert!(origins.contains(alpha) && origins.contains(beta) && origins.len() == 2);
    pipeline.batch_published(&mut batch).await.unwrap();
    for participant in [alpha, beta] {
        let record = pipeline.store.trust_record(participant).await.unwrap();
        assert_eq!(
            record.corroborated, 1,
            "corroborated by the other organisation"
        );
    }
    assert_eq!(
        pipeline
            .store
            .trust_record(alpha_two)
            .await
            .unwrap()
            .corroborated,
        0
    );

    // The published address again, and the second organisation for the other one.
    let messages = [
        envelope(alpha_two, "203.0.113.10").to_bytes(),
        envelope(beta, "203.0.113.20").to_bytes(),
    ];
    let views: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let mut batch = pipeline.process_batch(&views).await;
    assert_eq!(
        promoted_ips(&batch.items),
        vec!["203.0.113.20"],
        "203.0.113.10 is published already: not again"
    );
    pipeline.batch_published(&mut batch).await.unwrap();
    let active = pipeline.store.active_promotions().await.unwrap();
    assert_eq!(active.len(), 2);
    assert_eq!(
        pipeline
            .store
            .trust_record(alpha_two)
            .await
            .unwrap()
            .corroborated,
        2,
        "linked to the published address, and part of the new promotion"
    );
}

#[tokio::test]
async fn a_batch_applies_the_trust_model_on_sqlite() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    a_batch_applies_the_trust_model(store).await;
}

#[tokio::test]
async fn a_batch_applies_the_trust_model_on_postgres() {
    if !apiguard_testkit::require_service("PostgreSQL", common::POSTGRES) {
        return;
    }
    let (store, schema) = common::postgres_store().await;
    a_batch_applies_the_trust_model(store.clone()).await;
    store.close().await;
    schema.drop().await;
}
