//! The in-process bus of embedded mode: a bounded ingest channel, one bounded queue per
//! participant filtered by its subscription, and a dead-letter list. Nothing survives a
//! restart except what the store holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::FeedAnswer;
use super::lease::{Confirm, Leases};
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
    /// Feed answers awaiting confirmation: `(participant, items)`.
    leases: Leases<(String, Vec<Vec<u8>>)>,
}

impl MemoryBus {
    /// A bus whose ingest channel holds `capacity` raw reports, with the default feed lease
    /// (30 s).
    pub fn new(capacity: usize) -> Self {
        Self::with_feed_lease(capacity, Duration::from_secs(30))
    }

    /// A bus whose ingest channel holds `capacity` raw reports and whose feed answers are
    /// delivered again when not confirmed within `feed_lease`.
    pub fn with_feed_lease(capacity: usize, feed_lease: Duration) -> Self {
        let (ingest, receiver) = mpsc::channel(capacity.max(1));
        Self {
            ingest,
            receiver: Mutex::new(Some(receiver)),
            feeds: Mutex::new(HashMap::new()),
            dead: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            leases: Leases::new(feed_lease),
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
    /// first. They stay leased until confirmed (see [`Confirm`]); unconfirmed, they go back
    /// to the head of the queue when the lease ends.
    pub async fn fetch(
        &self,
        id: &str,
        max: usize,
        wait: Duration,
        confirm: &Confirm,
    ) -> Result<FeedAnswer, HubError> {
        // Expired leases first: a client back after its lease ended gets the items again
        // rather than confirming them unseen.
        self.release_expired();
        let confirmed = match confirm {
            Confirm::Implicit => {
                drop(self.leases.take_implicit(id));
                None
            }
            Confirm::Explicit(None) => None,
            Confirm::Explicit(Some(token)) => Some(self.confirm(id, token)),
        };
        if !self.leases.has_room() {
            return Err(HubError::Overloaded(
                "too many feed answers await their confirmation".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let items = loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut feeds = lock(&self.feeds);
                if let Some(feed) = feeds.get_mut(id)
                    && !feed.queue.is_empty()
                {
                    let take = max.min(feed.queue.len());
                    break feed.queue.drain(..take).collect::<Vec<_>>();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break Vec::new();
            }
        };
        if items.is_empty() {
            return Ok(FeedAnswer {
                items: Vec::new(),
                ack: None,
                confirmed,
            });
        }
        let answer = items
            .iter()
            .filter(|item| serde_json::from_slice::<serde::de::IgnoredAny>(item).is_ok())
            .cloned()
            .collect();
        let implicit = *confirm == Confirm::Implicit;
        let (token, evicted) = self.leases.insert(id, implicit, (id.to_owned(), items));
        for lease in evicted {
            self.release(lease);
        }
        Ok(FeedAnswer {
            items: answer,
            ack: Some(token),
            confirmed,
        })
    }

    /// Confirms a feed answer; false when the token is unknown (released, or never given).
    pub fn confirm(&self, id: &str, token: &str) -> bool {
        self.leases.take(id, token).is_some()
    }

    /// Puts the items of leases whose time is up back into their queues.
    pub fn release_expired(&self) {
        for lease in self.leases.take_expired() {
            self.release(lease);
        }
    }

    fn release(&self, (participant, items): (String, Vec<Vec<u8>>)) {
        let mut feeds = lock(&self.feeds);
        if let Some(feed) = feeds.get_mut(&participant) {
            for item in items.into_iter().rev() {
                feed.queue.push_front(item);
            }
        }
        drop(feeds);
        self.arrived.notify_waiters();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
