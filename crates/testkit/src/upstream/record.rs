//! What the test upstream remembers about the traffic it saw: counters and the most recent
//! requests, so that tests can assert on what the gateway actually forwarded.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use http::{HeaderMap, Method, Version};

/// How many requests are kept; older ones are dropped so a long test stays bounded.
const MAX_RECORDED: usize = 1024;

/// One request as the upstream received it (head only; bodies are counted, not kept).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub version: Version,
    /// The TCP peer, i.e. the gateway when traffic goes through it.
    pub peer: SocketAddr,
}

#[derive(Default)]
pub(crate) struct Recorder {
    requests: AtomicU64,
    connections: AtomicU64,
    per_path: Mutex<HashMap<String, u64>>,
    recent: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    pub(crate) fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *lock(&self.per_path)
            .entry(request.path.clone())
            .or_default() += 1;
        let mut recent = lock(&self.recent);
        if recent.len() == MAX_RECORDED {
            recent.pop_front();
        }
        recent.push_back(request);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn requests_for(&self, path: &str) -> u64 {
        lock(&self.per_path).get(path).copied().unwrap_or(0)
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn recent(&self) -> Vec<RecordedRequest> {
        lock(&self.recent).iter().cloned().collect()
    }

    pub(crate) fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        lock(&self.per_path).clear();
        lock(&self.recent).clear();
    }
}

// A panicking test thread must not turn every later assertion into a poison error.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
