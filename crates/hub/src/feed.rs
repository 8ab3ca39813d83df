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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use apiguard_model::feed::{Withdrawal, WithdrawalKind, WithdrawalReason};
use apiguard_model::threat::{IpPrefix, THREAT_SCHEMA_VERSION, ThreatReport, Trust};
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use crate::bus::Bus;
use crate::db::{Arg, DbRow, LOCK_FEED, LOCK_INDICATOR, Tx, list_placeholders, row_placeholders};
use crate::error::HubError;
use crate::pipeline::Pipeline;
use crate::store::{Store, StoredReport};
use crate::subscription::routing_key;
use crate::trust::{Evidence, Reporter, TrustSettings};

/// Feed rows left unpublished this long are published again by the sweep.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(30);
/// How often the feed log is pruned past `limits.feed_retention`.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
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
    "CREATE INDEX IF NOT EXISTS hub_feed_created ON hub_feed (created_at)",
    // `pruned_through`: the last position of the feed log pruned by retention.
    "CREATE TABLE IF NOT EXISTS hub_feed_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
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

/// Which part of the feed log is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedBounds {
    /// Every position up to this one was pruned (0: nothing was).
    pub pruned_through: i64,
    /// The latest `created_at` (ms) among the items pruned (0: nothing was, or the log was
    /// pruned by a version that did not record it): an item added after it was kept.
    pub pruned_added_ms: i64,
    /// The last position handed out (0: the log is empty and was never pruned).
    pub end: i64,
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
/// `fresh`: the promotion was created in this transaction from these live reporters
/// (participant, organisation), so nothing is linked to it yet and they are the ones to link.
async fn link_pending(
    tx: &mut Tx,
    promotion_id: &str,
    indicator: &str,
    settings: &TrustSettings,
    now: DateTime<Utc>,
    fresh: Option<Vec<(String, String)>>,
) -> Result<(), HubError> {
    let since = since_ms(settings, now);
    let (pending, linked) = match fresh {
        Some(reporters) => (reporters, Vec::new()),
        None => {
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
            let pairs = |rows: &[DbRow]| -> Result<Vec<(String, String)>, HubError> {
                rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
            };
            (pairs(&pending)?, pairs(&linked)?)
        }
    };
    if pending.is_empty() {
        return Ok(());
    }
    let mut linked_participants = HashSet::new();
    let mut organisations = BTreeSet::new();
    for (participant, organisation) in linked {
        linked_participants.insert(participant);
        organisations.insert(organisation);
    }
    let mut newcomers = Vec::new();
    for (participant, organisation) in pending {
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
    report.valid_until = DateTime::from_timestamp_millis(valid_until)
        .unwrap_or(report.valid_until)
        .max(report.last_seen);
    report.trust = Trust {
        score: (tally.mean_trust * 100.0).round().clamp(0.0, 100.0) as u8,
        corroborations: tally.organisations.max(1),
    };
    let live_reporters: Vec<(String, String)> = reporters
        .iter()
        .map(|r| (r.participant_id.clone(), r.organisation.clone()))
        .collect();
    let origins: Vec<String> = reporters.into_iter().map(|r| r.participant_id).collect();
    let origins_json = serde_json::to_string(&origins).expect("strings serialise");
    // The trigger's id, unless an earlier promotion took it (a renewal by the same
    // report): then a new one. The insert tells, rather than a query before it.
    let (body, key, id_text) = loop {
        report.id = id;
        report.validate().map_err(|e| corrupt("a promotion", e))?;
        let body = report.to_json();
        let key = routing_key(&report);
        let id_text = id.to_string();
        let inserted = tx
            .exec(
                "INSERT INTO hub_promotions (id, indicator, promoted_at, valid_until, routing_key, origins, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                &[
                    Arg::Text(&id_text),
                    Arg::Text(indicator),
                    Arg::Int(ms(now)),
                    Arg::Int(ms(report.valid_until)),
                    Arg::Text(&key),
                    Arg::Text(&origins_json),
                    Arg::Text(std::str::from_utf8(&body).expect("JSON is UTF-8")),
                ],
            )
            .await?;
        if inserted == 1 {
            break (body, key, id_text);
        }
        id = Uuid::now_v7();
    };
    link_pending(tx, &id_text, indicator, settings, now, Some(live_reporters)).await?;
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

/// [`Store::insert_sighting`] within a transaction.
async fn insert_sighting_in(
    tx: &mut Tx,
    report: &StoredReport,
    sighting: Option<&Sighting>,
    settings: &TrustSettings,
    now: DateTime<Utc>,
) -> Result<bool, HubError> {
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
        insert_sighting_row(tx, report, sighting, outcome).await?;
        if sighting.allowlisted {
            contradict_allowlisted_in(tx, report, sighting, settings, now).await?;
        }
    }
    Ok(inserted)
}

/// [`Store::evaluate`] within a transaction.
async fn evaluate_in(
    tx: &mut Tx,
    indicator: &str,
    settings: &TrustSettings,
    now: DateTime<Utc>,
    cause: Option<&str>,
) -> Result<Vec<FeedRow>, HubError> {
    tx.lock(LOCK_INDICATOR, indicator).await?;
    let state = PromotionState {
        active: active_promotion(tx, indicator).await?,
        quarantined: quarantined(tx, indicator, settings, now).await?,
    };
    decide_in(tx, indicator, state, settings, now, cause).await
}

/// What the store knows of an indicator's promotions, for a decision.
#[derive(Default)]
struct PromotionState {
    active: Option<ActivePromotion>,
    /// Withdrawn as a false positive (or allowlisted) within the window.
    quarantined: bool,
}

/// Decides on `indicator` given its promotion state (read under its lock): links the live
/// reports to the active promotion, or promotes it when they weigh enough and it is not
/// quarantined. The new feed rows.
async fn decide_in(
    tx: &mut Tx,
    indicator: &str,
    state: PromotionState,
    settings: &TrustSettings,
    now: DateTime<Utc>,
    cause: Option<&str>,
) -> Result<Vec<FeedRow>, HubError> {
    let row = if let Some(active) = state.active {
        link_pending(tx, &active.id, indicator, settings, now, None).await?;
        None
    } else if state.quarantined {
        None
    } else {
        promote_if_due(tx, indicator, settings, now, cause).await?
    };
    Ok(row.into_iter().collect())
}

/// Rows per multi-row statement (a report has 8 columns: 512 parameters, well within
/// SQLite's and PostgreSQL's limits).
const ROWS_PER_STATEMENT: usize = 64;

/// Inserts the batch's reports (multi-row, `ON CONFLICT (id) DO NOTHING`); the ids that
/// were new.
async fn insert_reports_in(
    tx: &mut Tx,
    entries: &[BatchEntry<'_>],
) -> Result<HashSet<Uuid>, HubError> {
    let mut inserted = HashSet::new();
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        let ids: Vec<String> = chunk.iter().map(|e| e.report.id.to_string()).collect();
        let mut args = Vec::with_capacity(chunk.len() * 8);
        for (entry, id) in chunk.iter().zip(&ids) {
            let report = entry.report;
            args.extend([
                Arg::Text(id),
                Arg::Text(&report.participant_id),
                Arg::OptText(report.ip.as_deref()),
                Arg::Text(&report.class),
                Arg::Text(&report.severity),
                Arg::Int(report.received_at_ms),
                Arg::Int(report.valid_until_ms),
                Arg::Text(&report.body),
            ]);
        }
        let rows = tx
            .fetch_built(
                format!(
                    "INSERT INTO hub_reports (id, participant_id, ip, class, severity, received_at, valid_until, body) \
                     VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                    row_placeholders(chunk.len(), 8, 1)
                ),
                &args,
            )
            .await?;
        for row in &rows {
            inserted.insert(parse_id(&row.text(0)?)?);
        }
    }
    Ok(inserted)
}

/// Inserts pending sightings of reports just stored (multi-row).
async fn insert_sightings_in(
    tx: &mut Tx,
    sightings: &[(&StoredReport, &Sighting)],
) -> Result<(), HubError> {
    for chunk in sightings.chunks(ROWS_PER_STATEMENT) {
        let ids: Vec<String> = chunk.iter().map(|(r, _)| r.id.to_string()).collect();
        let mut args = Vec::with_capacity(chunk.len() * 7);
        for ((report, sighting), id) in chunk.iter().zip(&ids) {
            args.extend([
                Arg::Text(id),
                Arg::Text(&report.participant_id),
                Arg::Text(&sighting.organisation),
                Arg::Text(&sighting.indicator),
                Arg::Int(report.received_at_ms),
                Arg::Int(report.valid_until_ms),
                Arg::Int(SightingOutcome::Pending as i64),
            ]);
        }
        tx.exec_built(
            format!(
                "INSERT INTO hub_sightings (report_id, participant_id, organisation, indicator, received_at, valid_until, outcome) \
                 VALUES {}",
                row_placeholders(chunk.len(), 7, 1)
            ),
            &args,
        )
        .await?;
    }
    Ok(())
}

/// The promotion state of each of `indicators`, read at once (their locks are held).
async fn promotion_states_in<'a>(
    tx: &mut Tx,
    indicators: &[&'a str],
    settings: &TrustSettings,
    now: DateTime<Utc>,
) -> Result<HashMap<&'a str, PromotionState>, HubError> {
    let mut states: HashMap<&str, PromotionState> = HashMap::new();
    let since = since_ms(settings, now);
    for chunk in indicators.chunks(ROWS_PER_STATEMENT * 4) {
        let mut args = vec![Arg::Int(since)];
        args.extend(chunk.iter().map(|i| Arg::Text(i)));
        let rows = tx
            .fetch_built(
                format!(
                    "SELECT indicator, id, routing_key, origins, body, withdrawn_at FROM hub_promotions \
                     WHERE indicator IN ({}) AND (withdrawn_at IS NULL OR \
                     (withdrawal_reason IN ('false_positive', 'allowlisted') AND withdrawn_at >= $1))",
                    list_placeholders(chunk.len(), 2)
                ),
                &args,
            )
            .await?;
        for row in &rows {
            let indicator = row.text(0)?;
            let Some(key) = chunk.iter().find(|i| **i == indicator) else {
                continue;
            };
            let state = states.entry(key).or_default();
            if row.opt_int(5)?.is_some() {
                state.quarantined = true;
            } else {
                state.active = Some(ActivePromotion {
                    id: row.text(1)?,
                    indicator,
                    routing_key: row.text(2)?,
                    origins: serde_json::from_str(&row.text(3)?)
                        .map_err(|e| corrupt("promotion origins", e))?,
                    body: row.text(4)?,
                });
            }
        }
    }
    Ok(states)
}

/// Inserts an allowlisted sighting; its reporter is contradicted once per indicator and
/// window.
async fn insert_allowlisted_in(
    tx: &mut Tx,
    report: &StoredReport,
    sighting: &Sighting,
    settings: &TrustSettings,
    now: DateTime<Utc>,
) -> Result<(), HubError> {
    insert_sighting_row(tx, report, sighting, SightingOutcome::Allowlisted).await?;
    contradict_allowlisted_in(tx, report, sighting, settings, now).await
}

/// One participant's sighting of an indicator, with what became of it.
async fn insert_sighting_row(
    tx: &mut Tx,
    report: &StoredReport,
    sighting: &Sighting,
    outcome: SightingOutcome,
) -> Result<(), HubError> {
    tx.exec(
        "INSERT INTO hub_sightings (report_id, participant_id, organisation, indicator, received_at, valid_until, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Arg::Text(&report.id.to_string()),
            Arg::Text(&report.participant_id),
            Arg::Text(&sighting.organisation),
            Arg::Text(&sighting.indicator),
            Arg::Int(report.received_at_ms),
            Arg::Int(report.valid_until_ms),
            Arg::Int(outcome as i64),
        ],
    )
    .await?;
    Ok(())
}

/// After an allowlisted sighting: contradicts its reporter unless it reported the same
/// allowlisted indicator earlier in the window.
async fn contradict_allowlisted_in(
    tx: &mut Tx,
    report: &StoredReport,
    sighting: &Sighting,
    settings: &TrustSettings,
    now: DateTime<Utc>,
) -> Result<(), HubError> {
    let earlier = tx
        .fetch(
            "SELECT COUNT(*) FROM hub_sightings WHERE participant_id = $1 AND indicator = $2 \
             AND outcome = 2 AND received_at >= $3 AND report_id <> $4",
            &[
                Arg::Text(&report.participant_id),
                Arg::Text(&sighting.indicator),
                Arg::Int(since_ms(settings, now)),
                Arg::Text(&report.id.to_string()),
            ],
        )
        .await?;
    if earlier.first().map(|r| r.int(0)).transpose()?.unwrap_or(0) == 0 {
        add_evidence(
            tx,
            &report.participant_id,
            0.0,
            settings.contradiction_penalty,
            now,
        )
        .await?;
    }
    Ok(())
}

/// [`promote_if_due`] for many indicators at once (none of them published or quarantined;
/// their locks and the feed lock held): the live reporters of all of them in one query,
/// the trigger of each due one in another, then the promotions, the links and the feed
/// rows as multi-row statements. `causes`: indicator and the report that causes its
/// decision; `batch`: the reports of the batch, so a trigger among them is not read back.
async fn promote_due_in(
    tx: &mut Tx,
    causes: &[(&str, Uuid)],
    batch: &HashMap<Uuid, &BatchEntry<'_>>,
    settings: &TrustSettings,
    now: DateTime<Utc>,
) -> Result<Vec<FeedRow>, HubError> {
    let since = since_ms(settings, now);
    // Live reporters, per indicator.
    let mut reporters: HashMap<String, (Vec<Reporter>, i64)> = HashMap::new();
    for chunk in causes.chunks(ROWS_PER_STATEMENT * 4) {
        let mut args = vec![Arg::Int(since), Arg::Int(ms(now))];
        args.extend(chunk.iter().map(|(i, _)| Arg::Text(i)));
        let rows = tx
            .fetch_built(
                format!(
                    "SELECT s.indicator, s.participant_id, MIN(s.organisation), \
                     COALESCE(MAX(t.positive), 0.0), COALESCE(MAX(t.negative), 0.0), MAX(s.valid_until) \
                     FROM hub_sightings s LEFT JOIN hub_trust t ON t.participant_id = s.participant_id \
                     WHERE s.indicator IN ({}) AND s.outcome IN (0, 1) AND s.received_at >= $1 \
                     AND s.valid_until > $2 GROUP BY s.indicator, s.participant_id",
                    list_placeholders(chunk.len(), 3)
                ),
                &args,
            )
            .await?;
        for row in &rows {
            let entry = reporters
                .entry(row.text(0)?)
                .or_insert_with(|| (Vec::new(), i64::MIN));
            entry.0.push(Reporter {
                participant_id: row.text(1)?,
                organisation: row.text(2)?,
                evidence: Evidence {
                    positive: row.real(3)?,
                    negative: row.real(4)?,
                },
            });
            entry.1 = entry.1.max(row.int(5)?);
        }
    }
    let mut due = Vec::new();
    for (indicator, cause) in causes {
        let Some((mut live, valid_until)) = reporters.remove(*indicator) else {
            continue;
        };
        live.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
        let tally = settings.tally(&live);
        if settings.promotes(&tally) {
            due.push((*indicator, *cause, live, valid_until, tally));
        }
    }
    if due.is_empty() {
        return Ok(Vec::new());
    }
    // The trigger of each: its most recent live report (see `promote_if_due`).
    let mut triggers: HashMap<String, Uuid> = HashMap::new();
    for chunk in due.chunks(ROWS_PER_STATEMENT * 4) {
        let mut args = vec![Arg::Int(since), Arg::Int(ms(now))];
        args.extend(chunk.iter().map(|d| Arg::Text(d.0)));
        let rows = tx
            .fetch_built(
                format!(
                    "SELECT v.column1, (SELECT s.report_id FROM hub_sightings s \
                     WHERE s.indicator = v.column1 AND s.outcome IN (0, 1) AND s.received_at >= $1 \
                     AND s.valid_until > $2 ORDER BY s.received_at DESC, s.report_id DESC LIMIT 1) \
                     FROM (VALUES {}) AS v",
                    row_placeholders(chunk.len(), 1, 3)
                ),
                &args,
            )
            .await?;
        for row in &rows {
            if let Some(id) = row.opt_text(1)? {
                triggers.insert(row.text(0)?, parse_id(&id)?);
            }
        }
    }
    let missing: Vec<String> = triggers
        .values()
        .filter(|id| !batch.contains_key(id))
        .map(Uuid::to_string)
        .collect();
    let mut stored_bodies: HashMap<Uuid, String> = HashMap::new();
    for chunk in missing.chunks(ROWS_PER_STATEMENT * 4) {
        let args: Vec<Arg<'_>> = chunk.iter().map(|id| Arg::Text(id)).collect();
        let rows = tx
            .fetch_built(
                format!(
                    "SELECT id, body FROM hub_reports WHERE id IN ({})",
                    list_placeholders(chunk.len(), 1)
                ),
                &args,
            )
            .await?;
        for row in &rows {
            stored_bodies.insert(parse_id(&row.text(0)?)?, row.text(1)?);
        }
    }
    // The promotions, as `promote_if_due` makes them.
    struct Promotion<'a> {
        indicator: &'a str,
        cause: Uuid,
        report: ThreatReport,
        live: Vec<Reporter>,
        origins_json: String,
        organisations: u32,
        weight: f64,
    }
    let mut promotions = Vec::with_capacity(due.len());
    for (indicator, cause, live, valid_until, tally) in due {
        let trigger = triggers
            .get(indicator)
            .ok_or_else(|| HubError::Store("a promoted indicator has no report".into()))?;
        let body = match batch.get(trigger) {
            Some(entry) => entry.report.body.as_str(),
            None => stored_bodies
                .get(trigger)
                .map(String::as_str)
                .ok_or_else(|| HubError::Store("a promoted indicator's report vanished".into()))?,
        };
        let mut report = match batch.get(trigger).and_then(|entry| entry.parsed) {
            Some(parsed) => parsed.clone(),
            None => ThreatReport::from_json(body.as_bytes())
                .map_err(|e| corrupt("a stored report", e))?,
        };
        report.id = *trigger;
        report.valid_until = DateTime::from_timestamp_millis(valid_until)
            .unwrap_or(report.valid_until)
            .max(report.last_seen);
        report.trust = Trust {
            score: (tally.mean_trust * 100.0).round().clamp(0.0, 100.0) as u8,
            corroborations: tally.organisations.max(1),
        };
        report.validate().map_err(|e| corrupt("a promotion", e))?;
        let origins: Vec<&str> = live.iter().map(|r| r.participant_id.as_str()).collect();
        promotions.push(Promotion {
            indicator,
            cause,
            report,
            origins_json: serde_json::to_string(&origins).expect("strings serialise"),
            live,
            organisations: tally.organisations,
            weight: tally.weight,
        });
    }
    // Inserted under the trigger's id, unless an earlier promotion took it (a renewal by
    // the same report): those go one by one under a new id.
    let texts: Vec<(String, String, String)> = promotions
        .iter()
        .map(|p| {
            let body = String::from_utf8(p.report.to_json()).expect("JSON is UTF-8");
            (p.report.id.to_string(), routing_key(&p.report), body)
        })
        .collect();
    let mut taken_ids: HashSet<String> = texts.iter().map(|t| t.0.clone()).collect();
    for (chunk_index, chunk) in promotions.chunks(ROWS_PER_STATEMENT).enumerate() {
        let offset = chunk_index * ROWS_PER_STATEMENT;
        let mut args = Vec::with_capacity(chunk.len() * 7);
        for (n, promotion) in chunk.iter().enumerate() {
            let (id, key, body) = &texts[offset + n];
            args.extend([
                Arg::Text(id),
                Arg::Text(promotion.indicator),
                Arg::Int(ms(now)),
                Arg::Int(ms(promotion.report.valid_until)),
                Arg::Text(key),
                Arg::Text(&promotion.origins_json),
                Arg::Text(body),
            ]);
        }
        let rows = tx
            .fetch_built(
                format!(
                    "INSERT INTO hub_promotions (id, indicator, promoted_at, valid_until, routing_key, origins, body) \
                     VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                    row_placeholders(chunk.len(), 7, 1)
                ),
                &args,
            )
            .await?;
        for row in &rows {
            taken_ids.remove(&row.text(0)?);
        }
    }
    let mut feed = Vec::with_capacity(promotions.len());
    for (promotion, (id, key, body)) in promotions.iter_mut().zip(texts) {
        if !taken_ids.contains(&id) {
            feed.push((promotion.report.id, key, body));
            continue;
        }
        // Its id was an earlier promotion's: a new one.
        loop {
            promotion.report.id = Uuid::now_v7();
            let body = String::from_utf8(promotion.report.to_json()).expect("JSON is UTF-8");
            let key = routing_key(&promotion.report);
            let id_text = promotion.report.id.to_string();
            let inserted = tx
                .exec(
                    "INSERT INTO hub_promotions (id, indicator, promoted_at, valid_until, routing_key, origins, body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                    &[
                        Arg::Text(&id_text),
                        Arg::Text(promotion.indicator),
                        Arg::Int(ms(now)),
                        Arg::Int(ms(promotion.report.valid_until)),
                        Arg::Text(&key),
                        Arg::Text(&promotion.origins_json),
                        Arg::Text(&body),
                    ],
                )
                .await?;
            if inserted == 1 {
                feed.push((promotion.report.id, key, body));
                break;
            }
        }
    }
    // Link the live sightings of each to its promotion (the active one: just made).
    let indicators: Vec<&str> = promotions.iter().map(|p| p.indicator).collect();
    for chunk in indicators.chunks(ROWS_PER_STATEMENT * 4) {
        let mut args = vec![Arg::Int(since), Arg::Int(ms(now))];
        args.extend(chunk.iter().map(|i| Arg::Text(i)));
        tx.exec_built(
            format!(
                "UPDATE hub_sightings SET outcome = 1, promotion_id = (SELECT p.id FROM hub_promotions p \
                 WHERE p.indicator = hub_sightings.indicator AND p.withdrawn_at IS NULL) \
                 WHERE indicator IN ({}) AND outcome IN (0, 1) AND received_at >= $1 AND valid_until > $2",
                list_placeholders(chunk.len(), 3)
            ),
            &args,
        )
        .await?;
    }
    // Credit each reporter of a promotion that involves another organisation than its own;
    // in one order for the whole batch, like every writer of `hub_trust`.
    let mut credits: Vec<&str> = Vec::new();
    for promotion in &promotions {
        let organisations: BTreeSet<&str> = promotion
            .live
            .iter()
            .map(|r| r.organisation.as_str())
            .collect();
        for reporter in &promotion.live {
            if organisations.iter().any(|o| *o != reporter.organisation) {
                credits.push(&reporter.participant_id);
            }
        }
    }
    credits.sort_unstable();
    for participant in credits {
        add_evidence(tx, participant, 1.0, 0.0, now).await?;
    }
    // The feed rows, in promotion order.
    let causes_text: Vec<String> = promotions.iter().map(|p| p.cause.to_string()).collect();
    let ids_text: Vec<String> = feed.iter().map(|(id, _, _)| id.to_string()).collect();
    let origins: Vec<Vec<String>> = promotions
        .iter()
        .map(|p| p.live.iter().map(|r| r.participant_id.clone()).collect())
        .collect();
    let mut seqs: HashMap<Uuid, i64> = HashMap::new();
    for (chunk_index, chunk) in feed.chunks(ROWS_PER_STATEMENT).enumerate() {
        let offset = chunk_index * ROWS_PER_STATEMENT;
        let mut args = Vec::with_capacity(chunk.len() * 7);
        for (n, (_, key, body)) in chunk.iter().enumerate() {
            let index = offset + n;
            args.extend([
                Arg::Text(&ids_text[index]),
                Arg::Text("report"),
                Arg::Text(key),
                Arg::Text(&promotions[index].origins_json),
                Arg::Text(body),
                Arg::Text(&causes_text[index]),
                Arg::Int(ms(now)),
            ]);
        }
        let rows = tx
            .fetch_built(
                format!(
                    "INSERT INTO hub_feed (id, kind, routing_key, origins, body, cause, created_at) \
                     VALUES {} RETURNING seq, id",
                    row_placeholders(chunk.len(), 7, 1)
                ),
                &args,
            )
            .await?;
        for row in &rows {
            seqs.insert(parse_id(&row.text(1)?)?, row.int(0)?);
        }
    }
    let mut out = Vec::with_capacity(feed.len());
    for (((id, key, body), origins), promotion) in feed.into_iter().zip(origins).zip(&promotions) {
        let seq = *seqs
            .get(&id)
            .ok_or_else(|| HubError::Store("the feed append returned no sequence".into()))?;
        info!(indicator = promotion.indicator, report = %id, organisations = promotion.organisations, weight = promotion.weight, "indicator promoted");
        out.push(FeedRow {
            seq,
            id,
            kind: "report".into(),
            routing_key: key,
            origins,
            body: body.into_bytes(),
        });
    }
    out.sort_by_key(|row| row.seq);
    Ok(out)
}

/// Whether a stored report is done (`None`: not stored).
async fn report_done_in(tx: &mut Tx, id: Uuid) -> Result<Option<bool>, HubError> {
    let rows = tx
        .fetch(
            "SELECT published FROM hub_reports WHERE id = $1",
            &[Arg::Text(&id.to_string())],
        )
        .await?;
    rows.first().map(|row| Ok(row.int(0)? != 0)).transpose()
}

/// The unpublished feed rows a report's processing appended.
async fn feed_rows_caused_by_in(tx: &mut Tx, report_id: Uuid) -> Result<Vec<FeedRow>, HubError> {
    let rows = tx
        .fetch(
            "SELECT seq, id, kind, routing_key, origins, body FROM hub_feed \
             WHERE cause = $1 AND published = 0 ORDER BY seq",
            &[Arg::Text(&report_id.to_string())],
        )
        .await?;
    rows.iter().map(feed_row).collect()
}

/// One report of a worker's batch, with its sighting.
#[derive(Debug, Clone, Copy)]
pub struct BatchEntry<'a> {
    pub report: &'a StoredReport,
    pub sighting: Option<&'a Sighting>,
    /// The report `report.body` holds, when the caller has it (a promotion made from it then
    /// does not parse the body again).
    pub parsed: Option<&'a ThreatReport>,
}

/// What a batch found for each report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    /// Stored now.
    New,
    /// Stored and done before: a redelivery.
    Done,
    /// Stored by an attempt that did not finish: decided again, its feed rows taken again.
    Unfinished,
}

/// The result of [`Store::store_batch`].
#[derive(Debug)]
pub struct StoredBatch {
    /// One per entry, in order.
    pub states: Vec<StoredState>,
    /// Committed feed rows to publish, in log order.
    pub rows: Vec<FeedRow>,
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
        let inserted = insert_sighting_in(&mut tx, report, sighting, settings, now).await?;
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
        let rows = evaluate_in(&mut tx, indicator, settings, now, cause).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Stores a worker's batch of reports in one transaction: the reports and their
    /// sightings (a report stored before is either done, or left unfinished by an attempt
    /// that did not complete, whose unpublished feed rows are taken again), then one
    /// decision per indicator, caused by the batch's last report of it. Set-based where it
    /// can be (multi-row inserts, one look at the promotions of all the batch's indicators):
    /// one transaction of a few statements per report instead of three transactions of a
    /// dozen is what lets the workers keep up with batched ingest.
    pub async fn store_batch(
        &self,
        entries: &[BatchEntry<'_>],
        settings: &TrustSettings,
        now: DateTime<Utc>,
    ) -> Result<StoredBatch, HubError> {
        let mut tx = self.begin().await?;
        // Lock order, as every writer: the indicators (sorted), then the feed log. Taking all
        // of them first means two batches (or a batch and the sweep) never wait on each other
        // in a cycle.
        let indicators: BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| e.sighting.filter(|s| !s.allowlisted))
            .map(|s| s.indicator.as_str())
            .collect();
        let sorted: Vec<&str> = indicators.iter().copied().collect();
        tx.lock_many(LOCK_INDICATOR, &sorted).await?;
        if !indicators.is_empty() {
            tx.lock(LOCK_FEED, "feed").await?;
        }
        let inserted = insert_reports_in(&mut tx, entries).await?;
        let mut states = Vec::with_capacity(entries.len());
        let mut rows = Vec::new();
        let mut new_sightings = Vec::new();
        for entry in entries {
            let state = if inserted.contains(&entry.report.id) {
                if let Some(sighting) = entry.sighting {
                    if sighting.allowlisted {
                        // Rare, and its contradiction depends on the reports before it.
                        insert_allowlisted_in(&mut tx, entry.report, sighting, settings, now)
                            .await?;
                    } else {
                        new_sightings.push((entry.report, sighting));
                    }
                }
                StoredState::New
            } else {
                match report_done_in(&mut tx, entry.report.id).await? {
                    None => {
                        return Err(HubError::Store(format!(
                            "report {} is neither new nor stored",
                            entry.report.id
                        )));
                    }
                    Some(true) => StoredState::Done,
                    Some(false) => {
                        rows.extend(feed_rows_caused_by_in(&mut tx, entry.report.id).await?);
                        StoredState::Unfinished
                    }
                }
            };
            states.push(state);
        }
        insert_sightings_in(&mut tx, &new_sightings).await?;
        // Indicator -> the report that causes its decision, in first-seen order.
        let mut causes: Vec<(&str, Uuid)> = Vec::new();
        for (entry, state) in entries.iter().zip(&states) {
            if *state != StoredState::Done
                && let Some(sighting) = entry.sighting.filter(|s| !s.allowlisted)
            {
                match causes
                    .iter_mut()
                    .find(|(indicator, _)| *indicator == sighting.indicator)
                {
                    Some(cause) => cause.1 = entry.report.id,
                    None => causes.push((sighting.indicator.as_str(), entry.report.id)),
                }
            }
        }
        let decided: Vec<&str> = causes.iter().map(|(indicator, _)| *indicator).collect();
        let mut known = promotion_states_in(&mut tx, &decided, settings, now).await?;
        // Indicators not published now are decided together (the common case: a new
        // address); those published get their new reports linked one by one.
        let mut candidates = Vec::new();
        for (indicator, cause) in causes {
            let state = known.remove(indicator).unwrap_or_default();
            if state.active.is_none() {
                if !state.quarantined {
                    candidates.push((indicator, cause));
                }
                continue;
            }
            rows.extend(
                decide_in(
                    &mut tx,
                    indicator,
                    state,
                    settings,
                    now,
                    Some(&cause.to_string()),
                )
                .await?,
            );
        }
        let batch: HashMap<Uuid, &BatchEntry<'_>> =
            entries.iter().map(|e| (e.report.id, e)).collect();
        rows.extend(promote_due_in(&mut tx, &candidates, &batch, settings, now).await?);
        tx.commit().await?;
        Ok(StoredBatch { states, rows })
    }

    /// Marks feed rows published and reports done, in one transaction.
    pub async fn mark_batch_published(
        &self,
        reports: &[Uuid],
        rows: &[FeedRow],
    ) -> Result<(), HubError> {
        if reports.is_empty() && rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // Rows appended under the feed lock have consecutive positions: mark each run of
        // them with one statement.
        let mut seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut index = 0;
        while index < seqs.len() {
            let first = seqs[index];
            let mut last = first;
            while index + 1 < seqs.len() && seqs[index + 1] == last + 1 {
                index += 1;
                last = seqs[index];
            }
            tx.exec(
                "UPDATE hub_feed SET published = 1 WHERE seq >= $1 AND seq <= $2",
                &[Arg::Int(first), Arg::Int(last)],
            )
            .await?;
            index += 1;
        }
        let at = ms(Utc::now());
        for chunk in reports.chunks(ROWS_PER_STATEMENT * 4) {
            let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            let mut args = vec![Arg::Int(at)];
            args.extend(ids.iter().map(|id| Arg::Text(id)));
            tx.exec_built(
                format!(
                    "UPDATE hub_reports SET published = 1, published_at = COALESCE(published_at, $1) \
                     WHERE id IN ({})",
                    list_placeholders(ids.len(), 2)
                ),
                &args,
            )
            .await?;
        }
        tx.commit().await
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

    /// The retained range of the feed log.
    pub async fn feed_bounds(&self) -> Result<FeedBounds, HubError> {
        let rows = self
            .fetch(
                "SELECT COALESCE((SELECT MAX(seq) FROM hub_feed), 0), \
                 COALESCE((SELECT value FROM hub_feed_meta WHERE name = 'pruned_through'), 0), \
                 COALESCE((SELECT value FROM hub_feed_meta WHERE name = 'pruned_added'), 0)",
                &[],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| HubError::Store("the feed bounds query returned nothing".into()))?;
        let (last, pruned_through) = (row.int(0)?, row.int(1)?);
        Ok(FeedBounds {
            pruned_through,
            pruned_added_ms: row.int(2)?,
            end: last.max(pruned_through),
        })
    }

    /// Prunes the feed log's items appended before `before` (a prefix of the log: every
    /// position up to the last such item), remembering how far it pruned. How many went.
    pub async fn prune_feed(&self, before: DateTime<Utc>) -> Result<u64, HubError> {
        let mut tx = self.begin().await?;
        tx.lock(LOCK_FEED, "feed").await?;
        let rows = tx
            .fetch(
                "SELECT COALESCE(MAX(seq), 0) FROM hub_feed WHERE created_at < $1",
                &[Arg::Int(ms(before))],
            )
            .await?;
        let through = rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
        if through == 0 {
            return Ok(0);
        }
        // The log is pruned by position, so an item appended with an earlier stamp than one
        // before it goes too: the horizon in time is the latest stamp pruned.
        let rows = tx
            .fetch(
                "SELECT COALESCE(MAX(created_at), 0) FROM hub_feed WHERE seq <= $1",
                &[Arg::Int(through)],
            )
            .await?;
        let added = rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
        let pruned = tx
            .exec("DELETE FROM hub_feed WHERE seq <= $1", &[Arg::Int(through)])
            .await?;
        for (name, value) in [("pruned_through", through), ("pruned_added", added)] {
            tx.exec(
                "INSERT INTO hub_feed_meta (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = CASE WHEN excluded.value > hub_feed_meta.value \
                 THEN excluded.value ELSE hub_feed_meta.value END",
                &[Arg::Text(name), Arg::Int(value)],
            )
            .await?;
        }
        tx.commit().await?;
        if pruned > 0 {
            info!(pruned, through, "pruned the feed log past its retention");
        }
        Ok(pruned)
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

    /// Every participant's trust record, by participant id (a participant without evidence
    /// has none: it has the default).
    pub async fn trust_records(
        &self,
    ) -> Result<std::collections::HashMap<String, TrustRecord>, HubError> {
        let rows = self
            .fetch(
                "SELECT participant_id, positive, negative, corroborated, contradicted FROM hub_trust",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.text(0)?,
                    TrustRecord {
                        evidence: Evidence {
                            positive: row.real(1)?,
                            negative: row.real(2)?,
                        },
                        corroborated: row.int(3)?,
                        contradicted: row.int(4)?,
                    },
                ))
            })
            .collect()
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
    let mut last_prune: Option<std::time::Instant> = None;
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
        bus.release_expired_feed().await;
        if let Err(error) = sweep_once(&pipeline, &bus, Utc::now()).await {
            warn!(%error, "the trust sweep failed; retrying at the next interval");
        }
        if let Some(retention) = pipeline.settings.feed_retention
            && last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL)
        {
            last_prune = Some(std::time::Instant::now());
            let before = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
            if let Err(error) = pipeline.store.prune_feed(before).await {
                warn!(%error, "could not prune the feed log; retrying later");
            }
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
