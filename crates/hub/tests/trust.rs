//! The trust model on the real stores (SQLite and PostgreSQL): k distinct organisations
//! promote an indicator, keys of one organisation count once, nothing is visible before the
//! promotion, allowlisted indicators are never published and count against their reporters,
//! corroboration and contradiction move trust (persisted), expiry publishes a withdrawal
//! (after a renewal when fresh reports keep the indicator up), and an indicator withdrawn as
//! a false positive is not published again within the window. The pipeline runs on a
//! simulated clock.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use apiguard_hub::feed::FeedRow;
use apiguard_hub::pipeline::{Envelope, Outcome, Pipeline};
use apiguard_hub::{NewParticipant, Store};
use apiguard_model::feed::{FeedItem, WithdrawalReason};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

struct Hub {
    pipeline: Pipeline,
    ids: HashMap<&'static str, String>,
}

impl Hub {
    async fn new(store: Store) -> Hub {
        let settings = common::settings("trust:\n  k: 3\n  window: 24h\n");
        let pipeline = Pipeline::new(Arc::new(settings), store);
        let mut ids = HashMap::new();
        for (name, organisation) in [
            ("alpha", "Alpha Bank"),
            ("alpha2", "alpha  bank"),
            ("beta", "Beta Shop"),
            ("gamma", "Gamma"),
            ("epsilon", "Epsilon"),
        ] {
            let participant = pipeline
                .store
                .add_participant(&NewParticipant {
                    name: name.into(),
                    organisation: organisation.into(),
                    ..NewParticipant::default()
                })
                .await
                .unwrap();
            ids.insert(name, participant.id.clone());
            pipeline.remember(participant);
        }
        Hub { pipeline, ids }
    }

    /// `who` reports `ip` at `at`, valid for `ttl`; the feed items this published.
    async fn report(&self, who: &str, ip: &str, at: DateTime<Utc>, ttl: i64) -> Vec<FeedRow> {
        let envelope = Envelope {
            v: 1,
            id: Uuid::now_v7(),
            participant: self.ids[who].clone(),
            received_at: at,
            protocol: "rest".into(),
            report: serde_json::from_value(json!({
                "attack": "sqli", "severity": "high", "source_ip": ip, "ttl_seconds": ttl
            }))
            .unwrap(),
        };
        match self
            .pipeline
            .process_at(&envelope.to_bytes(), at)
            .await
            .unwrap()
        {
            Outcome::Publish {
                report_id, items, ..
            } => {
                assert_eq!(report_id, envelope.id);
                self.pipeline.published(report_id, &items).await.unwrap();
                items
            }
            Outcome::Duplicate => panic!("a new report is no duplicate"),
        }
    }

    async fn trust(&self, who: &str) -> apiguard_hub::feed::TrustRecord {
        self.pipeline
            .store
            .trust_record(&self.ids[who])
            .await
            .unwrap()
    }
}

fn item(row: &FeedRow) -> FeedItem {
    FeedItem::from_json(&row.body).unwrap()
}

async fn exercise(store: Store) -> Store {
    let hub = Hub::new(store).await;
    let t0 = Utc::now();
    let store = &hub.pipeline.store;

    // Two keys of one organisation and one other: two organisations, nothing published,
    // nothing visible.
    for who in ["alpha", "alpha2", "beta"] {
        assert!(hub.report(who, "203.0.113.50", t0, 3600).await.is_empty());
    }
    assert!(store.feed_after(0, 100).await.unwrap().is_empty());
    // The third organisation completes the quorum: one promotion, under the id of the
    // report that completed it, withheld from all its reporters.
    let promoted = hub.report("gamma", "203.0.113.50", t0, 3600).await;
    assert_eq!(promoted.len(), 1, "{promoted:?}");
    let FeedItem::Report(report) = item(&promoted[0]) else {
        panic!("a promotion is a report");
    };
    assert_eq!(report.indicators.ip.unwrap().to_string(), "203.0.113.50");
    assert_eq!(report.trust.corroborations, 3);
    assert_eq!(report.trust.score, 50);
    for who in ["alpha", "alpha2", "beta", "gamma"] {
        assert!(promoted[0].is_from(&hub.ids[who]), "{who} is an origin");
        assert_eq!(hub.trust(who).await.corroborated, 1, "{who}");
    }
    assert!(!promoted[0].is_from(&hub.ids["epsilon"]));
    // A later report of the promoted indicator adds to it (and earns its reporter a
    // corroboration) without publishing it again.
    assert!(
        hub.report("epsilon", "203.0.113.50", t0, 3600)
            .await
            .is_empty()
    );
    assert_eq!(hub.trust("epsilon").await.corroborated, 1);
    assert_eq!(store.feed_after(0, 100).await.unwrap().len(), 1);

    // Allowlisted: never published; each reporter contradicted once per window.
    for who in ["alpha", "beta", "gamma", "epsilon", "alpha"] {
        assert!(hub.report(who, "1.1.1.1", t0, 3600).await.is_empty());
    }
    assert!(hub.report("beta", "8.8.0.0/16", t0, 3600).await.is_empty());
    assert_eq!(hub.trust("alpha").await.contradicted, 1);
    assert_eq!(hub.trust("beta").await.contradicted, 2);
    let beta_before = hub.trust("beta").await;

    // Reported by beta alone: settled as uncorroborated once its validity passed.
    assert!(hub.report("beta", "192.0.2.99", t0, 600).await.is_empty());

    // Renewal: reported again before its promotion expires, the indicator is promoted
    // afresh at expiry (the new report first, then the withdrawal of the old one).
    // Three organisations, but beta is distrusted now (two allowlisted reports: trust 0.4,
    // weight 0.8): 2.8 is not 3. A fourth organisation completes it.
    for who in ["alpha", "beta", "gamma"] {
        assert!(
            hub.report(who, "203.0.113.60", t0, 3600).await.is_empty(),
            "{who}"
        );
    }
    let p1 = hub.report("epsilon", "203.0.113.60", t0, 3600).await;
    assert_eq!(p1.len(), 1);
    let FeedItem::Report(r1) = item(&p1[0]) else {
        panic!("a report")
    };
    assert_eq!(r1.trust.corroborations, 4);
    let later = t0 + Duration::minutes(50);
    for who in ["alpha", "gamma", "epsilon"] {
        assert!(
            hub.report(who, "203.0.113.60", later, 3600)
                .await
                .is_empty()
        );
    }

    let expiry = t0 + Duration::minutes(61);
    let swept = hub.pipeline.sweep(expiry).await.unwrap();
    let kinds: Vec<(String, String)> = swept
        .iter()
        .map(|row| match item(row) {
            FeedItem::Report(r) => ("report".to_owned(), r.indicators.ip.unwrap().to_string()),
            FeedItem::Withdrawal(w) => (
                format!("withdrawal:{}", w.reason),
                w.indicators.ip.unwrap().to_string(),
            ),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("withdrawal:expired".to_owned(), "203.0.113.50".to_owned()),
            ("report".to_owned(), "203.0.113.60".to_owned()),
            ("withdrawal:expired".to_owned(), "203.0.113.60".to_owned()),
        ],
        "{swept:?}"
    );
    let FeedItem::Withdrawal(w) = item(&swept[0]) else {
        unreachable!()
    };
    assert_eq!(w.withdraws, report.id);
    let FeedItem::Withdrawal(w) = item(&swept[2]) else {
        unreachable!()
    };
    assert_eq!(w.withdraws, p1[0].id, "the old promotion is withdrawn");
    assert_ne!(swept[1].id, p1[0].id, "the renewal is a new report");
    assert!(swept[1].seq < swept[2].seq, "renewal before withdrawal");
    let beta_after = hub.trust("beta").await;
    assert!(
        beta_after.evidence.negative > beta_before.evidence.negative,
        "an uncorroborated report counts against beta: {beta_before:?} -> {beta_after:?}"
    );
    // A second sweep finds nothing more to do.
    assert!(hub.pipeline.sweep(expiry).await.unwrap().is_empty());

    // False positive: withdrawn at once, its reporters contradicted, not published again
    // within the window whoever reports it.
    let gamma_before = hub.trust("gamma").await;
    let rows = store
        .withdraw_indicator(
            "203.0.113.60",
            WithdrawalReason::FalsePositive,
            &hub.pipeline.settings.trust,
            expiry,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let FeedItem::Withdrawal(w) = item(&rows[0]) else {
        panic!("a withdrawal")
    };
    assert_eq!(w.reason, WithdrawalReason::FalsePositive);
    assert_eq!(w.withdraws, swept[1].id);
    assert_eq!(
        hub.trust("gamma").await.contradicted,
        gamma_before.contradicted + 1
    );
    for who in ["epsilon", "alpha", "beta", "gamma"] {
        assert!(
            hub.report(who, "203.0.113.60", expiry, 3600)
                .await
                .is_empty(),
            "quarantined"
        );
    }
    let err = store
        .withdraw_indicator(
            "203.0.113.60",
            WithdrawalReason::FalsePositive,
            &hub.pipeline.settings.trust,
            expiry,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a published"), "{err}");

    // The feed log holds what participants saw, in order, and nothing else.
    let log = store.feed_after(0, 100).await.unwrap();
    assert_eq!(log.len(), 6, "two promotions, a renewal, three withdrawals");
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    // The sweep's and the operator's rows were not published here: the republisher finds
    // exactly those (and the reports' rows were marked by `published`).
    let stale = store
        .stale_feed_rows(expiry + Duration::hours(1))
        .await
        .unwrap();
    let unpublished: Vec<Uuid> = swept.iter().chain(&rows).map(|r| r.id).collect();
    assert_eq!(stale.iter().map(|r| r.id).collect::<Vec<_>>(), unpublished);
    for row in &stale {
        store.mark_feed_published(row.id).await.unwrap();
    }
    assert!(
        store
            .stale_feed_rows(expiry + Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.active_promotions().await.unwrap().is_empty());
    hub.pipeline.store.clone()
}

#[tokio::test]
async fn k_organisations_promote_and_trust_moves_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = exercise(Store::connect(&url).await.unwrap()).await;
    let participants = store.participants().await.unwrap();
    let mut before = Vec::new();
    for p in &participants {
        before.push(store.trust_record(&p.id).await.unwrap());
    }
    assert!(
        before
            .iter()
            .all(|r| r.corroborated > 0 || r.contradicted > 0)
    );
    store.close().await;
    // Trust survives a restart.
    let store = Store::connect(&url).await.unwrap();
    for (p, before) in participants.iter().zip(before) {
        assert_eq!(store.trust_record(&p.id).await.unwrap(), before);
    }
}

#[tokio::test]
async fn k_organisations_promote_and_trust_moves_on_postgres() {
    if !apiguard_testkit::require_service("PostgreSQL", common::POSTGRES) {
        return;
    }
    let (store, schema) = common::postgres_store().await;
    let store = exercise(store).await;
    store.close().await;
    schema.drop().await;
}

/// Reports of one indicator arriving at the same time from several organisations, handled
/// concurrently, promote it exactly once.
async fn concurrent_reports_promote_once(store: Store) {
    let settings = common::settings("trust:\n  k: 3\n");
    let pipeline = Arc::new(Pipeline::new(Arc::new(settings), store));
    let mut envelopes = Vec::new();
    for n in 0..12 {
        let participant = pipeline
            .store
            .add_participant(&NewParticipant {
                name: format!("org{n}"),
                organisation: format!("Organisation {n}"),
                ..NewParticipant::default()
            })
            .await
            .unwrap();
        envelopes.push(Envelope {
            v: 1,
            id: Uuid::now_v7(),
            participant: participant.id.clone(),
            received_at: Utc::now(),
            protocol: "rest".into(),
            report: serde_json::from_value(json!({"attack": "xss", "source_ip": "198.51.100.77"}))
                .unwrap(),
        });
        pipeline.remember(participant);
    }
    let mut tasks = Vec::new();
    for envelope in envelopes {
        let pipeline = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            match pipeline.process(&envelope.to_bytes()).await.unwrap() {
                Outcome::Publish { items, .. } => items.len(),
                Outcome::Duplicate => 0,
            }
        }));
    }
    let mut published = 0;
    for task in tasks {
        published += task.await.unwrap();
    }
    assert_eq!(published, 1, "one promotion");
    assert_eq!(pipeline.store.active_promotions().await.unwrap().len(), 1);
    pipeline.store.close().await;
}

#[tokio::test]
async fn concurrent_reports_promote_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    concurrent_reports_promote_once(Store::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn concurrent_reports_promote_once_on_postgres() {
    if !apiguard_testkit::require_service("PostgreSQL", common::POSTGRES) {
        return;
    }
    let (store, schema) = common::postgres_store().await;
    concurrent_reports_promote_once(store).await;
    schema.drop().await;
}
