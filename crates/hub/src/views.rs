//! Pull views of the published feed, read from the store by a cursor each consumer keeps:
//! REST (`GET /v1/reports`), its STIX 2.1 twin (`GET /v1/stix`), and the TAXII 2.1 server
//! (see [`crate::taxii`]). Also the admin listing of participants.
//!
//! Only published reports are visible: the report items of the feed log (`hub_feed`), which
//! hold what the trust model promoted (canonical and anonymised: never a participant's raw
//! report or an unpromoted sighting), ordered by when they were published (the log's
//! `created_at`, then `seq`). A report is
//! shown once it has been published for [`SETTLE`]: reports are stamped before their
//! transaction commits, so without it a consumer reading at the wrong moment could move its
//! cursor past a report that commits a moment later with an earlier stamp.
//!
//! | method and path | who | what |
//! | --- | --- | --- |
//! | `GET /v1/reports?after=CURSOR&limit=N` | participant | published reports after the cursor: `{"reports", "cursor"}` |
//! | `GET /v1/stix?after=CURSOR&limit=N` | participant | the same page as a STIX 2.1 bundle; the next cursor in `X-Apiguard-Cursor` |
//! | `GET /admin/participants` | admin | every participant with its credentials (never keys) and trust |
//! | `GET /admin/participants/{id}/trust` | admin | one participant's trust: score, weight, corroborations, contradictions |

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use apiguard_model::threat::ThreatReport;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::HubState;
use crate::credentials::{Caller, CertMatch};
use crate::error::HubError;
use crate::feed::TrustRecord;
use crate::store::{Store, execute, fetch_all};

/// How long a published report waits before the pull views show it.
pub const SETTLE: chrono::Duration = chrono::Duration::seconds(2);

/// Where a consumer is in the published feed: `PUBLISHED_AT_MS-SEQ`. Opaque to consumers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub published_at: i64,
    pub seq: i64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.published_at, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            HubError::Invalid(format!(
                "`{}` is not a cursor: pass back the `cursor` of a previous answer, or 0",
                s.chars().take(64).collect::<String>()
            ))
        };
        let s = s.trim();
        if s.is_empty() || s == "0" {
            return Ok(Cursor::default());
        }
        let (at, seq) = s.split_once('-').ok_or_else(bad)?;
        let cursor = Cursor {
            published_at: at.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        };
        if cursor.published_at < 0 || cursor.seq < 0 {
            return Err(bad());
        }
        Ok(cursor)
    }
}

/// A published report and where it is in the feed.
#[derive(Debug, Clone)]
pub struct Published {
    pub cursor: Cursor,
    pub report: ThreatReport,
}

/// Adds `published_at` to stores made before it existed, and its index.
pub(crate) async fn migrate(store: &Store) -> Result<(), HubError> {
    match store {
        Store::Sqlite(pool) => {
            let present: i64 = sqlx::query(
                "SELECT COUNT(*) FROM pragma_table_info('hub_reports') WHERE name = 'published_at'",
            )
            .fetch_one(pool)
            .await?
            .try_get(0)?;
            if present == 0 {
                sqlx::query("ALTER TABLE hub_reports ADD COLUMN published_at BIGINT")
                    .execute(pool)
                    .await?;
            }
        }
        Store::Postgres(pool) => {
            sqlx::query("ALTER TABLE hub_reports ADD COLUMN IF NOT EXISTS published_at BIGINT")
                .execute(pool)
                .await?;
        }
    }
    execute!(
        store,
        "CREATE INDEX IF NOT EXISTS hub_reports_published ON hub_reports (published_at, seq)"
    )?;
    execute!(
        store,
        "UPDATE hub_reports SET published_at = received_at \
         WHERE published = 1 AND published_at IS NULL"
    )?;
    Ok(())
}

/// A store made before the trust model published every report at once and kept no feed
/// log: its published reports become the log's first items, so the pull views keep showing
/// them after the upgrade. Runs only on such a store (no sightings, an empty log); on any
/// other, `hub_reports.published` means "processed", not "promoted".
pub(crate) async fn backfill_legacy_feed(store: &Store) -> Result<(), HubError> {
    let counts = fetch_all!(
        store,
        "SELECT (SELECT COUNT(*) FROM hub_feed) + (SELECT COUNT(*) FROM hub_sightings)",
        [],
        |row| row.try_get::<i64, _>(0)
    )?;
    if counts.first().copied().unwrap_or(0) > 0 {
        return Ok(());
    }
    let copied = execute!(
        store,
        "INSERT INTO hub_feed (id, kind, routing_key, origins, body, cause, created_at, published) \
         SELECT id, 'report', '', '[]', body, NULL, COALESCE(published_at, received_at), 1 \
         FROM hub_reports WHERE published = 1 ORDER BY COALESCE(published_at, received_at), seq"
    )?;
    if copied > 0 {
        tracing::info!(
            copied,
            "reports published before the feed log were added to it"
        );
    }
    Ok(())
}

fn parse_rows(rows: Vec<(i64, i64, String)>) -> Vec<Published> {
    rows.into_iter()
        .filter_map(
            |(seq, published_at, body)| match ThreatReport::from_json(body.as_bytes()) {
                Ok(report) => Some(Published {
                    cursor: Cursor { published_at, seq },
                    report,
                }),
                Err(error) => {
                    tracing::warn!(seq, %error, "skipping an unreadable stored report");
                    None
                }
            },
        )
        .collect()
}

/// Published reports after `after`, oldest first, that have settled.
pub async fn published_after(
    store: &Store,
    after: Cursor,
    limit: u32,
) -> Result<Vec<Published>, HubError> {
    let settled = (chrono::Utc::now() - SETTLE).timestamp_millis();
    let rows = fetch_all!(
        store,
        "SELECT seq, created_at, body FROM hub_feed \
         WHERE kind = 'report' AND created_at <= $1 \
           AND (created_at > $2 OR (created_at = $2 AND seq > $3)) \
         ORDER BY created_at, seq LIMIT $4",
        [settled, after.published_at, after.seq, i64::from(limit)],
        |row| Ok((
            row.try_get::<i64, _>(0)?,
            row.try_get::<i64, _>(1)?,
            row.try_get::<String, _>(2)?
        ))
    )?;
    Ok(parse_rows(rows))
}

/// Refuses a cursor whose next items were pruned from the feed log: it read up to position
/// `after.seq`, and positions up to `pruned_through` are gone, so carrying on would skip
/// them without a word. (A pruned position may have held a withdrawal, which these views do
/// not show; refusing then too is the price of not keeping what was pruned.) The default
/// cursor means "from the oldest item kept" and is always accepted.
pub async fn check_not_pruned(store: &Store, after: Cursor) -> Result<(), HubError> {
    if after == Cursor::default() {
        return Ok(());
    }
    let bounds = store.feed_bounds().await?;
    if after.seq < bounds.pruned_through {
        return Err(HubError::CursorExpired {
            message: format!(
                "cursor `{after}` is older than the feed log kept: the items up to position {} \
                 were pruned (limits.feed_retention). Start again from after=0, the oldest item \
                 kept (the items in between are missed)",
                bounds.pruned_through
            ),
            pruned_through: bounds.pruned_through,
        });
    }
    Ok(())
}

/// The published reports among `ids`.
pub async fn published_by_ids(store: &Store, ids: &[Uuid]) -> Result<Vec<Published>, HubError> {
    let mut out = Vec::new();
    for id in ids {
        let rows = fetch_all!(
            store,
            "SELECT seq, created_at, body FROM hub_feed WHERE id = $1 AND kind = 'report'",
            [id.to_string()],
            |row| Ok((
                row.try_get::<i64, _>(0)?,
                row.try_get::<i64, _>(1)?,
                row.try_get::<String, _>(2)?
            ))
        )?;
        out.extend(parse_rows(rows));
    }
    Ok(out)
}

/// The first published report of the pseudonym whose hex digits match `pattern` (`_` for
/// an unknown digit), if any. A scan of the reports' bodies (no index): it serves only
/// TAXII's get-object of an identity.
pub async fn published_by_reporter(
    store: &Store,
    pattern: &str,
) -> Result<Option<Published>, HubError> {
    if pattern.len() != 32 || !pattern.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_') {
        return Ok(None);
    }
    let like = format!("%\"reporter\":\"anon-{pattern}\"%");
    let rows = fetch_all!(
        store,
        "SELECT seq, created_at, body FROM hub_feed \
         WHERE kind = 'report' AND body LIKE $1 ORDER BY created_at, seq LIMIT 1",
        [like],
        |row| Ok((
            row.try_get::<i64, _>(0)?,
            row.try_get::<i64, _>(1)?,
            row.try_get::<String, _>(2)?
        ))
    )?;
    Ok(parse_rows(rows).into_iter().next())
}

/// The routes of this module.
pub fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route("/v1/reports", get(reports))
        .route("/v1/stix", get(stix_bundle))
        .route("/admin/participants", get(participants))
        .route("/admin/participants/{id}/trust", get(participant_trust))
        .with_state(state)
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<u32>,
}

/// One page for the caller: the reports its subscription accepts, and the cursor to resume
/// from (past every report read, matching or not).
async fn page(
    state: &HubState,
    caller: &Caller,
    query: &PageQuery,
) -> Result<(Vec<ThreatReport>, Cursor), HubError> {
    let entry = caller.authenticate(state).await?;
    let after: Cursor = query.after.as_deref().unwrap_or("0").parse()?;
    let max = u32::try_from(state.settings.limits.max_feed).unwrap_or(u32::MAX);
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(HubError::Invalid(format!("limit is 1 to {max}")));
    }
    check_not_pruned(&state.pipeline.store, after).await?;
    let rows = published_after(&state.pipeline.store, after, limit).await?;
    let cursor = rows.last().map_or(after, |r| r.cursor);
    let subscription = &entry.participant.subscription;
    let reports = rows
        .into_iter()
        .map(|r| r.report)
        .filter(|report| subscription.matches(report))
        .collect();
    Ok((reports, cursor))
}

async fn reports(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<Response, HubError> {
    let (reports, cursor) = page(&state, &caller, &query).await?;
    Ok(axum::Json(json!({ "reports": reports, "cursor": cursor.to_string() })).into_response())
}

async fn stix_bundle(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<Response, HubError> {
    let (reports, cursor) = page(&state, &caller, &query).await?;
    let body = serde_json::to_vec(&crate::stix::bundle(&reports))
        .map_err(|e| HubError::Internal(e.to_string()))?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::stix::MEDIA_TYPE),
    );
    if let Ok(value) = HeaderValue::from_str(&cursor.to_string()) {
        headers.insert("x-apiguard-cursor", value);
    }
    Ok(response)
}

async fn participants(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    crate::rest::require_admin(&state, &headers)?;
    let list = crate::credentials::list(&state.pipeline.store).await?;
    let trust = state.pipeline.store.trust_records().await?;
    let participants: Vec<Value> = list
        .into_iter()
        .map(|p| {
            let record = trust.get(&p.participant.id).copied().unwrap_or_default();
            json!({
                "id": p.participant.id,
                "name": p.participant.name,
                "organisation": p.participant.organisation,
                "own_networks": p.participant.own_networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "auth": p.mode.as_str(),
                "api_keys": p.keys,
                "certificates": p.certs.iter().map(|c| match c {
                    CertMatch::Sha256(v) => json!({"sha256": v}),
                    CertMatch::Subject(v) => json!({"subject": v}),
                }).collect::<Vec<_>>(),
                "trust": trust_json(&state, &record),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "participants": participants })).into_response())
}

/// A participant's trust as the admin API shows it (docs/hub.md, "Trust model").
fn trust_json(state: &HubState, record: &TrustRecord) -> Value {
    let settings = &state.settings.trust;
    let score = settings.score(record.evidence);
    json!({
        "score": (score * 1000.0).round() / 1000.0,
        "weight": (settings.weight(score) * 1000.0).round() / 1000.0,
        "corroborations": record.corroborated,
        "contradictions": record.contradicted,
        "evidence": {
            "positive": record.evidence.positive,
            "negative": record.evidence.negative,
        },
    })
}

/// `GET /admin/participants/{id}/trust`: one participant's trust score, the weight its
/// reports carry, and the evidence behind them.
async fn participant_trust(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HubError> {
    crate::rest::require_admin(&state, &headers)?;
    let store = &state.pipeline.store;
    let Some(participant) = store.participant(&id).await? else {
        return Err(HubError::NotFound(format!("no participant `{id}`")));
    };
    let record = store.trust_record(&participant.id).await?;
    Ok(axum::Json(json!({
        "id": participant.id,
        "name": participant.name,
        "organisation": participant.organisation,
        "trust": trust_json(&state, &record),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor {
            published_at: 1_700_000_000_123,
            seq: 42,
        };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        assert_eq!("0".parse::<Cursor>().unwrap(), Cursor::default());
        for bad in ["x", "1-", "-1-2", "1-2-3", "99999999999999999999-1"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }
}
