//! What participants see, and the store behind it (docs/hub.md, "Trust model").
//!
//! Every accepted report is stored as a *sighting* of its indicator (`hub_sightings`, beside
//! the report in `hub_reports`) and published to nobody. An indicator is *promoted* when the
//! organisations that reported it within the window weigh enough ([`TrustSettings`]); the
//! promotion (`hub_promotions`) is a canonical report, appended to the *feed log*
//! (`hub_feed`) and published to every participant but its reporters. When the promotion's
//! `valid_until` passes, or an operator withdraws it, a withdrawal is appended and
//! published the same way. The feed log is an outbox: a row is written in the transaction
//! that decides it, published after the commit, then marked; rows left unpublished (a crash,
//! a broker outage) are published again by the sweep. The GraphQL `feed` query and
//! subscription read the same log with the same filter as the participant queues.
//!
//! Trust evidence (`hub_trust`) is written in the same transactions: a corroboration per
//! participant and promotion it contributed to with at least one other organisation; a
//! contradiction for an allowlisted report (once per indicator and window) and for each
//! contributor of a promotion withdrawn as a false positive (or found allowlisted); a
//! lighter one per participant and indicator whose reports were never corroborated.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use apiguard_model::feed::{Withdrawal, WithdrawalKind, WithdrawalReason};
use apiguard_model::threat::{IpPrefix, THREAT_SCHEMA_VERSION, ThreatReport, Trust};
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use crate::bus::Bus;
use crate::db::{Arg, DbRow, LOCK_FEED, LOCK_INDICATOR, Tx};
use crate::error::HubError;
use crate::pipeline::Pipeline;
use crate::store::{Store, StoredReport};
use crate::subscription::routing_key;
use crate::trust::{Evidence, Reporter, TrustSettings};

/// Feed rows left unpublished this long are published again by the sweep.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(30);
/// Most rows one sweep handles per kind of work.
const SWEEP_BATCH: i64 = 500;

pub(crate) const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hub_feed (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, routing_key TEXT NOT NULL, origins TEXT NOT NULL, \
     body TEXT NOT NULL, cause TEXT, created_at BIGINT NOT NULL, published BIGINT NOT NULL DEFAULT 0)",
];

pub(crate) const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hub_feed (seq BIGSERIAL PRIMARY KEY, \
     id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, routing_key TEXT NOT NULL, origins TEXT NOT NULL, \
     body TEXT NOT NULL, cause TEXT, created_at BIGINT NOT NULL, published BIGINT NOT NULL DEFAULT 0)",
];

/// Tables and indexes written the same on both databases.
pub(crate) const COMMON_SCHEMA: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS hub_feed_unpublished ON hub_feed (published, created_at)",
    "CREATE INDEX IF NOT EXISTS hub_feed_cause ON hub_feed (cause)",
    "CREATE TABLE IF NOT EXISTS hub_sightings (report_id TEXT PRIMARY KEY, \
     participant_id TEXT NOT NULL, organisation TEXT NOT NULL, indicator TEXT NOT NULL, \
     received_at BIGINT NOT NULL, valid_until BIGINT NOT NULL, outcome BIGINT NOT NULL DEFAULT 0, \
     promotion_id TEXT)",
    "CREATE INDEX IF NOT EXISTS hub_sightings_indicator ON hub_sightings (indicator, received_at)",
    "CREATE INDEX IF NOT EXISTS hub_sightings_pending ON hub_sightings (outcome, valid_until)",
    "CREATE INDEX IF NOT EXISTS hub_sightings_promotion ON hub_sightings (promotion_id)",
    "CREATE TABLE IF NOT EXISTS hub_promotions (id TEXT PRIMARY KEY, indicator TEXT NOT NULL, \
     promoted_at BIGINT NOT NULL, valid_until BIGINT NOT NULL, routing_key TEXT NOT NULL, \
     origins TEXT NOT NULL, body TEXT NOT NULL, withdrawn_at BIGINT, withdrawal_reason TEXT)",
    "CREATE UNIQUE INDEX IF NOT EXISTS hub_promotions_active ON hub_promotions (indicator) \
     WHERE withdrawn_at IS NULL",
    "CREATE INDEX IF NOT EXISTS hub_promotions_expiry ON hub_promotions (valid_until) \
     WHERE withdrawn_at IS NULL",
    "CREATE INDEX IF NOT EXISTS hub_promotions_history ON hub_promotions (indicator, withdrawn_at)",
    "CREATE TABLE IF NOT EXISTS hub_trust (participant_id TEXT PRIMARY KEY, \
     positive DOUBLE PRECISION NOT NULL, negative DOUBLE PRECISION NOT NULL, \
     corroborated BIGINT NOT NULL, contradicted BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
];

/// What became of a sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum SightingOutcome {
    /// Not promoted (yet), still counting.
    Pending = 0,
    /// Part of a promotion.
    Promoted = 1,
    /// Its indicator is allowlisted: never published.
    Allowlisted = 2,
    /// Its validity or the window passed without a promotion.
    Uncorroborated = 3,
    /// Part of a promotion withdrawn as a false positive (or found allowlisted).
    Contradicted = 4,
}

/// One item of the feed log.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedRow {
    /// Its position in the log (the `feed` cursor).
    pub seq: i64,
    /// The report's or the withdrawal's id.
    pub id: Uuid,
    /// `report` or `withdrawal`.
    pub kind: String,
    pub routing_key: String,
    /// Participants that must not receive it (the promotion's reporters).
    pub origins: Vec<String>,
    /// The canonical JSON.
    pub body: Vec<u8>,
}

impl FeedRow {
    /// Whether `participant_id` is one of the item's origins.
    pub fn is_from(&self, participant_id: &str) -> bool {
        self.origins.iter().any(|o| o == participant_id)
    }
}

/// A participant's trust, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrustRecord {
    pub evidence: Evidence,
    /// Times it was corroborated.
    pub corroborated: i64,
    /// Times it was contradicted (all kinds).
    pub contradicted: i64,
}

fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn since_ms(settings: &TrustSettings, now: DateTime<Utc>) -> i64 {
    let window = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
    ms(now).saturating_sub(window)
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> HubError {
    HubError::Store(format!("{what}: {error}"))
}

fn parse_id(text: &str) -> Result<Uuid, HubError> {
    Uuid::parse_str(text).map_err(|e| corrupt("a stored id", e))
}

fn feed_row(row: &DbRow) -> Result<FeedRow, HubError> {
    let origins: Vec<String> =
        serde_json::from_str(&row.text(4)?).map_err(|e| corrupt("feed origins", e))?;
    Ok(FeedRow {
        seq: row.int(0)?,
        id: parse_id(&row.text(1)?)?,
        kind: row.text(2)?,
        routing_key: row.text(3)?,
        origins,
        body: row.text(5)?.into_bytes(),
    })
}

/// Adds trust evidence for one participant.
async fn add_evidence(
    tx: &mut Tx,
    participant_id: &str,
    positive: f64,
    negative: f64,
    now: DateTime<Utc>,
) -> Result<(), HubError> {
    tx.exec(
        "INSERT INTO hub_trust (participant_id, positive, negative, corroborated, contradicted, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (participant_id) DO UPDATE SET \
         positive = hub_trust.positive + excluded.positive, \
         negative = hub_trust.negative + excluded.negative, \
         corroborated = hub_trust.corroborated + excluded.corroborated, \
         contradicted = hub_trust.contradicted + excluded.contradicted, \
         updated_at = excluded.updated_at",
        &[
            Arg::Text(participant_id),
            Arg::Real(positive),
            Arg::Real(negative),
            Arg::Int(i64::from(positive > 0.0)),
            Arg::Int(i64::from(negative > 0.0)),
            Arg::Int(ms(now)),
        ],
    )
    .await?;
    Ok(())
}

/// Appends an item to the feed log; its row.
#[allow(clippy::too_many_arguments)]
async fn append_feed(
    tx: &mut Tx,
    id: Uuid,
    kind: &str,
    routing_key: &str,
    origins: &[String],
    body: Vec<u8>,
    cause: Option<&str>,
    now: DateTime<Utc>,
) -> Result<FeedRow, HubError> {
    // One appender at a time, so that the log's order is its commit order and a reader
    // following the cursor never skips a row committed late.
    tx.lock(LOCK_FEED, "feed").await?;
    let origins_json = serde_json::to_string(origins).expect("strings serialise");
    let text = String::from_utf8(body).map_err(|e| HubError::Internal(e.to_string()))?;
    let id_text = id.to_string();
    let rows = tx
        .fetch(
            "INSERT INTO hub_feed (id, kind, routing_key, origins, body, cause, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
            &[
                Arg::Text(&id_text),
                Arg::Text(kind),
                Arg::Text(routing_key),
                Arg::Text(&origins_json),
                Arg::Text(&text),
                Arg::OptText(cause),
                Arg::Int(ms(now)),
            ],
        )
        .await?;
    let seq = rows
        .first()
        .ok_or_else(|| HubError::Store("the feed append returned no sequence".into()))?
        .int(0)?;
    Ok(FeedRow {
        seq,
        id,
        kind: kind.to_owned(),
        routing_key: routing_key.to_owned(),
        origins: origins.to_vec(),
        body: text.into_bytes(),
    })
}

/// Whether the indicator was withdrawn as a false positive (or allowlisted) within the
/// window: it is not promoted again until the window has passed.
async fn quarantined(
    tx: &mut Tx,
    indicator: &str,
    settings: &TrustSettings,
    now: DateTime<Utc>,
) -> Result<bool, HubError> {
    let rows = tx
        .fetch(
            "SELECT COUNT(*) FROM hub_promotions WHERE indicator = $1 \
             AND withdrawal_reason IN ('false_positive', 'allowlisted') AND withdrawn_at >= $2",
            &[Arg::Text(indicator), Arg::Int(since_ms(settings, now))],
        )
        .await?;
    Ok(rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0) > 0)
}

/// Links the live sightings of `indicator` (pending, or part of the promotion this one
/// renews) to the active promotion `promotion_id`, and credits each newly linked
/// participant once, when the promotion involves another organisation than its own.
async fn link_pending(
    tx: &mut Tx,
    promotion_id: &str,
    indicator: &str,
    settings: &TrustSettings,
    now: DateTime<Utc>,
) -> Result<(), HubError> {
    let since = since_ms(settings, now);
    let pending = tx
        .fetch(
            "SELECT DISTINCT participant_id, organisation FROM hub_sightings \
             WHERE indicator = $1 AND outcome IN (0, 1) AND received_at >= $2 AND valid_until > $3 \
             AND (promotion_id IS NULL OR promotion_id <> $4)",
            &[
                Arg::Text(indicator),
                Arg::Int(since),
                Arg::Int(ms(now)),
                Arg::Text(promotion_id),
            ],
        )
        .await?;
    if pending.is_empty() {
        return Ok(());
    }
    let linked = tx
        .fetch(
            "SELECT DISTINCT participant_id, organisation FROM hub_sightings WHERE promotion_id = $1",
            &[Arg::Text(promotion_id)],
        )
        .await?;
    let mut linked_participants = HashSet::new();
    let mut organisations = BTreeSet::new();
    for row in &linked {
        linked_participants.insert(row.text(0)?);
        organisations.insert(row.text(1)?);
    }
    let mut newcomers = Vec::new();
    for row in &pending {
        let (participant, organisation) = (row.text(0)?, row.text(1)?);
        organisations.insert(organisation.clone());
        if linked_participants.insert(participant.clone()) {
            newcomers.push((participant, organisation));
        }
    }
    tx.exec(
        "UPDATE hub_sightings SET outcome = 1, promotion_id = $1 \
         WHERE indicator = $2 AND outcome IN (0, 1) AND received_at >= $3 AND valid_until > $4 \
         AND (promotion_id IS NULL OR promotion_id <> $1)",
        &[
            Arg::Text(promotion_id),
            Arg::Text(indicator),
            Arg::Int(since),
            Arg::Int(ms(now)),
        ],
    )
    .await?;
    // In a fixed order, like every writer of `hub_trust`, so that two transactions crediting
    // the same participants do not deadlock on PostgreSQL.
    newcomers.sort();
    for (participant, organisation) in newcomers {
        if organisations.iter().any(|o| *o != organisation) {
            add_evidence(tx, &participant, 1.0, 0.0, now).await?;
        }
    }
    Ok(())
}

/// Promotes `indicator` when its live reports weigh enough; the feed row of the promotion.
async fn promote_if_due(
    tx: &mut Tx,
    indicator: &str,
    settings: &TrustSettings,
    now: DateTime<Utc>,
    cause: Option<&str>,
) -> Result<Option<FeedRow>, HubError> {
    let since = since_ms(settings, now);
    let live = [Arg::Text(indicator), Arg::Int(since), Arg::Int(ms(now))];
    let rows = tx
        .fetch(
            "SELECT s.participant_id, MIN(s.organisation), COALESCE(MAX(t.positive), 0.0), \
             COALESCE(MAX(t.negative), 0.0), MAX(s.valid_until) \
             FROM hub_sightings s LEFT JOIN hub_trust t ON t.participant_id = s.participant_id \
             WHERE s.indicator = $1 AND s.outcome IN (0, 1) AND s.received_at >= $2 \
             AND s.valid_until > $3 GROUP BY s.participant_id",
            &live,
        )
        .await?;
    let mut reporters = Vec::with_capacity(rows.len());
    let mut valid_until = i64::MIN;
    for row in &rows {
        reporters.push(Reporter {
            participant_id: row.text(0)?,
            organisation: row.text(1)?,
            evidence: Evidence {
                positive: row.real(2)?,
                negative: row.real(3)?,
            },
        });
        valid_until = valid_until.max(row.int(4)?);
    }
    let tally = settings.tally(&reporters);
    if !settings.promotes(&tally) {
        return Ok(None);
    }
    // The promotion is the most recent live report, under the id of that report (the one
    // that completed the quorum, or the freshest evidence when a promotion is renewed).
    let trigger = tx
        .fetch(
            "SELECT s.report_id, r.body FROM hub_sightings s JOIN hub_reports r ON r.id = s.report_id \
             WHERE s.indicator = $1 AND s.outcome IN (0, 1) AND s.received_at >= $2 \
             AND s.valid_until > $3 ORDER BY s.received_at DESC, s.report_id DESC LIMIT 1",
            &live,
        )
        .await?;
    let trigger = trigger
        .first()
        .ok_or_else(|| HubError::Store("a promoted indicator has no report".into()))?;
    let mut report = ThreatReport::from_json(trigger.text(1)?.as_bytes())
        .map_err(|e| corrupt("a stored report", e))?;
    let mut id = parse_id(&trigger.text(0)?)?;
    let taken = tx
        .fetch(
            "SELECT COUNT(*) FROM hub_promotions WHERE id = $1",
            &[Arg::Text(&id.to_string())],
        )
        .await?;
    if taken.first().map(|r| r.int(0)).transpose()?.unwrap_or(0) > 0 {
        id = Uuid::now_v7();
    }
    report.id = id;
    report.valid_until = DateTime::from_timestamp_millis(valid_until)
        .unwrap_or(report.valid_until)
        .max(report.last_seen);
    report.trust = Trust {
        score: (tally.mean_trust * 100.0).round().clamp(0.0, 100.0) as u8,
        corroborations: tally.organisations.max(1),
    };
    report.validate().map_err(|e| corrupt("a promotion", e))?;
    let body = report.to_json();
    let key = routing_key(&report);
    let origins: Vec<String> = reporters.into_iter().map(|r| r.participant_id).collect();
    let id_text = id.to_string();
    tx.exec(
        "INSERT INTO hub_promotions (id, indicator, promoted_at, valid_until, routing_key, origins, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Arg::Text(&id_text),
            Arg::Text(indicator),
            Arg::Int(ms(now)),
            Arg::Int(ms(report.valid_until)),
            Arg::Text(&key),
            Arg::Text(&serde_json::to_string(&origins).expect("strings serialise")),
            Arg::Text(std::str::from_utf8(&body).expect("JSON is UTF-8")),
        ],
    )
    .await?;
    link_pending(tx, &id_text, indicator, settings, now).await?;
    let row = append_feed(tx, id, "report", &key, &origins, body, cause, now).await?;
    info!(indicator, report = %id, organisations = tally.organisations, weight = tally.weight, "indicator promoted");
    Ok(Some(row))
}

/// Ends the active promotion `promotion_id`: marks it withdrawn and appends the withdrawal.
/// With `contradicts`, each of its contributors gets a contradiction and their reports
/// are marked so.
async fn withdraw(
    tx: &mut Tx,
    promotion: &ActivePromotion,
    reason: WithdrawalReason,
    contradicts: bool,
    settings: &TrustSettings,
    now: DateTime<Utc>,
    successor: Option<FeedRow>,
) -> Result<Vec<FeedRow>, HubError> {
    tx.exec(
        "UPDATE hub_promotions SET withdrawn_at = $1, withdrawal_reason = $2 WHERE id = $3",
        &[
            Arg::Int(ms(now)),
            Arg::Text(reason.as_str()),
            Arg::Text(&promotion.id),
        ],
    )
    .await?;
    if contradicts {
        let contributors = tx
            .fetch(
                "SELECT DISTINCT participant_id FROM hub_sightings WHERE promotion_id = $1 \
                 ORDER BY participant_id",
                &[Arg::Text(&promotion.id)],
            )
            .await?;
        for row in &contributors {
            add_evidence(tx, &row.text(0)?, 0.0, settings.contradiction_penalty, now).await?;
        }
        tx.exec(
            "UPDATE hub_sightings SET outcome = 4 WHERE promotion_id = $1",
            &[Arg::Text(&promotion.id)],
        )
        .await?;
    }
    let report = ThreatReport::from_json(promotion.body.as_bytes())
        .map_err(|e| corrupt("a stored promotion", e))?;
    let withdrawal = Withdrawal {
        kind: WithdrawalKind::Withdrawal,
        schema_version: THREAT_SCHEMA_VERSION,
        id: Uuid::now_v7(),
        withdraws: report.id,
        indicators: report.indicators,
        reason,
        withdrawn_at: now,
    };
    let mut rows: Vec<FeedRow> = successor.into_iter().collect();
    rows.push(
        append_feed(
            tx,
            withdrawal.id,
            "withdrawal",
            &promotion.routing_key,
            &promotion.origins,
            withdrawal.to_json(),
            None,
            now,
        )
        .await?,
    );
    info!(indicator = %promotion.indicator, report = %report.id, %reason, "indicator withdrawn");
    Ok(rows)
}

struct ActivePromotion {
    id: String,
    indicator: String,
    routing_key: String,
    origins: Vec<String>,
    body: String,
}

async fn active_promotion(
    tx: &mut Tx,
    indicator: &str,
) -> Result<Option<ActivePromotion>, HubError> {
    let rows = tx
        .fetch(
            "SELECT id, routing_key, origins, body FROM hub_promotions \
             WHERE indicator = $1 AND withdrawn_at IS NULL",
            &[Arg::Text(indicator)],
        )
        .await?;
    rows.first()
        .map(|row| {
            Ok(ActivePromotion {
                id: row.text(0)?,
                indicator: indicator.to_owned(),
                routing_key: row.text(1)?,
                origins: serde_json::from_str(&row.text(2)?)
                    .map_err(|e| corrupt("promotion origins", e))?,
                body: row.text(3)?,
            })
        })
        .transpose()
}

/// A report's sighting, stored with it.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The indicator key ([`apiguard_model::feed::indicator_key`]).
    pub indicator: String,
    /// The reporter's organisation, normalised ([`crate::trust::organisation_key`]).
    pub organisation: String,
    /// Whether the indicator is on the allowlist.
    pub allowlisted: bool,
}

impl Store {
    /// Creates the feed, sighting, promotion and trust tables.
    pub(crate) async fn migrate_feed(&self) -> Result<(), HubError> {
        let own = match self {
            Store::Sqlite(_) => SQLITE_SCHEMA,
            Store::Postgres(_) => POSTGRES_SCHEMA,
        };
        for statement in own.iter().chain(COMMON_SCHEMA) {
            self.exec(statement, &[]).await?;
        }
        Ok(())
    }

    /// Stores a report and its sighting (when it has an indicator) unless a report with its
    /// id exists; true when it was new. An allowlisted sighting counts against its reporter
    /// (once per indicator and window).
    pub async fn insert_sighting(
        &self,
        report: &StoredReport,
        sighting: Option<&Sighting>,
        settings: &TrustSettings,
        now: DateTime<Utc>,
    ) -> Result<bool, HubError> {
        let mut tx = self.begin().await?;
        let id = report.id.to_string();
        let inserted = tx
            .exec(
                "INSERT INTO hub_reports (id, participant_id, ip, class, severity, received_at, valid_until, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    Arg::Text(&id),
                    Arg::Text(&report.participant_id),
                    Arg::OptText(report.ip.as_deref()),
                    Arg::Text(&report.class),
                    Arg::Text(&report.severity),
                    Arg::Int(report.received_at_ms),
                    Arg::Int(report.valid_until_ms),
                    Arg::Text(&report.body),
                ],
            )
            .await?
            == 1;
        if inserted && let Some(sighting) = sighting {
            let outcome = if sighting.allowlisted {
                SightingOutcome::Allowlisted
            } else {
                SightingOutcome::Pending
            };
            tx.exec(
                "INSERT INTO hub_sightings (report_id, participant_id, organisation, indicator, received_at, valid_until, outcome) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    Arg::Text(&id),
                    Arg::Text(&report.participant_id),
                    Arg::Text(&sighting.organisation),
                    Arg::Text(&sighting.indicator),
                    Arg::Int(report.received_at_ms),
                    Arg::Int(report.valid_until_ms),
                    Arg::Int(outcome as i64),
                ],
            )
            .await?;
            if sighting.allowlisted {
                let earlier = tx
                    .fetch(
                        "SELECT COUNT(*) FROM hub_sightings WHERE participant_id = $1 AND indicator = $2 \
                         AND outcome = 2 AND received_at >= $3 AND report_id <> $4",
                        &[
                            Arg::Text(&report.participant_id),
                            Arg::Text(&sighting.indicator),
                            Arg::Int(since_ms(settings, now)),
                            Arg::Text(&id),
                        ],
                    )
                    .await?;
                if earlier.first().map(|r| r.int(0)).transpose()?.unwrap_or(0) == 0 {
                    add_evidence(
                        &mut tx,
                        &report.participant_id,
                        0.0,
                        settings.contradiction_penalty,
                        now,
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Decides on `indicator` after a new report of it: links the report to the active
    /// promotion, or promotes the indicator when its reports now weigh enough. The new feed
    /// rows (committed, to be published).
    pub async fn evaluate(
        &self,
        indicator: &str,
        settings: &TrustSettings,
        now: DateTime<Utc>,
        cause: Option<&str>,
    ) -> Result<Vec<FeedRow>, HubError> {
        let mut tx = self.begin().await?;
        tx.lock(LOCK_INDICATOR, indicator).await?;
        let row = if let Some(active) = active_promotion(&mut tx, indicator).await? {
            link_pending(&mut tx, &active.id, indicator, settings, now).await?;
            None
        } else if quarantined(&mut tx, indicator, settings, now).await? {
            None
        } else {
            promote_if_due(&mut tx, indicator, settings, now, cause).await?
        };
        tx.commit().await?;
        Ok(row.into_iter().collect())
    }

    /// Withdraws the active promotion of `indicator` (an address or prefix, or another
    /// indicator key) for `reason`; its contributors are contradicted. The new feed rows;
    /// `NotFound` when it is not promoted.
    pub async fn withdraw_indicator(
        &self,
        indicator: &str,
        reason: WithdrawalReason,
        settings: &TrustSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<FeedRow>, HubError> {
        let mut tx = self.begin().await?;
        tx.lock(LOCK_INDICATOR, indicator).await?;
        let Some(active) = active_promotion(&mut tx, indicator).await? else {
            return Err(HubError::NotFound(format!(
                "`{indicator}` is not a published indicator"
            )));
        };
        let rows = withdraw(&mut tx, &active, reason, true, settings, now, None).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Withdraws the promotions whose `valid_until` passed, each replaced first by a fresh
    /// promotion when newer live reports still weigh enough. The new feed rows.
    pub async fn expire_promotions(
        &self,
        settings: &TrustSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<FeedRow>, HubError> {
        let due = self
            .fetch(
                "SELECT id, indicator FROM hub_promotions WHERE withdrawn_at IS NULL \
                 AND valid_until <= $1 ORDER BY valid_until, id LIMIT $2",
                &[Arg::Int(ms(now)), Arg::Int(SWEEP_BATCH)],
            )
            .await?;
        let mut out = Vec::new();
        for row in due {
            let (id, indicator) = (row.text(0)?, row.text(1)?);
            let mut tx = self.begin().await?;
            tx.lock(LOCK_INDICATOR, &indicator).await?;
            let Some(active) = active_promotion(&mut tx, &indicator)
                .await?
                .filter(|a| a.id == id)
            else {
                continue;
            };
            // Free the indicator first: the successor takes its place in the same commit.
            tx.exec(
                "UPDATE hub_promotions SET withdrawn_at = $1, withdrawal_reason = 'expired' WHERE id = $2",
                &[Arg::Int(ms(now)), Arg::Text(&active.id)],
            )
            .await?;
            let successor = if quarantined(&mut tx, &indicator, settings, now).await? {
                None
            } else {
                promote_if_due(&mut tx, &indicator, settings, now, None).await?
            };
            out.extend(
                withdraw(
                    &mut tx,
                    &active,
                    WithdrawalReason::Expired,
                    false,
                    settings,
                    now,
                    successor,
                )
                .await?,
            );
            tx.commit().await?;
        }
        Ok(out)
    }

    /// Withdraws every active promotion of an address on the allowlist (after the allowlist
    /// changed). The new feed rows.
    pub async fn withdraw_allowlisted(
        &self,
        settings: &TrustSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<FeedRow>, HubError> {
        let active = self
            .fetch(
                "SELECT indicator FROM hub_promotions WHERE withdrawn_at IS NULL",
                &[],
            )
            .await?;
        let mut out = Vec::new();
        for row in active {
            let indicator = row.text(0)?;
            let listed = indicator
                .parse::<IpPrefix>()
                .ok()
                .and_then(|prefix| settings.allowlisted(&prefix));
            if listed.is_none() {
                continue;
            }
            match self
                .withdraw_indicator(&indicator, WithdrawalReason::Allowlisted, settings, now)
                .await
            {
                Ok(rows) => out.extend(rows),
                Err(HubError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(out)
    }

    /// Settles reports whose validity or window passed without a promotion: one
    /// uncorroborated contradiction per participant and indicator. How many were settled.
    pub async fn settle_uncorroborated(
        &self,
        settings: &TrustSettings,
        now: DateTime<Utc>,
    ) -> Result<usize, HubError> {
        let (now_ms, since) = (ms(now), since_ms(settings, now));
        let groups = self
            .fetch(
                "SELECT participant_id, indicator FROM hub_sightings WHERE outcome = 0 \
                 AND (valid_until <= $1 OR received_at < $2) \
                 GROUP BY participant_id, indicator ORDER BY participant_id, indicator LIMIT $3",
                &[Arg::Int(now_ms), Arg::Int(since), Arg::Int(SWEEP_BATCH)],
            )
            .await?;
        if groups.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let mut settled = 0;
        for group in &groups {
            let (participant, indicator) = (group.text(0)?, group.text(1)?);
            let changed = tx
                .exec(
                    "UPDATE hub_sightings SET outcome = 3 WHERE participant_id = $1 AND indicator = $2 \
                     AND outcome = 0 AND (valid_until <= $3 OR received_at < $4)",
                    &[
                        Arg::Text(&participant),
                        Arg::Text(&indicator),
                        Arg::Int(now_ms),
                        Arg::Int(since),
                    ],
                )
                .await?;
            if changed > 0 {
                settled += 1;
                add_evidence(
                    &mut tx,
                    &participant,
                    0.0,
                    settings.uncorroborated_penalty,
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(settled)
    }

    /// The unpublished feed rows a report's processing appended (to publish them on a
    /// redelivery).
    pub async fn feed_rows_caused_by(&self, report_id: Uuid) -> Result<Vec<FeedRow>, HubError> {
        let rows = self
            .fetch(
                "SELECT seq, id, kind, routing_key, origins, body FROM hub_feed \
                 WHERE cause = $1 AND published = 0 ORDER BY seq",
                &[Arg::Text(&report_id.to_string())],
            )
            .await?;
        rows.iter().map(feed_row).collect()
    }

    /// Feed rows still unpublished that were appended before `before`.
    pub async fn stale_feed_rows(&self, before: DateTime<Utc>) -> Result<Vec<FeedRow>, HubError> {
        let rows = self
            .fetch(
                "SELECT seq, id, kind, routing_key, origins, body FROM hub_feed \
                 WHERE published = 0 AND created_at <= $1 ORDER BY seq LIMIT $2",
                &[Arg::Int(ms(before)), Arg::Int(SWEEP_BATCH)],
            )
            .await?;
        rows.iter().map(feed_row).collect()
    }

    /// Marks a feed row published.
    pub async fn mark_feed_published(&self, id: Uuid) -> Result<(), HubError> {
        self.exec(
            "UPDATE hub_feed SET published = 1 WHERE id = $1",
            &[Arg::Text(&id.to_string())],
        )
        .await?;
        Ok(())
    }

    /// Feed rows after `after_seq`, oldest first.
    pub async fn feed_after(&self, after_seq: i64, limit: u32) -> Result<Vec<FeedRow>, HubError> {
        let rows = self
            .fetch(
                "SELECT seq, id, kind, routing_key, origins, body FROM hub_feed \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[Arg::Int(after_seq), Arg::Int(i64::from(limit))],
            )
            .await?;
        rows.iter().map(feed_row).collect()
    }

    /// The last position of the feed log (0 when empty).
    pub async fn feed_end(&self) -> Result<i64, HubError> {
        let rows = self
            .fetch("SELECT COALESCE(MAX(seq), 0) FROM hub_feed", &[])
            .await?;
        Ok(rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0))
    }

    /// A participant's trust evidence (none yet: the default).
    pub async fn trust_record(&self, participant_id: &str) -> Result<TrustRecord, HubError> {
        let rows = self
            .fetch(
                "SELECT positive, negative, corroborated, contradicted FROM hub_trust WHERE participant_id = $1",
                &[Arg::Text(participant_id)],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(TrustRecord {
                    evidence: Evidence {
                        positive: row.real(0)?,
                        negative: row.real(1)?,
                    },
                    corroborated: row.int(2)?,
                    contradicted: row.int(3)?,
                })
            })
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The indicators promoted now (active promotions), oldest first: `(indicator, report id)`.
    pub async fn active_promotions(&self) -> Result<Vec<(String, Uuid)>, HubError> {
        let rows = self
            .fetch(
                "SELECT indicator, id FROM hub_promotions WHERE withdrawn_at IS NULL ORDER BY promoted_at, id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.text(0)?, parse_id(&row.text(1)?)?)))
            .collect()
    }
}

/// Publishes feed rows in order and marks each; stops at the first failure (the sweep
/// publishes what is left later).
pub async fn publish_rows(
    pipeline: &Pipeline,
    bus: &Bus,
    rows: &[FeedRow],
) -> Result<(), HubError> {
    for row in rows {
        bus.publish_feed(row).await?;
        pipeline.store.mark_feed_published(row.id).await?;
    }
    Ok(())
}

/// The periodic sweep until `stop`: withdraws expired promotions (and, once at start,
/// allowlisted ones), settles uncorroborated reports, and publishes feed rows left behind.
pub async fn run_sweeper(pipeline: Arc<Pipeline>, bus: Bus, mut stop: watch::Receiver<bool>) {
    let interval = pipeline.settings.trust.sweep_interval;
    let mut first = true;
    loop {
        if first {
            first = false;
            match pipeline
                .store
                .withdraw_allowlisted(&pipeline.settings.trust, Utc::now())
                .await
            {
                Ok(rows) => {
                    pipeline.feed_appended(&rows);
                    if let Err(error) = publish_rows(&pipeline, &bus, &rows).await {
                        warn!(%error, "could not publish allowlist withdrawals now; the sweep retries");
                    }
                }
                Err(error) => warn!(%error, "could not check promotions against the allowlist"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = sweep_once(&pipeline, &bus, Utc::now()).await {
            warn!(%error, "the trust sweep failed; retrying at the next interval");
        }
    }
}

/// One sweep at `now`.
pub async fn sweep_once(
    pipeline: &Pipeline,
    bus: &Bus,
    now: DateTime<Utc>,
) -> Result<(), HubError> {
    let rows = pipeline.sweep(now).await?;
    publish_rows(pipeline, bus, &rows).await?;
    let stale = pipeline
        .store
        .stale_feed_rows(now - chrono::Duration::from_std(REPUBLISH_AFTER).unwrap_or_default())
        .await?;
    if !stale.is_empty() {
        warn!(
            count = stale.len(),
            "publishing feed items left unpublished"
        );
        publish_rows(pipeline, bus, &stale).await?;
    }
    Ok(())
}
