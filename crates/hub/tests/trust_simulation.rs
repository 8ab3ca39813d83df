//! A simulation of the trust model through the hub's real pipeline and store (SQLite), on a
//! simulated clock: 20 honest organisations report true attackers (each sees each attacker
//! with probability 1/4) and make occasional false positives on random benign addresses;
//! three colluding participants from two organisations report benign addresses every hour
//! (two on the allowlist, three not) to get them published; after a day a third colluding
//! organisation, fresh and in good standing, joins them, so that three distinct
//! organisations report the benign addresses: a plain count of organisations would publish
//! them, the trust weighting does not. Deterministic (seeded).
//!
//! Asserted: no benign address is ever published; every attacker reported by at least three
//! honest organisations is; the colluders' trust falls and the honest participants' rises.
//! Printed: the rates and the colluders' trust over time.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use apiguard_hub::feed::FeedRow;
use apiguard_hub::pipeline::{Envelope, Outcome, Pipeline};
use apiguard_hub::{NewParticipant, Store};
use apiguard_model::feed::FeedItem;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

/// SplitMix64: a small deterministic generator, so the run is the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const ROUNDS: i64 = 48;
const HONEST: usize = 20;
const ATTACKERS_PER_ROUND: usize = 8;
const SEEN: f64 = 0.25;
const FALSE_POSITIVE: f64 = 0.05;
const ALLOWLISTED_TARGETS: [&str; 2] = ["1.1.1.1", "8.8.8.8"];
const BENIGN_TARGETS: [&str; 3] = ["192.0.2.10", "192.0.2.11", "192.0.2.12"];
/// The round from which the third colluding organisation joins.
const REINFORCEMENT: i64 = 24;

struct Sim {
    pipeline: Pipeline,
    /// Promoted indicators (addresses).
    promoted: BTreeSet<String>,
    reports: usize,
}

impl Sim {
    async fn participant(&self, name: &str, organisation: &str) -> String {
        let participant = self
            .pipeline
            .store
            .add_participant(&NewParticipant {
                name: name.into(),
                organisation: organisation.into(),
                ..NewParticipant::default()
            })
            .await
            .unwrap();
        let id = participant.id.clone();
        self.pipeline.remember(participant);
        id
    }

    fn record(&mut self, rows: &[FeedRow]) {
        for row in rows {
            if let FeedItem::Report(report) = FeedItem::from_json(&row.body).unwrap() {
                self.promoted
                    .insert(report.indicators.ip.unwrap().to_string());
            }
        }
    }

    async fn report(&mut self, participant: &str, ip: &str, at: DateTime<Utc>) {
        let envelope = Envelope {
            v: 1,
            id: Uuid::now_v7(),
            participant: participant.to_owned(),
            received_at: at,
            protocol: "rest".into(),
            report: serde_json::from_value(json!({
                "attack": "credential_stuffing", "source_ip": ip, "ttl_seconds": 3600
            }))
            .unwrap(),
        };
        self.reports += 1;
        match self
            .pipeline
            .process_at(&envelope.to_bytes(), at)
            .await
            .unwrap()
        {
            Outcome::Publish {
                report_id, items, ..
            } => {
                self.pipeline.published(report_id, &items).await.unwrap();
                self.record(&items);
            }
            Outcome::Duplicate => unreachable!(),
        }
    }

    async fn score(&self, participant: &str) -> f64 {
        let record = self.pipeline.store.trust_record(participant).await.unwrap();
        self.pipeline.settings.trust.score(record.evidence)
    }
}

#[tokio::test]
async fn colluders_cannot_publish_benign_addresses_and_lose_trust() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let settings = common::settings("trust:\n  k: 3\n  window: 24h\n");
    let mut sim = Sim {
        pipeline: Pipeline::new(Arc::new(settings), store),
        promoted: BTreeSet::new(),
        reports: 0,
    };
    let mut honest = Vec::new();
    for n in 0..HONEST {
        honest.push(
            sim.participant(&format!("honest{n}"), &format!("Honest Org {n}"))
                .await,
        );
    }
    let mallory1 = sim.participant("mallory1", "Mallory Ltd").await;
    let mallory2 = sim.participant("mallory2", "Mallory Ltd").await;
    let trudy = sim.participant("trudy", "Trudy Inc").await;
    let mut colluders = vec![mallory1.clone(), mallory2.clone(), trudy.clone()];
    let mut eve = None;

    let mut rng = Rng(0x5eed_a91a_2d00_0001);
    let t0 = Utc::now();
    // attacker -> the honest organisations that reported it
    let mut attackers: BTreeMap<String, usize> = BTreeMap::new();
    let mut false_positives: BTreeSet<String> = BTreeSet::new();
    // benign target -> distinct organisations that reported it within the last day
    let mut benign_orgs: HashMap<&str, BTreeMap<i64, BTreeSet<&str>>> = HashMap::new();
    let mut trajectory = Vec::new();

    for round in 0..ROUNDS {
        let start = t0 + Duration::hours(round);
        if round == REINFORCEMENT {
            let id = sim.participant("eve", "Eve GmbH").await;
            colluders.push(id.clone());
            eve = Some(id);
        }
        let mut second = 0;
        let mut at = || {
            second += 1;
            start + Duration::seconds(second)
        };
        for a in 0..ATTACKERS_PER_ROUND {
            let attacker = format!("100.64.{round}.{}", a + 1);
            let mut seen_by = 0;
            for participant in &honest {
                if rng.chance(SEEN) {
                    seen_by += 1;
                    sim.report(participant, &attacker, at()).await;
                }
            }
            attackers.insert(attacker, seen_by);
        }
        for participant in &honest {
            if rng.chance(FALSE_POSITIVE) {
                let r = rng.next();
                let address = format!(
                    "198.{}.{}.{}",
                    18 + r % 2,
                    (r >> 8) % 256,
                    (r >> 16) % 254 + 1
                );
                sim.report(participant, &address, at()).await;
                false_positives.insert(address);
            }
        }
        for colluder in colluders.clone() {
            for target in ALLOWLISTED_TARGETS.iter().chain(&BENIGN_TARGETS) {
                sim.report(&colluder, target, at()).await;
            }
        }
        for target in BENIGN_TARGETS {
            let mut orgs: BTreeSet<&str> = ["mallory", "trudy"].into();
            if round >= REINFORCEMENT {
                orgs.insert("eve");
            }
            benign_orgs.entry(target).or_default().insert(round, orgs);
        }
        let rows = sim
            .pipeline
            .sweep(start + Duration::hours(1) + Duration::seconds(1))
            .await
            .unwrap();
        sim.record(&rows);
        for row in &rows {
            sim.pipeline
                .store
                .mark_feed_published(row.id)
                .await
                .unwrap();
        }
        if round % 8 == 7 || round == REINFORCEMENT {
            let eve_score = match &eve {
                Some(eve) => format!("{:.2}", sim.score(eve).await),
                None => "-".into(),
            };
            trajectory.push(format!(
                "hour {:>2}: mallory {:.2}/{:.2} trudy {:.2} eve {eve_score}",
                round + 1,
                sim.score(&mallory1).await,
                sim.score(&mallory2).await,
                sim.score(&trudy).await,
            ));
        }
    }

    // Rates.
    let seen_by_quorum: Vec<&String> = attackers
        .iter()
        .filter(|(_, seen)| **seen >= 3)
        .map(|(a, _)| a)
        .collect();
    let promoted_attackers = attackers
        .keys()
        .filter(|a| sim.promoted.contains(*a))
        .count();
    let promoted_quorum = seen_by_quorum
        .iter()
        .filter(|a| sim.promoted.contains(**a))
        .count();
    let benign: BTreeSet<String> = ALLOWLISTED_TARGETS
        .iter()
        .chain(&BENIGN_TARGETS)
        .map(|s| s.to_string())
        .chain(false_positives.iter().cloned())
        .collect();
    let promoted_benign: Vec<&String> = benign
        .iter()
        .filter(|b| sim.promoted.contains(*b))
        .collect();
    let mut honest_scores = Vec::new();
    for participant in &honest {
        honest_scores.push(sim.score(participant).await);
    }
    let honest_mean = honest_scores.iter().sum::<f64>() / honest_scores.len() as f64;
    let honest_min = honest_scores.iter().copied().fold(1.0, f64::min);
    let eve_score = sim.score(eve.as_ref().unwrap()).await;
    // Three colluding organisations reported the benign targets within one window: a count
    // of organisations alone would have promoted them.
    let count_would_promote = benign_orgs.values().any(|by_round| {
        by_round
            .iter()
            .any(|(round, orgs)| *round >= REINFORCEMENT && orgs.len() >= 3)
    });

    eprintln!(
        "trust simulation: {} reports over {ROUNDS} simulated hours",
        sim.reports
    );
    eprintln!(
        "  true attackers published: {promoted_attackers}/{} ({:.1}%); of those reported by >= 3 organisations: {promoted_quorum}/{} ({:.1}%)",
        attackers.len(),
        100.0 * promoted_attackers as f64 / attackers.len() as f64,
        seen_by_quorum.len(),
        100.0 * promoted_quorum as f64 / seen_by_quorum.len().max(1) as f64,
    );
    eprintln!(
        "  benign addresses published: {}/{} (colluders' targets: {}, honest false positives: {})",
        promoted_benign.len(),
        benign.len(),
        ALLOWLISTED_TARGETS.len() + BENIGN_TARGETS.len(),
        false_positives.len()
    );
    eprintln!("  honest trust: mean {honest_mean:.2}, lowest {honest_min:.2}");
    for line in &trajectory {
        eprintln!("  colluders' trust at {line}");
    }

    assert!(promoted_benign.is_empty(), "published: {promoted_benign:?}");
    assert!(
        count_would_promote,
        "the simulation must test the weighting"
    );
    assert_eq!(
        promoted_quorum,
        seen_by_quorum.len(),
        "every attacker seen by three honest organisations is published"
    );
    assert!(
        promoted_attackers >= attackers.len() * 8 / 10,
        "{promoted_attackers} of {} attackers",
        attackers.len()
    );
    for colluder in [&mallory1, &mallory2, &trudy] {
        let score = sim.score(colluder).await;
        assert!(score < 0.1, "a colluder keeps trust {score:.2}");
    }
    assert!(
        eve_score < 0.25,
        "the late colluder keeps trust {eve_score:.2}"
    );
    assert!(honest_mean > 0.7, "honest mean trust {honest_mean:.2}");
    assert!(
        honest_min > 0.5,
        "an honest participant fell to {honest_min:.2}"
    );
}
