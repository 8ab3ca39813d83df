//! The in-process bus of embedded mode: a bounded ingest channel, one bounded queue per
//! participant filtered by its subscription, and a dead-letter list. Nothing survives a
//! restart except what the store holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::error::HubError;
use crate::feed::FeedRow;
use crate::subscription::Subscription;

/// How many participant messages each participant queue holds before dropping the oldest.
const FEED_MAX: usize = 100_000;
/// How many dead letters are kept for inspection.
const DEAD_MAX: usize = 1000;

struct Feed {
    subscription: Subscription,
    queue: VecDeque<Vec<u8>>,
}

/// The embedded bus.
pub struct MemoryBus {
    ingest: mpsc::Sender<Vec<u8>>,
    receiver: Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    feeds: Mutex<HashMap<String, Feed>>,
    dead: Mutex<VecDeque<(String, Vec<u8>)>>,
    arrived: Notify,
}

impl MemoryBus {
    /// A bus whose ingest channel holds `capacity` raw reports.
    pub fn new(capacity: usize) -> Self {
        let (ingest, receiver) = mpsc::channel(capacity.max(1));
        Self {
            ingest,
            receiver: Mutex::new(Some(receiver)),
            feeds: Mutex::new(HashMap::new()),
            dead: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
        }
    }

    /// The ingest receiver, for the one worker.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Vec<u8>>> {
        lock(&self.receiver).take()
    }

    /// Queues a raw report; refuses when the channel is full.
    pub fn submit(&self, bytes: Vec<u8>) -> Result<(), HubError> {
        self.ingest.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                HubError::Overloaded("the ingest queue is full; retry later".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                HubError::Internal("the ingest worker has stopped".into())
            }
        })
    }

    /// Creates (or updates the filter of) a participant's queue.
    pub fn ensure_participant(&self, id: &str, subscription: &Subscription) {
        let mut feeds = lock(&self.feeds);
        feeds
            .entry(id.to_owned())
            .and_modify(|f| f.subscription = subscription.clone())
            .or_insert_with(|| Feed {
                subscription: subscription.clone(),
                queue: VecDeque::new(),
            });
    }

    /// Delivers a feed item to every participant whose filter accepts it, except its
    /// origins.
    pub fn publish(&self, row: &FeedRow) {
        let mut feeds = lock(&self.feeds);
        for (id, feed) in feeds.iter_mut() {
            if !row.is_from(id) && feed.subscription.matches_key(&row.routing_key) {
                if feed.queue.len() >= FEED_MAX {
                    feed.queue.pop_front();
                }
                feed.queue.push_back(row.body.clone());
            }
        }
        drop(feeds);
        self.arrived.notify_waiters();
    }

    /// Keeps a poison message with its reason.
    pub fn dead_letter(&self, bytes: Vec<u8>, reason: String) {
        let mut dead = lock(&self.dead);
        if dead.len() >= DEAD_MAX {
            dead.pop_front();
        }
        dead.push_back((reason, bytes));
    }

    /// The dead letters: `(reason, message)`.
    pub fn dead_letters(&self) -> Vec<(String, Vec<u8>)> {
        lock(&self.dead).iter().cloned().collect()
    }

    /// Takes up to `max` messages from a participant's queue, waiting up to `wait` for the
    /// first.
    pub async fn fetch(&self, id: &str, max: usize, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut feeds = lock(&self.feeds);
                if let Some(feed) = feeds.get_mut(id)
                    && !feed.queue.is_empty()
                {
                    let take = max.min(feed.queue.len());
                    return feed.queue.drain(..take).collect();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
