//! The RabbitMQ bus (lapin).
//!
//! Topology, under the configured prefix `P`:
//! - `P.ingest`: durable quorum queue of raw reports, bounded (`x-max-length`, overflow
//!   `reject-publish`: a full queue nacks the publish and ingest answers 429), with a delivery
//!   limit after which a message that keeps failing is dead-lettered;
//! - `P.dead`: durable quorum queue of poison messages, each with an `x-apiguard-reason`
//!   header;
//! - `P.reports`: durable topic exchange of canonical reports (routing key
//!   `r.<class>.<severity>.<address kind>`);
//! - `P.feed.<participant id>`: one durable quorum queue per participant, bound with its
//!   subscription's keys, bounded (oldest dropped).
//!
//! Every broker operation has a timeout: after a broker restart lapin can leave a publish,
//! confirm or ack waiting forever (lapin #450), so a timeout counts as a dead connection,
//! which is dropped; the next operation reconnects and redeclares the topology.
//!
//! Throughput comes from doing things together: a batch of reports is published at once and
//! its confirms awaited together (one quorum-queue fsync covers many), a worker takes every
//! delivery waiting for it (up to `prefetch`) and stores them in one transaction, and a feed
//! call consumes (the broker pushes) instead of polling with `basic.get`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use super::FeedAnswer;
use super::lease::{Confirm, Leases};
use crate::config::BrokerSettings;
use crate::error::HubError;
use crate::feed::FeedRow;
use crate::pipeline::{Batch, BatchOutcome, Outcome, Pipeline, ProcessError};
use crate::subscription::Subscription;

/// A batch's finishing task: the delivery tag to acknowledge through, once it and every
/// batch before it is done.
type FinishResult = Result<Result<Option<u64>, HubError>, tokio::task::JoinError>;
type FinishTask = tokio::task::JoinHandle<Result<Option<u64>, HubError>>;
type DeliveryResult = Result<lapin::message::Delivery, lapin::Error>;

/// Most deliveries a worker stores in one transaction.
const MAX_BATCH: usize = 256;
/// Stored batches a worker may have waiting for their feed items' confirms at once.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// After a feed call's first delivery, how long it waits for the next one before answering
/// with what it has (the broker pushes up to `max` at once; they arrive within this).
const FEED_GAP: Duration = Duration::from_millis(2);

/// The header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-apiguard-reason";

struct Live {
    connection: Connection,
    publisher: Channel,
}

/// A feed answer awaiting confirmation: its channel holds the deliveries unacknowledged;
/// closing the channel gives them back to the queue.
struct FeedLease {
    channel: Channel,
    /// The last delivery taken (every earlier one on the channel was taken too).
    last_tag: u64,
}

/// One publish of a pipelined group.
struct Publication<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    body: &'a [u8],
    properties: BasicProperties,
    mandatory: bool,
}

/// The RabbitMQ bus.
pub struct RabbitBus {
    settings: BrokerSettings,
    live: tokio::sync::Mutex<Option<Arc<Live>>>,
    participants: Mutex<HashMap<String, Subscription>>,
    leases: Leases<FeedLease>,
    /// Feed items per message lately (an `f64`), to size a feed call's prefetch.
    feed_density: AtomicU64,
}

async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, HubError> {
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(HubError::BrokerUnavailable(format!("{what}: {error}"))),
        Err(_) => Err(HubError::BrokerUnavailable(format!(
            "{what}: no answer within {limit:?}"
        ))),
    }
}

/// Marks a message carrying several feed items (a bundle): its body is a JSON array of
/// `{"origins": [participant ids], "item": {...}}`, hub-internal like the origins header.
const BUNDLE_HEADER: &str = "x-apiguard-bundle";
/// A bundle's index: for each item, `[start, length, [origins]]`, where its JSON is in the
/// body. A feed call slices the items out and passes them on as they are, instead of parsing
/// every item into a tree and writing it out again (with ten subscribers, ten of each per
/// report). Readers without it parse the body, which is unchanged.
const BUNDLE_INDEX_HEADER: &str = "x-apiguard-bundle-index";
/// Most feed items in one bundle. A feed answer holds whole messages, so it may exceed the
/// caller's `max` by less than this.
pub const BUNDLE_MAX: usize = 64;

/// One item of a bundle, as read back.
#[derive(serde::Deserialize)]
struct BundleEntry {
    origins: Vec<String>,
    item: serde_json::Value,
}

/// The reporting participant's id on a report published by an earlier version (read only).
const ORIGIN_HEADER: &str = "x-apiguard-origin";
/// The ids of the participants that must not receive a published feed item (its reporters):
/// hub-internal, never shown to participants.
const ORIGINS_HEADER: &str = "x-apiguard-origins";

/// Whether a message in `participant_id`'s queue comes from that participant.
fn is_own(properties: &BasicProperties, participant_id: &str) -> bool {
    let Some(headers) = properties.headers().as_ref() else {
        return false;
    };
    let same = |value: &AMQPValue| matches!(value, AMQPValue::LongString(s) if s.as_bytes() == participant_id.as_bytes());
    headers.inner().get(ORIGIN_HEADER).is_some_and(same)
        || matches!(headers.inner().get(ORIGINS_HEADER), Some(AMQPValue::FieldArray(list)) if list.as_slice().iter().any(same))
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// A feed item's properties. Every bound queue gets the item, the reporters' own too; their
/// feeds skip it by the origins header.
fn feed_properties(item: &FeedRow) -> BasicProperties {
    let origins: Vec<AMQPValue> = item.origins.iter().map(|o| text(o)).collect();
    let mut headers = FieldTable::default();
    headers.insert(
        ORIGINS_HEADER.into(),
        AMQPValue::FieldArray(FieldArray::from(origins)),
    );
    persistent(&item.id.to_string()).with_headers(headers)
}

/// A bundle's body, `[{"origins": [...], "item": ITEM}, ...]` with the items' canonical JSON
/// as stored, and where each item is in it (for [`BUNDLE_INDEX_HEADER`]).
fn bundle_body(items: &[&FeedRow]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut body = Vec::with_capacity(items.iter().map(|i| i.body.len() + 64).sum::<usize>());
    let mut spans = Vec::with_capacity(items.len());
    body.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"origins\":");
        serde_json::to_writer(&mut body, &item.origins).expect("strings serialise");
        body.extend_from_slice(b",\"item\":");
        spans.push((body.len(), item.body.len()));
        body.extend_from_slice(&item.body);
        body.push(b'}');
    }
    body.push(b']');
    (body, spans)
}

fn bundle_properties(items: &[&FeedRow], spans: &[(usize, usize)]) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        BUNDLE_HEADER.into(),
        AMQPValue::LongLongInt(i64::try_from(items.len()).unwrap_or(i64::MAX)),
    );
    let int = |n: usize| AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX));
    let index: Vec<AMQPValue> = items
        .iter()
        .zip(spans)
        .map(|(item, (start, len))| {
            let origins: Vec<AMQPValue> = item.origins.iter().map(|o| text(o)).collect();
            AMQPValue::FieldArray(FieldArray::from(vec![
                int(*start),
                int(*len),
                AMQPValue::FieldArray(FieldArray::from(origins)),
            ]))
        })
        .collect();
    headers.insert(
        BUNDLE_INDEX_HEADER.into(),
        AMQPValue::FieldArray(FieldArray::from(index)),
    );
    let id = items.first().map(|i| i.id.to_string()).unwrap_or_default();
    persistent(&id).with_headers(headers)
}

/// One entry of a bundle's index: where its item is in the body, and its origins.
struct Span<'a> {
    start: usize,
    len: usize,
    origins: &'a [AMQPValue],
}

/// A bundle's index, if it has one that fits its body (a bundle from an earlier version has
/// none and is read as JSON).
fn bundle_index<'a>(headers: &'a FieldTable, body_len: usize) -> Option<Vec<Span<'a>>> {
    let Some(AMQPValue::FieldArray(entries)) = headers.inner().get(BUNDLE_INDEX_HEADER) else {
        return None;
    };
    let int = |value: &AMQPValue| match value {
        AMQPValue::LongLongInt(n) => usize::try_from(*n).ok(),
        _ => None,
    };
    entries
        .as_slice()
        .iter()
        .map(|entry| {
            let AMQPValue::FieldArray(parts) = entry else {
                return None;
            };
            let [start, len, AMQPValue::FieldArray(origins)] = parts.as_slice() else {
                return None;
            };
            let (start, len) = (int(start)?, int(len)?);
            (start.checked_add(len)? <= body_len).then_some(Span {
                start,
                len,
                origins: origins.as_slice(),
            })
        })
        .collect()
}

/// Whether `bytes` is one JSON value: what a feed answer passes on as it is must be.
fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// Adds a delivery's feed items (each one JSON value, as bytes) to `out`: a bundle's entries,
/// or a single item, leaving out what `participant_id` reported. An unreadable one is
/// dropped with a warning (it cannot become readable by coming again). Answers how many
/// items the message carried, the participant's own included.
fn unpack(
    delivery: &lapin::message::Delivery,
    participant_id: &str,
    out: &mut Vec<Vec<u8>>,
) -> usize {
    unpack_message(&delivery.properties, &delivery.data, participant_id, out)
}

fn unpack_message(
    properties: &BasicProperties,
    data: &[u8],
    participant_id: &str,
    out: &mut Vec<Vec<u8>>,
) -> usize {
    let headers = properties.headers().as_ref();
    let bundled = headers.is_some_and(|h| h.inner().contains_key(BUNDLE_HEADER));
    if !bundled {
        if !is_own(properties, participant_id) {
            if is_json(data) {
                out.push(data.to_vec());
            } else {
                warn!("dropping an unreadable feed item");
            }
        }
        return 1;
    }
    let own = |value: &AMQPValue| matches!(value, AMQPValue::LongString(s) if s.as_bytes() == participant_id.as_bytes());
    if let Some(spans) = headers.and_then(|h| bundle_index(h, data.len())) {
        for span in &spans {
            if span.origins.iter().any(own) {
                continue;
            }
            let item = &data[span.start..span.start + span.len];
            if is_json(item) {
                out.push(item.to_vec());
            } else {
                warn!("dropping an unreadable item of a feed bundle");
            }
        }
        return spans.len();
    }
    match serde_json::from_slice::<Vec<BundleEntry>>(data) {
        Ok(entries) => {
            let carried = entries.len();
            out.extend(
                entries
                    .into_iter()
                    .filter(|e| !e.origins.iter().any(|o| o == participant_id))
                    .map(|e| serde_json::to_vec(&e.item).expect("a JSON value serialises")),
            );
            carried
        }
        Err(error) => {
            warn!(%error, "dropping an unreadable feed bundle");
            1
        }
    }
}

fn quorum_args(max_length: u32, overflow: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(max_length)),
    );
    args.insert("x-overflow".into(), text(overflow));
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn persistent(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(id))
}

impl RabbitBus {
    /// A bus with the default feed lease (30 s).
    pub fn new(settings: BrokerSettings) -> Self {
        Self::with_feed_lease(settings, Duration::from_secs(30))
    }

    /// A bus whose feed answers are delivered again when not confirmed within `feed_lease`.
    pub fn with_feed_lease(settings: BrokerSettings, feed_lease: Duration) -> Self {
        Self {
            settings,
            live: tokio::sync::Mutex::new(None),
            participants: Mutex::new(HashMap::new()),
            leases: Leases::new(feed_lease),
            feed_density: AtomicU64::new(1.0f64.to_bits()),
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.settings.prefix)
    }

    /// The ingest queue's name.
    pub fn ingest_queue(&self) -> String {
        self.name("ingest")
    }

    /// The dead-letter queue's name.
    pub fn dead_queue(&self) -> String {
        self.name("dead")
    }

    /// The reports exchange's name.
    pub fn reports_exchange(&self) -> String {
        self.name("reports")
    }

    /// A participant's queue name.
    pub fn feed_queue(&self, participant_id: &str) -> String {
        self.name(&format!("feed.{participant_id}"))
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn known_participants(&self) -> Vec<(String, Subscription)> {
        self.participants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The current connection, or a new one with the topology declared.
    async fn live(&self) -> Result<Arc<Live>, HubError> {
        let mut guard = self.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.connection.status().connected() && live.publisher.status().connected() {
                return Ok(live.clone());
            }
            warn!("the broker connection is down; reconnecting");
        }
        if let Some(old) = guard.take() {
            close_quietly(old);
        }
        let live = Arc::new(self.connect().await?);
        *guard = Some(live.clone());
        Ok(live)
    }

    /// Drops `live` if it is still the current connection.
    async fn invalidate(&self, live: &Arc<Live>) {
        let mut guard = self.live.lock().await;
        if guard
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, live))
            && let Some(old) = guard.take()
        {
            close_quietly(old);
        }
    }

    async fn connect(&self) -> Result<Live, HubError> {
        let t = self.timeout();
        let name = format!("apiguard-hub {}", self.settings.prefix);
        let properties =
            ConnectionProperties::default().with_connection_name(LongString::from(name.as_str()));
        let connection = within(
            t,
            "connect",
            Connection::connect(&self.settings.url, properties),
        )
        .await?;
        let publisher = within(t, "open a channel", connection.create_channel()).await?;
        self.declare_topology(&publisher).await?;
        for (id, subscription) in self.known_participants() {
            self.declare_participant(&publisher, &id, &subscription)
                .await?;
        }
        within(
            t,
            "confirm.select",
            publisher.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        info!(prefix = %self.settings.prefix, "connected to the broker");
        Ok(Live {
            connection,
            publisher,
        })
    }

    async fn declare_topology(&self, channel: &Channel) -> Result<(), HubError> {
        let t = self.timeout();
        let dead = self.dead_queue();
        within(
            t,
            "declare the dead-letter queue",
            channel.queue_declare(
                dead.as_str().into(),
                durable(),
                quorum_args(1_000_000, "drop-head"),
            ),
        )
        .await?;
        let mut ingest_args = quorum_args(self.settings.ingest_max_length, "reject-publish");
        ingest_args.insert("x-dead-letter-exchange".into(), text(""));
        ingest_args.insert("x-dead-letter-routing-key".into(), text(&dead));
        ingest_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.settings.delivery_limit)),
        );
        within(
            t,
            "declare the ingest queue",
            channel.queue_declare(self.ingest_queue().as_str().into(), durable(), ingest_args),
        )
        .await?;
        within(
            t,
            "declare the reports exchange",
            channel.exchange_declare(
                self.reports_exchange().as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(())
    }

    async fn declare_participant(
        &self,
        channel: &Channel,
        id: &str,
        subscription: &Subscription,
    ) -> Result<(), HubError> {
        let t = self.timeout();
        let queue = self.feed_queue(id);
        within(
            t,
            "declare a participant queue",
            channel.queue_declare(
                queue.as_str().into(),
                durable(),
                quorum_args(self.settings.participant_max_length, "drop-head"),
            ),
        )
        .await?;
        for key in subscription.binding_keys() {
            within(
                t,
                "bind a participant queue",
                channel.queue_bind(
                    queue.as_str().into(),
                    self.reports_exchange().as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Declares a participant's queue and bindings (now, and after every reconnect).
    pub async fn ensure_participant(
        &self,
        id: &str,
        subscription: &Subscription,
    ) -> Result<(), HubError> {
        self.participants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), subscription.clone());
        let live = self.live().await?;
        let result = self
            .declare_participant(&live.publisher, id, subscription)
            .await;
        if result.is_err() {
            self.invalidate(&live).await;
        }
        result
    }

    /// Moves a participant's queue to a new subscription: binds every key of `subscription`
    /// first, then removes the `stale` keys, so that an item routed by a key both accept is
    /// never left without a binding in between. Remembered for reconnects at once: a
    /// failure here is finished by the next reconnect (the new keys) and by the caller
    /// retrying `stale` later.
    pub async fn change_subscription(
        &self,
        id: &str,
        subscription: &Subscription,
        stale: &[String],
    ) -> Result<(), HubError> {
        self.participants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), subscription.clone());
        let live = self.live().await?;
        let mut result = self
            .declare_participant(&live.publisher, id, subscription)
            .await;
        if result.is_ok() {
            result = self.unbind(&live.publisher, id, stale).await;
        }
        if result.is_err() {
            self.invalidate(&live).await;
        }
        result
    }

    /// Removes binding keys from a participant's queue (a key not bound is no error).
    pub async fn unbind_stale(&self, id: &str, keys: &[String]) -> Result<(), HubError> {
        if keys.is_empty() {
            return Ok(());
        }
        let live = self.live().await?;
        let result = self.unbind(&live.publisher, id, keys).await;
        if result.is_err() {
            self.invalidate(&live).await;
        }
        result
    }

    async fn unbind(&self, channel: &Channel, id: &str, keys: &[String]) -> Result<(), HubError> {
        let t = self.timeout();
        let queue = self.feed_queue(id);
        for key in keys {
            within(
                t,
                "unbind a participant queue",
                channel.queue_unbind(
                    queue.as_str().into(),
                    self.reports_exchange().as_str().into(),
                    key.as_str().into(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// The subscription this bus binds a participant's queue with, if it knows the
    /// participant.
    fn known_subscription(&self, id: &str) -> Option<Subscription> {
        self.participants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Publishes and waits for the broker's confirm. `Ok(false)` when the broker nacked.
    async fn publish_confirmed(
        &self,
        live: &Live,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<bool, HubError> {
        let t = self.timeout();
        let confirm = within(
            t,
            "publish",
            live.publisher.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            ),
        )
        .await?;
        confirmed(within(t, "publisher confirm", confirm).await?, routing_key)
    }

    /// Publishes a group at once and awaits the confirms together: one result per
    /// publication (`Ok(false)` when the broker nacked it). The whole group shares one
    /// timeout; when it passes, every publication of the group fails (the connection is
    /// suspect) and the caller drops the connection.
    async fn publish_confirmed_many(
        &self,
        live: &Live,
        publications: &[Publication<'_>],
    ) -> Vec<Result<bool, HubError>> {
        let t = self.timeout();
        let group = async {
            // Every publish is written before any confirm is awaited: the broker confirms
            // them together.
            let sent = futures_util::future::join_all(publications.iter().map(|p| {
                live.publisher.basic_publish(
                    p.exchange.into(),
                    p.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: p.mandatory,
                        ..BasicPublishOptions::default()
                    },
                    p.body,
                    p.properties.clone(),
                )
            }))
            .await;
            futures_util::future::join_all(sent.into_iter().zip(publications).map(
                |(sent, p)| async move {
                    let confirm =
                        sent.map_err(|e| HubError::BrokerUnavailable(format!("publish: {e}")))?;
                    let confirmation = confirm.await.map_err(|e| {
                        HubError::BrokerUnavailable(format!("publisher confirm: {e}"))
                    })?;
                    confirmed(confirmation, p.routing_key)
                },
            ))
            .await
        };
        match tokio::time::timeout(t, group).await {
            Ok(results) => results,
            Err(_) => {
                let error = HubError::BrokerUnavailable(format!(
                    "{} publishes: no confirm within {t:?}",
                    publications.len()
                ));
                publications.iter().map(|_| Err(error.clone())).collect()
            }
        }
    }

    /// Puts raw reports on the ingest queue, pipelined, and returns once the broker
    /// confirmed (or refused) each. Those lost with a connection are retried once on a new
    /// one (their ids make a duplicate harmless).
    pub async fn submit_many(&self, items: &[(Uuid, Vec<u8>)]) -> Vec<Result<(), HubError>> {
        let mut results = self.try_submit_many(items).await;
        let retry: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(HubError::BrokerUnavailable(_))))
            .map(|(index, _)| index)
            .collect();
        if !retry.is_empty() {
            warn!(
                reports = retry.len(),
                "ingest publishes failed; retrying on a new connection"
            );
            let again: Vec<(Uuid, Vec<u8>)> = retry.iter().map(|&i| items[i].clone()).collect();
            for (index, result) in retry.into_iter().zip(self.try_submit_many(&again).await) {
                results[index] = result;
            }
        }
        results
    }

    async fn try_submit_many(&self, items: &[(Uuid, Vec<u8>)]) -> Vec<Result<(), HubError>> {
        let live = match self.live().await {
            Ok(live) => live,
            Err(error) => return items.iter().map(|_| Err(error.clone())).collect(),
        };
        let queue = self.ingest_queue();
        let publications: Vec<Publication<'_>> = items
            .iter()
            .map(|(id, bytes)| Publication {
                exchange: "",
                routing_key: &queue,
                body: bytes,
                properties: persistent(&id.to_string()),
                mandatory: true,
            })
            .collect();
        let results = self.publish_confirmed_many(&live, &publications).await;
        if results
            .iter()
            .any(|r| matches!(r, Err(HubError::BrokerUnavailable(_))))
        {
            self.invalidate(&live).await;
        }
        results
            .into_iter()
            .map(|result| match result {
                Ok(true) => Ok(()),
                Ok(false) => Err(HubError::Overloaded(
                    "the ingest queue is full; retry later".into(),
                )),
                Err(error) => Err(error),
            })
            .collect()
    }

    /// Puts a raw report on the ingest queue and returns once the broker confirmed it.
    /// Retries once on a fresh connection (the id makes a duplicate harmless).
    pub async fn submit(&self, id: Uuid, bytes: &[u8]) -> Result<(), HubError> {
        match self.try_submit(id, bytes).await {
            Err(HubError::BrokerUnavailable(first)) => {
                warn!(error = %first, "ingest publish failed; retrying on a new connection");
                self.try_submit(id, bytes).await
            }
            other => other,
        }
    }

    async fn try_submit(&self, id: Uuid, bytes: &[u8]) -> Result<(), HubError> {
        let live = self.live().await?;
        let result = self
            .publish_confirmed(
                &live,
                "",
                &self.ingest_queue(),
                bytes,
                persistent(&id.to_string()),
                true,
            )
            .await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(HubError::Overloaded(
                "the ingest queue is full; retry later".into(),
            )),
            Err(error) => {
                self.invalidate(&live).await;
                Err(error)
            }
        }
    }

    /// Takes up to `max` reports from a participant's queue, waiting up to `wait` for the
    /// first, after confirming earlier answers as `confirm` says. The deliveries stay
    /// unacknowledged on the answer's own channel (a lease) until the answer is confirmed;
    /// when the lease ends unconfirmed, or the hub dies, the channel closes and the broker
    /// delivers them again.
    ///
    /// `subscription` is the participant's as stored now: items its queue still holds from
    /// an earlier subscription are taken but not answered, and the keys of a subscription
    /// changed by another process (the command line) are bound here too.
    pub async fn fetch(
        &self,
        participant_id: &str,
        subscription: &Subscription,
        max: usize,
        wait: Duration,
        confirm: &Confirm,
    ) -> Result<FeedAnswer, HubError> {
        if self
            .known_subscription(participant_id)
            .is_some_and(|known| known != *subscription)
        {
            // Changed by another process (the command line rebinds the queue itself). Only
            // bind here, never unbind: `subscription` was read before this call, and a
            // change committed since must not lose its keys to it. A key bound needlessly
            // costs traffic only, since every answer is filtered by the stored subscription.
            info!(
                participant = participant_id,
                "following a changed subscription"
            );
            self.change_subscription(participant_id, subscription, &[])
                .await?;
        }
        // Expired leases first: a client back after its lease ended gets the items again
        // rather than confirming them unseen.
        self.release_expired().await;
        let confirmed = match confirm {
            Confirm::Implicit => {
                for lease in self.leases.take_implicit(participant_id) {
                    self.settle(lease, true).await;
                }
                None
            }
            Confirm::Explicit(None) => None,
            Confirm::Explicit(Some(token)) => Some(self.confirm(participant_id, token).await),
        };
        if !self.leases.has_room() {
            return Err(HubError::Overloaded(
                "too many feed answers await their confirmation".into(),
            ));
        }
        let live = self.live().await?;
        let (items, lease) = match self
            .consume_feed(&live, participant_id, subscription, max, wait)
            .await
        {
            Ok(taken) => taken,
            Err(error) => {
                if matches!(error, HubError::BrokerUnavailable(_)) {
                    self.invalidate(&live).await;
                }
                return Err(error);
            }
        };
        let ack = match lease {
            Some(lease) => {
                let implicit = *confirm == Confirm::Implicit;
                let (token, evicted) = self.leases.insert(participant_id, implicit, lease);
                for old in evicted {
                    self.settle(old, false).await;
                }
                Some(token)
            }
            None => None,
        };
        Ok(FeedAnswer {
            items,
            ack,
            confirmed,
        })
    }

    /// Confirms a feed answer by its token: acknowledges its deliveries. False when the
    /// token is unknown, its lease ended, or the acknowledgement failed (the deliveries
    /// come again).
    pub async fn confirm(&self, participant_id: &str, token: &str) -> bool {
        match self.leases.take(participant_id, token) {
            Some(lease) => self.settle(lease, true).await,
            None => false,
        }
    }

    /// Gives the deliveries of leases whose time is up back to their queues.
    pub async fn release_expired(&self) {
        for lease in self.leases.take_expired() {
            self.settle(lease, false).await;
        }
    }

    /// Ends a lease: acknowledges its deliveries (`ack`) or hands them back, then closes its
    /// channel (which hands back anything else it held). True when acknowledged.
    async fn settle(&self, lease: FeedLease, ack: bool) -> bool {
        let t = self.timeout();
        let acked = if ack {
            match within(
                t,
                "ack",
                lease
                    .channel
                    .basic_ack(lease.last_tag, BasicAckOptions { multiple: true }),
            )
            .await
            {
                Ok(()) => true,
                Err(error) => {
                    warn!(%error, "a feed answer could not be acknowledged; it will come again");
                    false
                }
            }
        } else {
            false
        };
        // On a dead connection the close fails: the broker has handed the deliveries back
        // already.
        let _ = tokio::time::timeout(t, lease.channel.close(200, "done".into())).await;
        acked
    }

    /// Consumes up to `max` deliveries on a channel of their own: the broker pushes them
    /// (no polling), the first within `wait`, the rest as long as they keep coming. The
    /// participant's own reports are taken but not answered. Answers the items and, when
    /// something was taken, the lease that holds them.
    async fn consume_feed(
        &self,
        live: &Live,
        participant_id: &str,
        subscription: &Subscription,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Vec<u8>>, Option<FeedLease>), HubError> {
        let t = self.timeout();
        let channel = within(t, "open a channel", live.connection.create_channel()).await?;
        let taken = self
            .consume_on(&channel, participant_id, subscription, max, wait)
            .await;
        match taken {
            Ok((items, Some(last_tag))) if !items.is_empty() => {
                Ok((items, Some(FeedLease { channel, last_tag })))
            }
            Ok((items, last_tag)) => {
                // Only the participant's own reports (or nothing): acknowledge and close.
                if let Some(tag) = last_tag {
                    within(
                        t,
                        "ack",
                        channel.basic_ack(tag, BasicAckOptions { multiple: true }),
                    )
                    .await?;
                }
                let _ = tokio::time::timeout(t, channel.close(200, "done".into())).await;
                Ok((items, None))
            }
            Err(error) => {
                let _ = tokio::time::timeout(t, channel.close(200, "failed".into())).await;
                Err(error)
            }
        }
    }

    async fn consume_on(
        &self,
        channel: &Channel,
        participant_id: &str,
        subscription: &Subscription,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Vec<u8>>, Option<u64>), HubError> {
        let t = self.timeout();
        let queue = self.feed_queue(participant_id);
        // Prefetch counts messages, `max` items: with bundles, a prefetch of `max` had the
        // broker push up to 64 times what the answer takes, and take the rest back when the
        // lease ended. Sized by how many items a message carried lately.
        let density = f64::from_bits(self.feed_density.load(Ordering::Relaxed)).max(1.0);
        let messages = ((max.max(1) as f64) / density).ceil() as usize;
        let prefetch = u16::try_from(messages.clamp(1, max.max(1))).unwrap_or(u16::MAX);
        within(
            t,
            "basic.qos",
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        let tag = format!("apiguard-hub-feed-{}", Uuid::now_v7().simple());
        let mut consumer = within(
            t,
            "basic.consume",
            channel.basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        let mut last_tag = None;
        let mut taken: u32 = 0;
        let mut carried = 0;
        while (taken as usize) < max && out.len() < max {
            // The first answerable item within `wait`; after it, what keeps arriving.
            let next = if out.is_empty() {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            } else {
                match consumer.next().now_or_never() {
                    Some(next) => next,
                    None => match tokio::time::timeout(FEED_GAP, consumer.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                }
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(HubError::BrokerUnavailable(error.to_string())),
                None => {
                    return Err(HubError::BrokerUnavailable(
                        "the feed consumer was cancelled".into(),
                    ));
                }
            };
            taken += 1;
            carried += if subscription.matches_key(delivery.routing_key.as_str()) {
                unpack(&delivery, participant_id, &mut out)
            } else {
                1
            };
            if out.is_empty() {
                // Nothing to answer so far (the participant's own reports, or what it no
                // longer subscribes to): settle it now, which also lets the broker push more
                // within the prefetch.
                within(
                    t,
                    "ack",
                    channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }),
                )
                .await?;
                last_tag = None;
            } else {
                last_tag = Some(delivery.delivery_tag);
            }
        }
        if taken > 0 {
            let sample = carried as f64 / f64::from(taken);
            let _ = self
                .feed_density
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some(((f64::from_bits(old) + sample) / 2.0).to_bits())
                });
        }
        // Deliveries the broker pushed after the last one taken stay unacknowledged on the
        // channel and go back to the queue when it closes.
        within(
            t,
            "basic.cancel",
            channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await?;
        Ok((out, last_tag))
    }

    /// Consumes the ingest queue until `stop`, reconnecting after every failure.
    pub async fn run_worker(
        self: Arc<Self>,
        pipeline: Arc<Pipeline>,
        index: usize,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return;
            }
            match self.consume(&pipeline, index, &mut stop).await {
                Ok(()) => return,
                Err(error) => {
                    warn!(worker = index, %error, "ingest worker lost the broker; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Consumes until `stop` or a broker failure. Every delivery waiting for the worker (up
    /// to `prefetch`) is processed as one batch: stored in one transaction, its feed items
    /// published together, then each delivery acknowledged (or dead-lettered, or handled on
    /// its own).
    async fn consume(
        self: &Arc<Self>,
        pipeline: &Arc<Pipeline>,
        index: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), HubError> {
        let t = self.timeout();
        let live = self.live().await?;
        let channel = within(t, "open a channel", live.connection.create_channel()).await?;
        within(
            t,
            "basic.qos",
            channel.basic_qos(self.settings.prefetch, BasicQosOptions::default()),
        )
        .await?;
        let tag = format!("apiguard-hub-worker-{index}-{}", Uuid::now_v7());
        let mut consumer = within(
            t,
            "basic.consume",
            channel.basic_consume(
                self.ingest_queue().as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let max = usize::from(self.settings.prefetch).min(MAX_BATCH);
        // Batches being finished, oldest first. Each is acknowledged, with one multiple ack,
        // only once it and every batch before it is finished: a multiple ack covers every
        // earlier delivery of the channel, so acknowledging out of order could settle a report
        // not yet stored and published.
        let mut finishing: VecDeque<FinishTask> = VecDeque::new();
        loop {
            while finishing.front().is_some_and(|task| task.is_finished()) {
                let task = finishing.pop_front().expect("a finished batch");
                self.acknowledge(&live, &channel, task.await).await?;
            }
            if finishing.len() >= MAX_BATCHES_IN_FLIGHT {
                let task = finishing.pop_front().expect("batches in flight");
                self.acknowledge(&live, &channel, task.await).await?;
                continue;
            }
            enum Event {
                Stop,
                Finished(FinishResult),
                Next(Box<Result<Option<DeliveryResult>, tokio::time::error::Elapsed>>),
            }
            let event = tokio::select! {
                _ = stop.changed() => Event::Stop,
                done = async { finishing.front_mut().expect("a batch in flight").await },
                    if !finishing.is_empty() => Event::Finished(done),
                next = tokio::time::timeout(Duration::from_secs(10), consumer.next()) => Event::Next(Box::new(next)),
            };
            let next = match event {
                Event::Stop => {
                    while let Some(task) = finishing.pop_front() {
                        if self.acknowledge(&live, &channel, task.await).await.is_err() {
                            break;
                        }
                    }
                    let _ = tokio::time::timeout(t, channel.close(200, "stopping".into())).await;
                    return Ok(());
                }
                Event::Finished(done) => {
                    finishing.pop_front();
                    self.acknowledge(&live, &channel, done).await?;
                    continue;
                }
                Event::Next(next) => *next,
            };
            let first = match next {
                Err(_) => {
                    if live.connection.status().connected() && channel.status().connected() {
                        continue;
                    }
                    self.invalidate(&live).await;
                    return Err(HubError::BrokerUnavailable("the connection closed".into()));
                }
                Ok(next) => self.delivery(&live, next).await?,
            };
            let mut deliveries = vec![first];
            while deliveries.len() < max {
                match consumer.next().now_or_never() {
                    Some(next) => deliveries.push(self.delivery(&live, next).await?),
                    None => break,
                }
            }
            // Stored here, in delivery order; published and marked while the next batch is
            // stored (a fan-out confirm costs the broker one fsync per queue).
            let messages: Vec<&[u8]> = deliveries.iter().map(|d| d.data.as_slice()).collect();
            let batch = pipeline.process_batch(&messages).await;
            let (bus, live, pipeline) = (self.clone(), live.clone(), pipeline.clone());
            finishing.push_back(tokio::spawn(async move {
                bus.finish_batch(&live, &pipeline, deliveries, batch).await
            }));
        }
    }

    /// Acknowledges a finished batch (see [`RabbitBus::finish_batch`]); a failure means a
    /// failed broker operation, and the connection is dropped (what it left unacknowledged
    /// comes again).
    async fn acknowledge(
        &self,
        live: &Arc<Live>,
        channel: &Channel,
        done: FinishResult,
    ) -> Result<(), HubError> {
        let result = match done {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(tag))) => {
                within(
                    self.timeout(),
                    "ack",
                    channel.basic_ack(tag, BasicAckOptions { multiple: true }),
                )
                .await
            }
            Ok(Err(error)) => Err(error),
            Err(join) => Err(HubError::Internal(format!("a batch failed: {join}"))),
        };
        if result.is_err() {
            self.invalidate(live).await;
        }
        result
    }

    /// A delivery from the consumer stream, or the failure that ends it.
    async fn delivery(
        &self,
        live: &Arc<Live>,
        next: Option<Result<lapin::message::Delivery, lapin::Error>>,
    ) -> Result<lapin::message::Delivery, HubError> {
        match next {
            Some(Ok(delivery)) => Ok(delivery),
            None => {
                self.invalidate(live).await;
                Err(HubError::BrokerUnavailable(
                    "the consumer was cancelled".into(),
                ))
            }
            Some(Err(error)) => {
                self.invalidate(live).await;
                Err(HubError::BrokerUnavailable(error.to_string()))
            }
        }
    }

    /// Finishes a stored batch: publishes its feed items together, marks them and its
    /// reports done, dead-letters its poison messages and handles on their own those that
    /// need it (each settled here, alone). Answers the delivery tag through which the
    /// caller acknowledges the rest, in batch order. An error means a failed broker
    /// operation: the caller reconnects, and whatever was not acknowledged comes again.
    async fn finish_batch(
        &self,
        live: &Live,
        pipeline: &Pipeline,
        deliveries: Vec<lapin::message::Delivery>,
        mut batch: Batch,
    ) -> Result<Option<u64>, HubError> {
        let t = self.timeout();
        self.publish_many_on(live, &batch.items).await?;
        if let Err(error) = pipeline.batch_published(&mut batch).await {
            // Harmless: a redelivery republishes them and subscribers de-duplicate.
            warn!(%error, reports = batch.reports.len(), "could not mark a batch published");
        }
        let mut ack_through = None;
        for (delivery, outcome) in deliveries.iter().zip(&batch.outcomes) {
            match outcome {
                BatchOutcome::Done | BatchOutcome::Duplicate => {
                    ack_through = Some(delivery.delivery_tag);
                }
                BatchOutcome::Poison(reason) => {
                    self.dead_letter(live, delivery, reason).await?;
                    within(t, "ack", delivery.acker.ack(BasicAckOptions::default())).await?;
                }
                BatchOutcome::Alone => self.handle(live, pipeline, delivery).await?,
            }
        }
        Ok(ack_through)
    }

    /// Publishes a poison message to the dead-letter queue with its reason.
    async fn dead_letter(
        &self,
        live: &Live,
        delivery: &lapin::message::Delivery,
        reason: &str,
    ) -> Result<(), HubError> {
        warn!(%reason, "dead-lettering a raw report");
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), text(reason));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        let queued = self
            .publish_confirmed(
                live,
                "",
                &self.dead_queue(),
                &delivery.data,
                properties,
                true,
            )
            .await?;
        if !queued {
            return Err(HubError::BrokerUnavailable(
                "the broker refused a dead letter".into(),
            ));
        }
        Ok(())
    }

    async fn handle(
        &self,
        live: &Live,
        pipeline: &Pipeline,
        delivery: &lapin::message::Delivery,
    ) -> Result<(), HubError> {
        let t = self.timeout();
        match pipeline.process(&delivery.data).await {
            Ok(Outcome::Publish {
                report_id,
                items,
                claim,
            }) => {
                for item in &items {
                    self.publish_on(live, item).await?;
                }
                if let Err(error) = pipeline.published(report_id, &items).await {
                    // Harmless: a redelivery republishes it and subscribers de-duplicate.
                    warn!(%error, report = %report_id, "could not mark a report published");
                }
                drop(claim);
            }
            Ok(Outcome::Duplicate) => {}
            Err(ProcessError::Poison(reason)) => {
                self.dead_letter(live, delivery, &reason).await?;
            }
            Err(ProcessError::Transient(error)) => {
                warn!(%error, "a raw report could not be processed now; requeueing");
                tokio::time::sleep(Duration::from_millis(200)).await;
                within(
                    t,
                    "nack",
                    delivery.acker.nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    }),
                )
                .await?;
                return Ok(());
            }
        }
        within(t, "ack", delivery.acker.ack(BasicAckOptions::default())).await?;
        Ok(())
    }

    /// Publishes a feed item on `live` to the reports exchange and waits for the confirm.
    async fn publish_on(&self, live: &Live, item: &FeedRow) -> Result<(), HubError> {
        let confirmed = self
            .publish_confirmed(
                live,
                &self.reports_exchange(),
                &item.routing_key,
                &item.body,
                feed_properties(item),
                false,
            )
            .await?;
        if !confirmed {
            return Err(HubError::BrokerUnavailable(
                "the broker refused a feed item".into(),
            ));
        }
        Ok(())
    }

    /// Publishes feed items on `live` together and waits for all their confirms. Items of
    /// one routing key travel in bundles of up to [`BUNDLE_MAX`]: a message (one append to
    /// each bound quorum queue, one delivery and one ack per subscriber) for many items
    /// rather than for each.
    async fn publish_many_on(&self, live: &Live, items: &[FeedRow]) -> Result<(), HubError> {
        if items.is_empty() {
            return Ok(());
        }
        let exchange = self.reports_exchange();
        let mut groups: Vec<(&str, Vec<&FeedRow>)> = Vec::new();
        for item in items {
            match groups.iter_mut().find(|(key, _)| *key == item.routing_key) {
                Some((_, rows)) => rows.push(item),
                None => groups.push((&item.routing_key, vec![item])),
            }
        }
        let mut messages: Vec<(&str, Vec<u8>, BasicProperties)> = Vec::new();
        for (key, rows) in groups {
            for chunk in rows.chunks(BUNDLE_MAX) {
                match chunk {
                    [item] => messages.push((key, item.body.clone(), feed_properties(item))),
                    _ => {
                        let (body, spans) = bundle_body(chunk);
                        messages.push((key, body, bundle_properties(chunk, &spans)));
                    }
                }
            }
        }
        let publications: Vec<Publication<'_>> = messages
            .iter()
            .map(|(key, body, properties)| Publication {
                exchange: &exchange,
                routing_key: key,
                body,
                properties: properties.clone(),
                mandatory: false,
            })
            .collect();
        for result in self.publish_confirmed_many(live, &publications).await {
            if !result? {
                return Err(HubError::BrokerUnavailable(
                    "the broker refused a feed item".into(),
                ));
            }
        }
        Ok(())
    }

    /// Publishes a feed item (for the sweep: withdrawals, renewals, items left behind).
    pub async fn publish_feed(&self, item: &FeedRow) -> Result<(), HubError> {
        let live = self.live().await?;
        let result = self.publish_on(&live, item).await;
        if result.is_err() {
            self.invalidate(&live).await;
        }
        result
    }

    /// Takes up to `max` dead letters: `(reason, message)`. For tests and operators.
    pub async fn take_dead_letters(&self, max: usize) -> Result<Vec<(String, Vec<u8>)>, HubError> {
        let t = self.timeout();
        let live = self.live().await?;
        let channel = within(t, "open a channel", live.connection.create_channel()).await?;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(message) = within(
                t,
                "basic.get",
                channel.basic_get(
                    self.dead_queue().as_str().into(),
                    BasicGetOptions { no_ack: true },
                ),
            )
            .await?
            else {
                break;
            };
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(REASON_HEADER).cloned())
                .map(|v| match v {
                    AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            out.push((reason, message.delivery.data));
        }
        let _ = tokio::time::timeout(t, channel.close(200, "done".into())).await;
        Ok(out)
    }

    /// Deletes every queue and the exchange this bus declared, then closes the connection
    /// (for tests; stop the hub's workers first, since deleting the ingest queue cancels
    /// their consumers).
    pub async fn delete_topology(&self) -> Result<(), HubError> {
        let t = self.timeout();
        let live = self.live().await?;
        let channel = within(t, "open a channel", live.connection.create_channel()).await?;
        let mut queues = vec![self.ingest_queue(), self.dead_queue()];
        queues.extend(
            self.known_participants()
                .into_iter()
                .map(|(id, _)| self.feed_queue(&id)),
        );
        for queue in queues {
            within(
                t,
                "delete a queue",
                channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
            )
            .await?;
        }
        within(
            t,
            "delete the exchange",
            channel.exchange_delete(
                self.reports_exchange().as_str().into(),
                ExchangeDeleteOptions::default(),
            ),
        )
        .await?;
        self.close().await;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(&self) {
        // Closing the connection hands every leased feed delivery back to its queue.
        drop(self.leases.take_all());
        if let Some(live) = self.live.lock().await.take() {
            let _ = tokio::time::timeout(
                self.timeout(),
                live.connection.close(200, "hub stopping".into()),
            )
            .await;
        }
    }
}

/// What a publisher confirm means: `Ok(false)` for a nack (a full queue refusing it).
fn confirmed(confirmation: Confirmation, routing_key: &str) -> Result<bool, HubError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(true),
        Confirmation::Ack(Some(_)) => Err(HubError::BrokerUnavailable(format!(
            "`{routing_key}` is not routable (its queue is missing)"
        ))),
        Confirmation::Nack(_) => Ok(false),
        Confirmation::NotRequested => Err(HubError::Internal(
            "publisher confirms are off on the publishing channel".into(),
        )),
    }
}

fn close_quietly(live: Arc<Live>) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            live.connection.close(200, "reconnecting".into()),
        )
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u8, origins: &[&str]) -> FeedRow {
        FeedRow {
            seq: i64::from(n),
            id: Uuid::now_v7(),
            kind: "report".into(),
            routing_key: "r.sqli.high.ip".into(),
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            body: format!("{{\"n\":{n},\"s\":\"a \\\"quoted\\\" ]}}\"}}").into_bytes(),
        }
    }

    /// A bundle's items come out byte for byte as stored, without the reader's own, whether
    /// the reader slices them by the index or (a bundle of an earlier version, or an index
    /// that does not fit) parses the body.
    #[test]
    fn bundles_are_sliced_by_their_index_and_read_without_it() {
        let rows = [row(1, &["alpha"]), row(2, &["beta"]), row(3, &[])];
        let refs: Vec<&FeedRow> = rows.iter().collect();
        let (body, spans) = bundle_body(&refs);
        let indexed = bundle_properties(&refs, &spans);
        let expected: Vec<Vec<u8>> = vec![rows[1].body.clone(), rows[2].body.clone()];

        let mut out = Vec::new();
        assert_eq!(unpack_message(&indexed, &body, "alpha", &mut out), 3);
        assert_eq!(out, expected);

        let mut legacy_headers = FieldTable::default();
        legacy_headers.insert(BUNDLE_HEADER.into(), AMQPValue::LongLongInt(3));
        let legacy = BasicProperties::default().with_headers(legacy_headers);
        let mut out = Vec::new();
        assert_eq!(unpack_message(&legacy, &body, "alpha", &mut out), 3);
        let parsed: Vec<serde_json::Value> = out
            .iter()
            .map(|i| serde_json::from_slice(i).unwrap())
            .collect();
        let wanted: Vec<serde_json::Value> = expected
            .iter()
            .map(|i| serde_json::from_slice(i).unwrap())
            .collect();
        assert_eq!(parsed, wanted);

        // An index pointing past the body is not trusted: the body is parsed instead.
        let mut out = Vec::new();
        assert_eq!(
            unpack_message(&indexed, &body[..body.len() / 2], "alpha", &mut out),
            1
        );
        assert!(out.is_empty(), "half a bundle is unreadable, and dropped");

        // A single item that is not JSON is dropped rather than passed on.
        let mut out = Vec::new();
        unpack_message(&BasicProperties::default(), b"{\"a\":", "alpha", &mut out);
        assert!(out.is_empty());
    }
}
