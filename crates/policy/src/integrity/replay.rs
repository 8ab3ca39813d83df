//! Remembers the signatures (and nonces) accepted recently, so that a signed request sent
//! again within its time window is refused. Outside the window the `created` check refuses
//! it, so an entry is kept only as long as its signature could still pass that check.
//!
//! Bounded: at most `capacity` entries. Only verified signatures are remembered (a client
//! without a key cannot fill the cache); when legitimate traffic fills it, the oldest entries
//! are forgotten early and counted (`apiguard_signature_replay_evictions_total`): raise
//! `signatures.replay_cache_size` when that counter moves.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

pub type Fingerprint = [u8; 32];

pub struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
    evictions: IntCounter,
    entries: IntGauge,
}

#[derive(Default)]
struct Inner {
    /// Fingerprint → when it may be forgotten.
    seen: HashMap<Fingerprint, Instant>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(Fingerprint, Instant)>,
}

impl Inner {
    fn forget_front(&mut self) {
        if let Some((fingerprint, until)) = self.order.pop_front()
            && self.seen.get(&fingerprint) == Some(&until)
        {
            self.seen.remove(&fingerprint);
        }
    }
}

impl ReplayCache {
    pub fn new(capacity: usize, evictions: IntCounter, entries: IntGauge) -> Self {
        ReplayCache {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            evictions,
            entries,
        }
    }

    /// Records `fingerprints` (a signature, and its nonce when it has one) for `ttl`.
    /// Returns false, recording nothing, when one of them is already remembered: a replay.
    pub fn first_use(&self, fingerprints: &[Fingerprint], ttl: Duration, now: Instant) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((_, until)) = inner.order.front() {
            if *until > now {
                break;
            }
            inner.forget_front();
        }
        if fingerprints
            .iter()
            .any(|f| inner.seen.get(f).is_some_and(|until| *until > now))
        {
            return false;
        }
        // A year is longer than any sensible window; it also keeps `Instant` from overflowing.
        let until = now
            .checked_add(ttl.min(Duration::from_secs(365 * 24 * 3600)))
            .unwrap_or(now);
        for fingerprint in fingerprints {
            while inner.seen.len() >= self.capacity && !inner.order.is_empty() {
                inner.forget_front();
                self.evictions.inc();
            }
            inner.seen.insert(*fingerprint, until);
            inner.order.push_back((*fingerprint, until));
        }
        self.entries.set(inner.seen.len() as i64);
        true
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> ReplayCache {
        ReplayCache::new(
            capacity,
            IntCounter::new("e", "e").unwrap(),
            IntGauge::new("n", "n").unwrap(),
        )
    }

    #[test]
    fn a_fingerprint_is_refused_until_it_expires() {
        let cache = cache(10);
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        assert!(cache.first_use(&[[1; 32]], ttl, now));
        assert!(!cache.first_use(&[[1; 32]], ttl, now + Duration::from_secs(59)));
        // A request whose nonce was seen is a replay even with another signature.
        assert!(!cache.first_use(&[[2; 32], [1; 32]], ttl, now));
        assert!(cache.first_use(&[[1; 32]], ttl, now + Duration::from_secs(61)));
        assert_eq!(cache.len(), 1, "the expired entry was forgotten");
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let cache = cache(3);
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        for i in 0..5u8 {
            assert!(cache.first_use(&[[i; 32]], ttl, now));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.evictions.get(), 2);
        assert!(cache.first_use(&[[0; 32]], ttl, now), "evicted early");
        assert!(!cache.first_use(&[[4; 32]], ttl, now), "newest kept");
    }
}
