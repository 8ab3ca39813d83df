//! The message bus between ingest, workers and participants: RabbitMQ in production, an
//! in-process bus in embedded mode. Both give the same semantics to the front doors: a
//! submit returns once the raw report is queued (confirmed by the broker), or refuses with
//! [`HubError::Overloaded`] when the ingest queue is full.

pub mod lease;
pub mod memory;
pub mod rabbit;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;
use uuid::Uuid;

use crate::error::HubError;
use crate::feed::FeedRow;
use crate::pipeline::{BatchOutcome, Outcome, Pipeline, ProcessError};
use crate::store::Participant;
use crate::subscription::Subscription;

pub use lease::Confirm;
pub use memory::MemoryBus;
pub use rabbit::RabbitBus;

/// Most messages an embedded worker processes as one batch.
const MEMORY_BATCH: usize = 256;

/// One answer of a participant's feed.
#[derive(Debug, Default)]
pub struct FeedAnswer {
    /// Feed items (canonical reports and withdrawals), in order: each one JSON value, as
    /// stored, passed on without being parsed.
    pub items: Vec<Vec<u8>>,
    /// The token that confirms this answer; `None` when it is empty. Unconfirmed, its items
    /// are delivered again once the lease (`limits.feed_lease`) ends.
    pub ack: Option<String>,
    /// Whether the answer the call confirmed by token was still leased (`None`: the call
    /// named no token). False means its items were (or will be) delivered again.
    pub confirmed: Option<bool>,
}

/// RabbitMQ or in-process.
#[derive(Clone)]
pub enum Bus {
    Rabbit(Arc<RabbitBus>),
    Memory(Arc<MemoryBus>),
}

impl Bus {
    /// Queues a raw report (an envelope) for the workers.
    pub async fn submit(&self, id: Uuid, bytes: Vec<u8>) -> Result<(), HubError> {
        match self {
            Bus::Rabbit(bus) => bus.submit(id, &bytes).await,
            Bus::Memory(bus) => bus.submit(bytes),
        }
    }

    /// Queues many raw reports together; one result per report, in order. On RabbitMQ the
    /// publishes are pipelined and their confirms awaited together.
    pub async fn submit_many(&self, items: &[(Uuid, Vec<u8>)]) -> Vec<Result<(), HubError>> {
        match self {
            Bus::Rabbit(bus) => bus.submit_many(items).await,
            Bus::Memory(bus) => items
                .iter()
                .map(|(_, bytes)| bus.submit(bytes.clone()))
                .collect(),
        }
    }

    /// Creates a participant's queue with its subscription.
    pub async fn ensure_participant(
        &self,
        id: &str,
        subscription: &Subscription,
    ) -> Result<(), HubError> {
        match self {
            Bus::Rabbit(bus) => bus.ensure_participant(id, subscription).await,
            Bus::Memory(bus) => {
                bus.ensure_participant(id, subscription);
                Ok(())
            }
        }
    }

    /// Publishes one feed item to every participant whose subscription accepts it, except
    /// its origins; returns once the broker confirmed it.
    pub async fn publish_feed(&self, row: &FeedRow) -> Result<(), HubError> {
        match self {
            Bus::Rabbit(bus) => bus.publish_feed(row).await,
            Bus::Memory(bus) => {
                bus.publish(row);
                Ok(())
            }
        }
    }

    /// Takes up to `max` feed items (canonical JSON) from a participant's queue, waiting up to
    /// `wait` for the first, after confirming earlier answers as `confirm` says. The items
    /// stay on the bus until their answer is confirmed.
    /// `participant` as stored now: its subscription filters what is answered.
    pub async fn fetch(
        &self,
        participant: &Participant,
        max: usize,
        wait: Duration,
        confirm: &Confirm,
    ) -> Result<FeedAnswer, HubError> {
        let id = participant.id.as_str();
        match self {
            Bus::Rabbit(bus) => {
                bus.fetch(id, &participant.subscription, max, wait, confirm)
                    .await
            }
            Bus::Memory(bus) => bus.fetch(id, max, wait, confirm).await,
        }
    }

    /// Moves a participant's queue to a new subscription (see
    /// [`RabbitBus::change_subscription`]); `stale`: the binding keys to remove.
    pub async fn change_subscription(
        &self,
        id: &str,
        subscription: &Subscription,
        stale: &[String],
    ) -> Result<(), HubError> {
        match self {
            Bus::Rabbit(bus) => bus.change_subscription(id, subscription, stale).await,
            Bus::Memory(bus) => {
                bus.ensure_participant(id, subscription);
                Ok(())
            }
        }
    }

    /// Removes binding keys left over from earlier subscriptions.
    pub async fn unbind_stale(&self, id: &str, keys: &[String]) -> Result<(), HubError> {
        match self {
            Bus::Rabbit(bus) => bus.unbind_stale(id, keys).await,
            Bus::Memory(_) => Ok(()),
        }
    }

    /// Confirms a feed answer by its token; false when it is no longer leased.
    pub async fn confirm_feed(&self, participant_id: &str, token: &str) -> bool {
        match self {
            Bus::Rabbit(bus) => bus.confirm(participant_id, token).await,
            Bus::Memory(bus) => bus.confirm(participant_id, token),
        }
    }

    /// Releases feed answers whose lease ended: their items are delivered again.
    pub async fn release_expired_feed(&self) {
        match self {
            Bus::Rabbit(bus) => bus.release_expired().await,
            Bus::Memory(bus) => bus.release_expired(),
        }
    }

    /// Starts the ingest workers.
    pub fn spawn_workers(
        &self,
        pipeline: Arc<Pipeline>,
        workers: usize,
        stop: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        match self {
            Bus::Rabbit(bus) => (0..workers)
                .map(|index| {
                    tokio::spawn(
                        bus.clone()
                            .run_worker(pipeline.clone(), index, stop.clone()),
                    )
                })
                .collect(),
            Bus::Memory(bus) => match bus.take_receiver() {
                Some(receiver) => vec![tokio::spawn(run_memory_worker(
                    bus.clone(),
                    receiver,
                    pipeline,
                    stop,
                ))],
                None => Vec::new(),
            },
        }
    }

    /// Closes broker connections.
    pub async fn close(&self) {
        if let Bus::Rabbit(bus) = self {
            bus.close().await;
        }
    }
}

async fn run_memory_worker(
    bus: Arc<MemoryBus>,
    mut receiver: tokio::sync::mpsc::Receiver<Vec<u8>>,
    pipeline: Arc<Pipeline>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            bytes = receiver.recv() => match bytes {
                Some(bytes) => bytes,
                None => return,
            },
        };
        let mut messages = vec![first];
        while messages.len() < MEMORY_BATCH {
            match receiver.try_recv() {
                Ok(bytes) => messages.push(bytes),
                Err(_) => break,
            }
        }
        let views: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let mut batch = pipeline.process_batch(&views).await;
        for item in &batch.items {
            bus.publish(item);
        }
        if let Err(error) = pipeline.batch_published(&mut batch).await {
            warn!(%error, "could not mark a batch published");
        }
        for (bytes, outcome) in messages.into_iter().zip(batch.outcomes) {
            match outcome {
                BatchOutcome::Done | BatchOutcome::Duplicate => {}
                BatchOutcome::Poison(reason) => {
                    warn!(%reason, "dead-lettering a raw report");
                    bus.dead_letter(bytes, reason);
                }
                BatchOutcome::Alone => process_alone(&bus, &pipeline, bytes).await,
            }
        }
    }
}

/// The single way for one message, with retries of transient failures.
async fn process_alone(bus: &MemoryBus, pipeline: &Pipeline, bytes: Vec<u8>) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match pipeline.process(&bytes).await {
            Ok(Outcome::Publish {
                report_id,
                items,
                claim,
            }) => {
                for item in &items {
                    bus.publish(item);
                }
                if let Err(error) = pipeline.published(report_id, &items).await {
                    warn!(%error, "could not mark a report published");
                }
                drop(claim);
            }
            Ok(Outcome::Duplicate) => {}
            Err(ProcessError::Poison(reason)) => {
                warn!(%reason, "dead-lettering a raw report");
                bus.dead_letter(bytes, reason);
            }
            Err(ProcessError::Transient(error)) if attempt < 5 => {
                warn!(%error, attempt, "a raw report could not be processed now; retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                continue;
            }
            Err(ProcessError::Transient(error)) => {
                bus.dead_letter(bytes, format!("gave up after {attempt} attempts: {error}"));
            }
        }
        return;
    }
}
