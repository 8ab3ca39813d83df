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

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::BrokerSettings;
use crate::error::HubError;
use crate::feed::FeedRow;
use crate::pipeline::{Outcome, Pipeline, ProcessError};
use crate::subscription::Subscription;

/// The header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-apiguard-reason";

struct Live {
    connection: Connection,
    publisher: Channel,
}

/// The RabbitMQ bus.
pub struct RabbitBus {
    settings: BrokerSettings,
    live: tokio::sync::Mutex<Option<Arc<Live>>>,
    participants: Mutex<HashMap<String, Subscription>>,
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
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            live: tokio::sync::Mutex::new(None),
            participants: Mutex::new(HashMap::new()),
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
        match within(t, "publisher confirm", confirm).await? {
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
    /// first, and acknowledges them.
    pub async fn fetch(
        &self,
        participant_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, HubError> {
        let live = self.live().await?;
        let result = self.fetch_on(&live, participant_id, max, wait).await;
        if matches!(result, Err(HubError::BrokerUnavailable(_))) {
            self.invalidate(&live).await;
        }
        result
    }

    async fn fetch_on(
        &self,
        live: &Live,
        participant_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, HubError> {
        let t = self.timeout();
        let channel = within(t, "open a channel", live.connection.create_channel()).await?;
        let queue = self.feed_queue(participant_id);
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        let mut last_tag = None;
        loop {
            let got = within(
                t,
                "basic.get",
                channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }),
            )
            .await?;
            match got {
                Some(message) => {
                    last_tag = Some(message.delivery.delivery_tag);
                    if !is_own(&message.delivery.properties, participant_id) {
                        out.push(message.delivery.data);
                    }
                    if out.len() >= max {
                        break;
                    }
                }
                None => {
                    if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if let Some(tag) = last_tag {
            within(
                t,
                "ack",
                channel.basic_ack(tag, BasicAckOptions { multiple: true }),
            )
            .await?;
        }
        let _ = tokio::time::timeout(t, channel.close(200, "done".into())).await;
        Ok(out)
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

    /// Consumes until `stop` or a broker failure. Up to `prefetch` deliveries are handled
    /// concurrently, so that one report's publisher confirm (a quorum-queue fsync) does not
    /// hold up the next.
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
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            // A failed handler means a failed broker operation: reconnect.
            while let Some(done) = inflight.try_join_next() {
                self.check_handled(&live, done).await?;
            }
            if inflight.len() >= usize::from(self.settings.prefetch) {
                if let Some(done) = inflight.join_next().await {
                    self.check_handled(&live, done).await?;
                }
                continue;
            }
            let next = tokio::select! {
                _ = stop.changed() => {
                    while let Some(done) = inflight.join_next().await {
                        let _ = self.check_handled(&live, done).await;
                    }
                    let _ = tokio::time::timeout(t, channel.close(200, "stopping".into())).await;
                    return Ok(());
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    self.check_handled(&live, done).await?;
                    continue;
                }
                next = tokio::time::timeout(Duration::from_secs(10), consumer.next()) => next,
            };
            let delivery = match next {
                Err(_) => {
                    if live.connection.status().connected() && channel.status().connected() {
                        continue;
                    }
                    self.invalidate(&live).await;
                    return Err(HubError::BrokerUnavailable("the connection closed".into()));
                }
                Ok(None) => {
                    self.invalidate(&live).await;
                    return Err(HubError::BrokerUnavailable(
                        "the consumer was cancelled".into(),
                    ));
                }
                Ok(Some(Err(error))) => {
                    self.invalidate(&live).await;
                    return Err(HubError::BrokerUnavailable(error.to_string()));
                }
                Ok(Some(Ok(delivery))) => delivery,
            };
            let (bus, live, pipeline) = (self.clone(), live.clone(), pipeline.clone());
            inflight.spawn(async move { bus.handle(&live, &pipeline, &delivery).await });
        }
    }

    async fn check_handled(
        &self,
        live: &Arc<Live>,
        done: Result<Result<(), HubError>, tokio::task::JoinError>,
    ) -> Result<(), HubError> {
        let error = match done {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(join) => HubError::Internal(format!("a report handler failed: {join}")),
        };
        self.invalidate(live).await;
        Err(error)
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
                warn!(%reason, "dead-lettering a raw report");
                let mut headers = FieldTable::default();
                headers.insert(REASON_HEADER.into(), text(&reason));
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers);
                self.publish_confirmed(
                    live,
                    "",
                    &self.dead_queue(),
                    &delivery.data,
                    properties,
                    true,
                )
                .await?;
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
        // Every bound queue gets the item, the reporters' own too; their feeds skip it by
        // this header.
        let origins: Vec<AMQPValue> = item.origins.iter().map(|o| text(o)).collect();
        let mut headers = FieldTable::default();
        headers.insert(
            ORIGINS_HEADER.into(),
            AMQPValue::FieldArray(FieldArray::from(origins)),
        );
        let confirmed = self
            .publish_confirmed(
                live,
                &self.reports_exchange(),
                &item.routing_key,
                &item.body,
                persistent(&item.id.to_string()).with_headers(headers),
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
        if let Some(live) = self.live.lock().await.take() {
            let _ = tokio::time::timeout(
                self.timeout(),
                live.connection.close(200, "hub stopping".into()),
            )
            .await;
        }
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
