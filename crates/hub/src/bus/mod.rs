//! The message bus between ingest, workers and participants: RabbitMQ in production, an
//! in-process bus in embedded mode. Both give the same semantics to the front doors: a
//! submit returns once the raw report is queued (confirmed by the broker), or refuses with
//! [`HubError::Overloaded`] when the ingest queue is full.

pub mod memory;
pub mod rabbit;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;
use uuid::Uuid;

use crate::error::HubError;
use crate::feed::FeedRow;
use crate::pipeline::{Outcome, Pipeline, ProcessError};
use crate::subscription::Subscription;

pub use memory::MemoryBus;
pub use rabbit::RabbitBus;

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

    /// Takes up to `max` feed items (canonical JSON) from a participant's queue.
    pub async fn fetch(
        &self,
        participant_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, HubError> {
        match self {
            Bus::Rabbit(bus) => bus.fetch(participant_id, max, wait).await,
            Bus::Memory(bus) => Ok(bus.fetch(participant_id, max, wait).await),
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
        let bytes = tokio::select! {
            _ = stop.changed() => return,
            bytes = receiver.recv() => match bytes {
                Some(bytes) => bytes,
                None => return,
            },
        };
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
            break;
        }
    }
}
