//! The GraphQL front door at `/graphql` (async-graphql): the mutations `report` and
//! `reportBatch` take GraphQL's natural input (an input object, enums for severity and
//! action) and follow the same path as REST; the query `feed(after, limit)` pages through the
//! feed log (promotions and withdrawals) the participant's subscription accepts, by a cursor
//! the consumer keeps; the subscription `feed(after)` delivers the same items live over a
//! WebSocket (graphql-transport-ws, see `ws.rs`).
//!
//! The participant authenticates with `Authorization: Bearer KEY` (401 otherwise; over the
//! WebSocket, in the header of the upgrade or the `connection_init` payload). Errors of the
//! operation come back as GraphQL errors with `extensions.code`: `BAD_USER_INPUT`,
//! `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, `INTERNAL`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, Json, Object, Schema, SimpleObject,
    Subscription,
};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use uuid::Uuid;

use crate::HubState;
use crate::error::HubError;
use crate::feed::FeedRow;
use crate::normalise::RawReport;
use crate::pipeline::ParticipantEntry;

/// Deepest query accepted.
const MAX_DEPTH: usize = 8;
/// Most expensive query accepted (async-graphql's complexity: one per field by default).
const MAX_COMPLEXITY: usize = 256;
/// Most reports one `feed` page returns.
const MAX_PAGE: i64 = 500;

/// How often a live subscription looks at the feed log when nothing woke it (items
/// appended by another hub process).
const SUBSCRIPTION_POLL: Duration = Duration::from_secs(1);

/// The hub's GraphQL schema.
pub type HubSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema over the hub's state.
pub fn schema(state: Arc<HubState>) -> HubSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

fn gql_error(error: HubError) -> async_graphql::Error {
    let code = match &error {
        HubError::Invalid(_) | HubError::Config(_) => "BAD_USER_INPUT",
        HubError::Unauthenticated(_) => "UNAUTHENTICATED",
        HubError::Forbidden(_) => "FORBIDDEN",
        HubError::NotFound(_) => "NOT_FOUND",
        HubError::Conflict(_) => "CONFLICT",
        HubError::CursorExpired { .. } => crate::error::FEED_CURSOR_EXPIRED,
        HubError::Overloaded(_) => "RESOURCE_EXHAUSTED",
        HubError::BrokerUnavailable(_) => "UNAVAILABLE",
        HubError::Store(_) | HubError::Internal(_) => "INTERNAL",
    };
    async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code))
}

/// Refuses a cursor the feed log cannot continue from: one before the pruned part (the
/// items after it are gone: `FEED_CURSOR_EXPIRED`, with `oldest`, the position to continue
/// from knowingly), or one past the log's end (it comes from another or a reset store:
/// `FEED_CURSOR_UNKNOWN`). 0 always means "from the oldest item kept".
async fn check_cursor(state: &HubState, after: i64) -> async_graphql::Result<()> {
    if after < 0 {
        return Err(gql_error(HubError::Invalid("after is not negative".into())));
    }
    if after == 0 {
        return Ok(());
    }
    let bounds = state
        .pipeline
        .store
        .feed_bounds()
        .await
        .map_err(gql_error)?;
    if after < bounds.pruned_through {
        let oldest = bounds.pruned_through;
        return Err(async_graphql::Error::new(format!(
            "cursor {after} is older than the feed log kept: items up to {oldest} were pruned \
             (limits.feed_retention). Continue from after: {oldest} (those items are missed) \
             or start again from after: 0"
        ))
        .extend_with(|_, e| {
            e.set("code", "FEED_CURSOR_EXPIRED");
            e.set("oldest", oldest);
        }));
    }
    if after > bounds.end {
        let end = bounds.end;
        return Err(async_graphql::Error::new(format!(
            "cursor {after} is past the end of the feed log ({end}): it comes from another \
             store or from before the store was reset. Start again from after: 0"
        ))
        .extend_with(|_, e| {
            e.set("code", "FEED_CURSOR_UNKNOWN");
            e.set("end", end);
        }));
    }
    Ok(())
}

fn parts<'a>(ctx: &Context<'a>) -> (&'a Arc<HubState>, &'a Arc<ParticipantEntry>) {
    // Both are always attached: the state by `schema()`, the participant by `handle()`.
    (
        ctx.data_unchecked::<Arc<HubState>>(),
        ctx.data_unchecked::<Arc<ParticipantEntry>>(),
    )
}

/// Severity, as a GraphQL enum.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// What the reporter did, as a GraphQL enum.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Blocked,
    Challenged,
    RateLimited,
    Monitored,
}

/// A threat report as GraphQL takes it. Field meanings as in REST (docs/hub.md).
#[derive(InputObject)]
pub struct ReportInput {
    /// The reporter's own id (a UUID) for safe retries.
    pub id: Option<ID>,
    /// The attack class, such as `sqli`.
    pub attack: String,
    pub severity: Option<Severity>,
    /// 0 to 100.
    pub confidence: Option<i32>,
    /// IP, IP:port or CIDR prefix.
    pub source_ip: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub route: Option<String>,
    /// The reporter's own host name, used only to scrub it.
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// Hashed by the hub, never stored or shared.
    pub payload: Option<String>,
    pub payload_sha256: Option<String>,
    pub tls_ja3: Option<String>,
    pub tls_ja4: Option<String>,
    pub action: Option<Action>,
    /// RFC 3339.
    pub first_seen: Option<String>,
    /// RFC 3339.
    pub last_seen: Option<String>,
    pub count: Option<i64>,
    pub ttl_seconds: Option<i64>,
    /// Never shared.
    pub description: Option<String>,
}

fn time(field: &str, text: Option<String>) -> Result<Option<DateTime<Utc>>, HubError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| HubError::Invalid(format!("{field}: not RFC 3339: {e}")))
    })
    .transpose()
}

fn non_negative(field: &str, value: Option<i64>) -> Result<Option<u64>, HubError> {
    value
        .map(|v| u64::try_from(v).map_err(|_| HubError::Invalid(format!("{field} is negative"))))
        .transpose()
}

impl TryFrom<ReportInput> for RawReport {
    type Error = HubError;

    fn try_from(input: ReportInput) -> Result<Self, HubError> {
        let id = input
            .id
            .map(|id| {
                Uuid::parse_str(id.as_str())
                    .map_err(|_| HubError::Invalid(format!("id: `{}` is not a UUID", id.as_str())))
            })
            .transpose()?;
        let confidence = input
            .confidence
            .map(|c| {
                u8::try_from(c)
                    .ok()
                    .filter(|c| *c <= 100)
                    .ok_or_else(|| HubError::Invalid(format!("confidence is 0 to 100, not {c}")))
            })
            .transpose()?;
        Ok(RawReport {
            id,
            attack: input.attack,
            severity: input.severity.map(|s| {
                match s {
                    Severity::Low => "low",
                    Severity::Medium => "medium",
                    Severity::High => "high",
                    Severity::Critical => "critical",
                }
                .to_owned()
            }),
            confidence,
            source_ip: input.source_ip,
            method: input.method,
            path: input.path,
            route: input.route,
            host: input.host,
            user_agent: input.user_agent,
            headers: None,
            payload: input.payload,
            payload_sha256: input.payload_sha256,
            tls_ja3: input.tls_ja3,
            tls_ja4: input.tls_ja4,
            action: input.action.map(|a| {
                match a {
                    Action::Blocked => "blocked",
                    Action::Challenged => "challenged",
                    Action::RateLimited => "rate_limited",
                    Action::Monitored => "monitored",
                }
                .to_owned()
            }),
            first_seen: time("firstSeen", input.first_seen)?,
            last_seen: time("lastSeen", input.last_seen)?,
            count: non_negative("count", input.count)?,
            ttl_seconds: non_negative("ttlSeconds", input.ttl_seconds)?,
            description: input.description,
        })
    }
}

/// The acknowledgement of one report.
#[derive(SimpleObject)]
pub struct ReportAck {
    /// The canonical report id.
    pub id: ID,
    /// `accepted`, or `refused` (see `error`).
    pub status: String,
    pub error: Option<String>,
}

/// One page of the stored feed.
#[derive(SimpleObject)]
pub struct FeedPage {
    /// Feed items, oldest first: canonical reports (schemas/threat-report.schema.json) and
    /// withdrawals (`"kind": "withdrawal"`, schemas/withdrawal.schema.json).
    pub reports: Vec<Json<serde_json::Value>>,
    /// Pass as `after` to get the next page.
    pub cursor: i64,
}

/// One live feed item.
#[derive(SimpleObject, Clone)]
pub struct FeedEvent {
    /// The item's position in the feed log: pass it as `after` to resume after it.
    pub cursor: i64,
    /// `report` or `withdrawal`.
    pub kind: String,
    /// The item (JSON): a canonical report or a withdrawal.
    pub item: Json<serde_json::Value>,
}

/// Whether the participant's feed carries this item: its subscription accepts it and it is
/// not one of its reporters (what the broker's bindings and the origins header do for the
/// participant's queue).
fn delivered_to(entry: &ParticipantEntry, row: &FeedRow) -> bool {
    !row.is_from(&entry.participant.id)
        && entry.participant.subscription.matches_key(&row.routing_key)
}

fn event(row: FeedRow) -> Option<FeedEvent> {
    let item = serde_json::from_slice(&row.body).ok()?;
    Some(FeedEvent {
        cursor: row.seq,
        kind: row.kind,
        item: Json(item),
    })
}

pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Reports one threat; answers once the broker confirmed it.
    async fn report(
        &self,
        ctx: &Context<'_>,
        input: ReportInput,
    ) -> async_graphql::Result<ReportAck> {
        let (state, entry) = parts(ctx);
        let raw = RawReport::try_from(input).map_err(gql_error)?;
        let id = crate::ingest::ingest(state, entry, raw, "graphql")
            .await
            .map_err(gql_error)?;
        Ok(ReportAck {
            id: ID(id.to_string()),
            status: "accepted".into(),
            error: None,
        })
    }

    /// Reports several threats: all are validated first (one invalid input refuses all,
    /// naming its index), then each is queued.
    async fn report_batch(
        &self,
        ctx: &Context<'_>,
        inputs: Vec<ReportInput>,
    ) -> async_graphql::Result<Vec<ReportAck>> {
        let (state, entry) = parts(ctx);
        crate::ingest::check_batch_size(state, inputs.len()).map_err(gql_error)?;
        let raws = inputs
            .into_iter()
            .enumerate()
            .map(|(index, input)| {
                RawReport::try_from(input)
                    .map_err(|e| HubError::Invalid(format!("inputs[{index}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(gql_error)?;
        let results = crate::ingest::ingest_batch(state, entry, raws, "graphql")
            .await
            .map_err(gql_error)?;
        Ok(results
            .into_iter()
            .map(|(id, result)| ReportAck {
                id: ID(id.to_string()),
                status: if result.is_ok() {
                    "accepted"
                } else {
                    "refused"
                }
                .into(),
                error: result.err().map(|e| e.to_string()),
            })
            .collect())
    }
}

pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Stored reports after `after` (0 for the oldest kept) that the caller's subscription
    /// accepts, oldest first; `cursor` continues the walk. A cursor older than what the
    /// log keeps is refused with `FEED_CURSOR_EXPIRED`, one past its end with
    /// `FEED_CURSOR_UNKNOWN`.
    async fn feed(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] after: i64,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<FeedPage> {
        let (state, entry) = parts(ctx);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(gql_error(HubError::Invalid(format!(
                "limit is 1 to {MAX_PAGE}"
            ))));
        }
        check_cursor(state, after).await?;
        let rows = state
            .pipeline
            .store
            .feed_after(after, u32::try_from(limit).unwrap_or(100))
            .await
            .map_err(gql_error)?;
        let cursor = rows.last().map_or(after, |row| row.seq);
        let reports = rows
            .into_iter()
            .filter(|row| delivered_to(entry, row))
            .filter_map(|row| event(row).map(|e| e.item))
            .collect();
        Ok(FeedPage { reports, cursor })
    }
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Feed items as they are published: exactly what the caller's feed carries (its
    /// subscription's filter, never its own reports), in feed-log order. Without `after`,
    /// from now on; with it, first every item after that cursor (to resume after a
    /// disconnection without a gap).
    async fn feed(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = FeedEvent> + use<>> {
        let (state, entry) = parts(ctx);
        let cursor = match after {
            Some(after) => {
                check_cursor(state, after).await?;
                after
            }
            None => state.pipeline.store.feed_end().await.map_err(gql_error)?,
        };
        Ok(live_feed(state.clone(), entry.clone(), cursor))
    }
}

struct Follow {
    state: Arc<HubState>,
    entry: Arc<ParticipantEntry>,
    cursor: i64,
    ready: VecDeque<FeedEvent>,
}

/// Follows the feed log from `cursor`: reads what is there, then waits to be woken by an
/// append of this process or for the poll interval.
fn live_feed(
    state: Arc<HubState>,
    entry: Arc<ParticipantEntry>,
    cursor: i64,
) -> impl Stream<Item = FeedEvent> {
    let follow = Follow {
        state,
        entry,
        cursor,
        ready: VecDeque::new(),
    };
    futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(event) = follow.ready.pop_front() {
                return Some((event, follow));
            }
            let state = follow.state.clone();
            let appended = state.pipeline.feed_notify.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            match state.pipeline.store.feed_after(follow.cursor, 100).await {
                Ok(rows) if !rows.is_empty() => {
                    follow.cursor = rows.last().map_or(follow.cursor, |row| row.seq);
                    follow.ready.extend(
                        rows.into_iter()
                            .filter(|row| delivered_to(&follow.entry, row))
                            .filter_map(event),
                    );
                }
                Ok(_) => {
                    let _ = tokio::time::timeout(SUBSCRIPTION_POLL, appended).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "a feed subscription cannot read the store; retrying");
                    tokio::time::sleep(SUBSCRIPTION_POLL).await;
                }
            }
        }
    })
}

/// `POST /graphql`: authenticates, then executes one GraphQL request.
pub async fn handle(
    state: Arc<HubState>,
    schema: HubSchema,
    caller: crate::credentials::Caller,
    body: Bytes,
) -> Result<Response, HubError> {
    let entry = caller.authenticate(&state).await?;
    let request: async_graphql::Request = serde_json::from_slice(&body)
        .map_err(|e| HubError::Invalid(format!("invalid GraphQL request: {e}")))?;
    let response = schema.execute(request.data(entry)).await;
    Ok((StatusCode::OK, axum::Json(response)).into_response())
}
