//! apiguard's behavioural detection (stage 9 of the pipeline): baselines learned from live
//! traffic per endpoint (route, method, path template) and per client (identity or address),
//! and the models that judge a request against them:
//!
//! - the positive model ([`shape`]): a value that does not fit its parameter's learned shape;
//! - enumeration / BOLA: one client walking many distinct ids of one endpoint;
//! - probing: many distinct paths answered 404 to one client (CrowdSec's `http-probing`);
//! - crawling: many distinct non-static paths (CrowdSec's `http-crawl-non_statics`);
//! - rate bursts and authentication failures per client (leaky buckets).
//!
//! Every finding explains itself: rule `behavior.*`, class `behavior`, evidence "observed X,
//! expected Y". State is sharded (no global lock on the request path) and bounded.

#![forbid(unsafe_code)]

pub mod bucket;
pub mod settings;
pub mod shape;
pub mod template;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use apiguard_model::{Finding, Outcome, RequestContext, RequestView, Severity, Stage};
use serde::{Deserialize, Serialize};

pub use bucket::{Bucket, BucketParams, DistinctBucket};
pub use settings::{Limits, Mode, Settings};
pub use shape::{CharClass, Deviation, ParamShape, ShapeParams};
use template::Templated;

const SHARDS: usize = 32;
/// Recent findings kept per client for the admin API.
const RECENT_FINDINGS: usize = 8;
/// Endpoint templates tracked per client for enumeration.
const WALKS_PER_CLIENT: usize = 16;
/// Longest value decoded for judging.
const VALUE_LIMIT: usize = 4096;

/// A mean and variance that follow the recent past (exponentially weighted).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Ewma {
    pub mean: f64,
    pub variance: f64,
    pub samples: u64,
}

impl Ewma {
    pub fn add(&mut self, value: f64) {
        self.samples += 1;
        // Plain average while young, then a 1/50 weight on the newest value.
        let alpha = 1.0 / (self.samples.min(50) as f64);
        let delta = value - self.mean;
        self.mean += alpha * delta;
        self.variance = (1.0 - alpha) * (self.variance + alpha * delta * delta);
    }

    pub fn stddev(&self) -> f64 {
        self.variance.sqrt()
    }
}

/// What was learned about one endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Endpoint {
    pub route: String,
    pub method: String,
    pub template: String,
    pub requests: u64,
    /// Requests learned from: not flagged, answered below 400.
    pub clean: u64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 5],
    pub latency_ms: Ewma,
    pub request_bytes: Ewma,
    pub response_bytes: Ewma,
    /// Requests per second, decayed over a minute.
    pub rate: DecayedRate,
    /// Parameter shapes by target (`query:name`, `path:2`).
    pub params: BTreeMap<String, ParamShape>,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// A count that decays exponentially (time constant one minute): a rate without windows.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct DecayedRate {
    value: f64,
    last_ms: u64,
}

impl DecayedRate {
    const TAU_MS: f64 = 60_000.0;

    pub fn add(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        self.value = self.value * (-dt / Self::TAU_MS).exp() + 1.0;
        self.last_ms = now_ms.max(self.last_ms);
    }

    /// Events per second.
    pub fn per_second(&self, now_ms: u64) -> f64 {
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        self.value * (-dt / Self::TAU_MS).exp() / (Self::TAU_MS / 1000.0)
    }
}

impl Endpoint {
    pub fn error_ratio(&self) -> f64 {
        let errors = self.status[3] + self.status[4];
        if self.requests == 0 {
            0.0
        } else {
            errors as f64 / self.requests as f64
        }
    }
}

/// One client's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientState {
    pub first_ms: u64,
    pub last_ms: u64,
    pub requests: u64,
    pub flagged: u64,
    pub status: [u64; 5],
    rate: Bucket,
    probing: DistinctBucket,
    crawling: DistinctBucket,
    auth_failures: Bucket,
    /// Enumeration buckets by endpoint template.
    walks: Vec<Walk>,
    /// The last findings about this client, newest last.
    pub recent: VecDeque<RecentFinding>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Walk {
    template: String,
    ids: DistinctBucket,
    last_ms: u64,
}

/// A finding kept for the admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentFinding {
    pub at_ms: u64,
    pub rule_id: String,
    pub target: String,
    pub evidence: String,
}

/// A map split into shards, each behind its own lock.
struct Sharded<V> {
    shards: Vec<Mutex<HashMap<String, V>>>,
    hasher: RandomState,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, V>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding a shard leaves plain counters behind: keep going.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// The learned state, shared by every route and kept across configuration reloads.
pub struct Behavior {
    started: Instant,
    limits: Limits,
    endpoints: Sharded<Endpoint>,
    clients: Sharded<ClientState>,
    endpoint_count: AtomicUsize,
    /// Endpoints not learned because `max_endpoints` was reached.
    endpoints_dropped: AtomicU64,
    hasher: RandomState,
}

/// A hash of a value for distinct buckets (only compared within one process).
fn hash_of(hasher: &RandomState, value: impl Hash) -> u64 {
    hasher.hash_one(value)
}

/// What the proxy tells the behaviour stage once a response head is known.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub method: &'a http::Method,
    /// The path as routed (normalised), still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub client: IpAddr,
    /// The authenticated subject, when an authentication stage set one.
    pub identity: Option<&'a str>,
    pub status: u16,
    pub latency: Duration,
    pub request_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
    /// Whether some stage made a finding about the request: it is not learned from.
    pub flagged: bool,
}

/// The summary of one endpoint for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    pub route: String,
    pub method: String,
    pub template: String,
    pub requests: u64,
    pub clean: u64,
    pub learned: bool,
    pub error_ratio: f64,
    pub rate_per_second: f64,
    pub latency_ms: Ewma,
    pub request_bytes: Ewma,
    pub response_bytes: Ewma,
    pub params: BTreeMap<String, ParamSummary>,
}

/// One parameter's learned shape, readable.
#[derive(Debug, Clone, Serialize)]
pub struct ParamSummary {
    pub samples: u64,
    pub class: CharClass,
    pub min_len: usize,
    pub max_len: usize,
    /// The allowed values when it is an enumeration.
    pub values: Option<Vec<String>>,
}

/// One client's state for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    pub client: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub requests: u64,
    pub flagged: u64,
    pub status: [u64; 5],
    /// Current bucket levels (with the route's defaults): rate, probing, crawling, auth.
    pub levels: BTreeMap<&'static str, f64>,
    /// Enumeration levels by endpoint template.
    pub walks: BTreeMap<String, f64>,
    pub recent_findings: Vec<RecentFinding>,
}

/// The key a client is tracked under: `user:<subject>` when authenticated, else its address.
pub fn client_key(identity: Option<&str>, address: IpAddr) -> String {
    match identity {
        Some(subject) => format!("user:{subject}"),
        None => address.to_canonical().to_string(),
    }
}

fn status_class(status: u16) -> usize {
    (usize::from(status / 100).clamp(1, 5)) - 1
}

fn endpoint_key(route: &str, method: &str, template: &str) -> String {
    let mut key = String::with_capacity(route.len() + method.len() + template.len() + 2);
    key.push_str(route);
    key.push(' ');
    key.push_str(method);
    key.push(' ');
    key.push_str(template);
    key
}

/// Query arguments as `(name, value)` pairs, still encoded.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

impl Behavior {
    pub fn new(limits: Limits) -> Self {
        Behavior {
            started: Instant::now(),
            limits,
            endpoints: Sharded::new(),
            clients: Sharded::new(),
            endpoint_count: AtomicUsize::new(0),
            endpoints_dropped: AtomicU64::new(0),
            hasher: RandomState::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Milliseconds since the engine started (monotonic).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Endpoints learned (the `behavior_learned_endpoints` gauge).
    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count.load(Ordering::Relaxed)
    }

    /// Clients tracked (the `behavior_tracked_clients` gauge).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn endpoints_dropped(&self) -> u64 {
        self.endpoints_dropped.load(Ordering::Relaxed)
    }

    /// Judges a request: what the stage does before the request is forwarded.
    pub fn judge(
        &self,
        settings: &Settings,
        route: &str,
        request: &RequestView<'_>,
        identity: Option<&str>,
        now_ms: u64,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        if settings.mode == Mode::Off {
            return findings;
        }
        let path = request.path();
        let templated = template::template(path);
        if let Some(shape) = &settings.shape {
            self.judge_shape(shape, route, request, &templated, &mut findings);
        }
        let key = client_key(identity, request.client.peer.ip());
        self.judge_client(settings, &key, path, &templated, now_ms, &mut findings);
        if !findings.is_empty() {
            let mut clients = self.clients.shard(&key);
            if let Some(client) = clients.get_mut(&key) {
                client.flagged += 1;
                for f in &findings {
                    if client.recent.len() >= RECENT_FINDINGS {
                        client.recent.pop_front();
                    }
                    client.recent.push_back(RecentFinding {
                        at_ms: now_ms,
                        rule_id: f.rule_id.to_string(),
                        target: f.target.clone(),
                        evidence: f.evidence.clone(),
                    });
                }
            }
        }
        let score = settings.mode == Mode::Enforce;
        if settings.mode == Mode::Learn {
            findings.clear();
        } else if !score {
            findings.iter_mut().for_each(|f| f.score = 0);
        }
        findings
    }

    fn judge_shape(
        &self,
        params: &ShapeParams,
        route: &str,
        request: &RequestView<'_>,
        templated: &Templated,
        findings: &mut Vec<Finding>,
    ) {
        let method = request.method.as_str();
        let exact = endpoint_key(route, method, &templated.template);
        let learned = |e: &Endpoint| e.clean >= params.min_samples;
        // The endpoint as templated, or, when that is unknown, the learned endpoint it is with
        // one more segment read as an identifier (`/users/abc` → `/users/{id}`).
        let mut ids: Vec<(usize, String)> = templated.ids.clone();
        let mut found = {
            let shard = self.endpoints.shard(&exact);
            shard
                .get(&exact)
                .filter(|e| learned(e))
                .map(|_| exact.clone())
        };
        if found.is_none() {
            for (index, widened) in template::widenings(templated) {
                let key = endpoint_key(route, method, &widened);
                let shard = self.endpoints.shard(&key);
                if shard.get(&key).is_some_and(learned) {
                    let segment = request.path().split('/').nth(index).unwrap_or("");
                    ids.push((index, segment.to_owned()));
                    found = Some(key);
                    break;
                }
            }
        }
        let Some(key) = found else { return };
        let shard = self.endpoints.shard(&key);
        let Some(endpoint) = shard.get(&key) else {
            return;
        };
        let mut judge = |target: String, raw: &str, plus: bool, enumerable: bool| {
            let Some(shape) = endpoint.params.get(&target) else {
                return;
            };
            let value = shape::decode(raw, plus, VALUE_LIMIT);
            if let Some(deviation) = shape.check(&value, params, enumerable) {
                findings.push(shape_finding(target, &value, deviation, shape));
            }
        };
        for (index, value) in &ids {
            judge(format!("path:{index}"), value, false, false);
        }
        for (name, value) in query_pairs(request.query()) {
            let name = shape::decode(name, true, 256);
            judge(format!("query:{name}"), value, true, true);
        }
    }

    fn judge_client(
        &self,
        settings: &Settings,
        key: &str,
        path: &str,
        templated: &Templated,
        now_ms: u64,
        findings: &mut Vec<Finding>,
    ) {
        let path_hash = hash_of(&self.hasher, path);
        let mut clients = self.clients.shard(key);
        let client = match clients.get_mut(key) {
            Some(client) => client,
            None => {
                self.make_room(&mut clients);
                clients
                    .entry(key.to_owned())
                    .or_insert_with(|| ClientState {
                        first_ms: now_ms,
                        ..ClientState::default()
                    })
            }
        };
        client.requests += 1;
        client.last_ms = now_ms;
        if let Some(p) = settings.rate {
            let level = client.rate.pour(now_ms, p);
            if level > p.capacity as f64 {
                findings.push(finding(
                    "behavior.rate.burst",
                    Severity::Critical,
                    "client".into(),
                    format!(
                        "observed {} requests in the client's bucket, expected at most {} (one leaks every {} ms)",
                        level.floor(),
                        p.capacity,
                        p.leak_ms
                    ),
                ));
            }
        }
        if let Some(p) = settings.probing
            && client.probing.overflowing(now_ms, p)
        {
            findings.push(finding(
                "behavior.probing",
                Severity::Critical,
                "client".into(),
                format!(
                    "observed {} distinct paths answered 404 in the client's bucket, expected at most {} (one leaks every {} ms)",
                    client.probing.level(now_ms, p).floor(),
                    p.capacity,
                    p.leak_ms
                ),
            ));
        }
        if let Some(p) = settings.auth_failures
            && client.auth_failures.overflowing(now_ms, p)
        {
            findings.push(finding(
                "behavior.auth_failures",
                Severity::Critical,
                "client".into(),
                format!(
                    "observed {} authentication failures (401/403) in the client's bucket, expected at most {} (one leaks every {} ms)",
                    client.auth_failures.level(now_ms, p).floor(),
                    p.capacity,
                    p.leak_ms
                ),
            ));
        }
        if let Some(p) = settings.crawling
            && !template::is_static(path)
        {
            client.crawling.pour(path_hash, now_ms, p);
            if client.crawling.overflowing(now_ms, p) {
                findings.push(finding(
                    "behavior.crawling",
                    Severity::Error,
                    "client".into(),
                    format!(
                        "observed {} distinct non-static paths in the client's bucket, expected at most {} (one leaks every {} ms)",
                        client.crawling.level(now_ms, p).floor(),
                        p.capacity,
                        p.leak_ms
                    ),
                ));
            }
        }
        if let Some(p) = settings.enumeration
            && !templated.ids.is_empty()
        {
            let ids_hash = hash_of(&self.hasher, &templated.ids);
            let position = client
                .walks
                .iter()
                .position(|w| w.template == templated.template);
            let index = match position {
                Some(i) => i,
                None => {
                    if client.walks.len() >= WALKS_PER_CLIENT {
                        let oldest = client
                            .walks
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, w)| w.last_ms)
                            .map_or(0, |(i, _)| i);
                        client.walks.swap_remove(oldest);
                    }
                    client.walks.push(Walk {
                        template: templated.template.clone(),
                        ..Walk::default()
                    });
                    client.walks.len() - 1
                }
            };
            let walk = &mut client.walks[index];
            walk.last_ms = now_ms;
            walk.ids.pour(ids_hash, now_ms, p);
            if walk.ids.overflowing(now_ms, p) {
                findings.push(finding(
                    "behavior.enumeration",
                    Severity::Critical,
                    format!("path:{}", templated.template),
                    format!(
                        "observed {} distinct ids of {} in the client's bucket, expected at most {} (one leaks every {} ms)",
                        walk.ids.level(now_ms, p).floor(),
                        templated.template,
                        p.capacity,
                        p.leak_ms
                    ),
                ));
            }
        }
    }

    /// Forgets the least recently seen eighth of a full shard.
    fn make_room(&self, shard: &mut HashMap<String, ClientState>) {
        let cap = (self.limits.max_clients / SHARDS).max(1);
        if shard.len() < cap {
            return;
        }
        let mut ages: Vec<(u64, String)> =
            shard.iter().map(|(k, c)| (c.last_ms, k.clone())).collect();
        ages.sort_unstable();
        let evict = (cap / 8).max(1);
        for (_, key) in ages.into_iter().take(evict) {
            shard.remove(&key);
        }
    }

    /// Learns from a response: endpoint statistics always, parameter shapes from clean
    /// requests only; the client's 404 and 401/403 buckets.
    pub fn observe(&self, settings: &Settings, route: &str, obs: &Observation<'_>, now_ms: u64) {
        if settings.mode == Mode::Off {
            return;
        }
        let key = client_key(obs.identity, obs.client);
        {
            let mut clients = self.clients.shard(&key);
            if let Some(client) = clients.get_mut(&key) {
                client.status[status_class(obs.status)] += 1;
                if matches!(obs.status, 404 | 410)
                    && let Some(p) = settings.probing
                    && !template::is_static(obs.path)
                {
                    client
                        .probing
                        .pour(hash_of(&self.hasher, obs.path), now_ms, p);
                }
                if matches!(obs.status, 401 | 403)
                    && let Some(p) = settings.auth_failures
                {
                    client.auth_failures.pour(now_ms, p);
                }
            }
        }
        let templated = template::template(obs.path);
        let ekey = endpoint_key(route, obs.method.as_str(), &templated.template);
        let mut endpoints = self.endpoints.shard(&ekey);
        let endpoint = match endpoints.get_mut(&ekey) {
            Some(e) => e,
            None => {
                // Unknown paths answered "not found" are a scanner's, not endpoints.
                if matches!(obs.status, 404 | 405 | 410) {
                    return;
                }
                if self.endpoint_count.load(Ordering::Relaxed) >= self.limits.max_endpoints {
                    self.endpoints_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.endpoint_count.fetch_add(1, Ordering::Relaxed);
                endpoints.entry(ekey).or_insert_with(|| Endpoint {
                    route: route.to_owned(),
                    method: obs.method.as_str().to_owned(),
                    template: templated.template.clone(),
                    first_ms: now_ms,
                    ..Endpoint::default()
                })
            }
        };
        endpoint.requests += 1;
        endpoint.last_ms = now_ms;
        endpoint.status[status_class(obs.status)] += 1;
        endpoint.rate.add(now_ms);
        endpoint.latency_ms.add(obs.latency.as_secs_f64() * 1000.0);
        if let Some(n) = obs.request_bytes {
            endpoint.request_bytes.add(n as f64);
        }
        if let Some(n) = obs.response_bytes {
            endpoint.response_bytes.add(n as f64);
        }
        if obs.flagged || obs.status >= 400 {
            return;
        }
        endpoint.clean += 1;
        let Some(params) = &settings.shape else {
            return;
        };
        let max_params = self.limits.max_params;
        let mut learn = |target: String, raw: &str, plus: bool| {
            let value = shape::decode(raw, plus, VALUE_LIMIT);
            if let Some(shape) = endpoint.params.get_mut(&target) {
                shape.learn(&value, params);
            } else if endpoint.params.len() < max_params {
                endpoint
                    .params
                    .entry(target)
                    .or_default()
                    .learn(&value, params);
            }
        };
        for (index, value) in &templated.ids {
            learn(format!("path:{index}"), value, false);
        }
        for (name, value) in query_pairs(obs.query) {
            let name = shape::decode(name, true, 256);
            learn(format!("query:{name}"), value, true);
        }
    }

    /// Every learned endpoint, sorted by route, template and method.
    pub fn baselines(&self, settings: &Settings, now_ms: u64) -> Vec<EndpointSummary> {
        let min = settings.shape.as_ref().map_or(u64::MAX, |s| s.min_samples);
        let mut out = Vec::new();
        for shard in &self.endpoints.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for e in shard.values() {
                out.push(EndpointSummary {
                    route: e.route.clone(),
                    method: e.method.clone(),
                    template: e.template.clone(),
                    requests: e.requests,
                    clean: e.clean,
                    learned: e.clean >= min,
                    error_ratio: e.error_ratio(),
                    rate_per_second: e.rate.per_second(now_ms),
                    latency_ms: e.latency_ms,
                    request_bytes: e.request_bytes,
                    response_bytes: e.response_bytes,
                    params: e
                        .params
                        .iter()
                        .map(|(name, p)| {
                            let values = settings
                                .shape
                                .as_ref()
                                .filter(|s| p.is_enumeration(s))
                                .and(p.values.as_ref())
                                .map(|v| v.keys().cloned().collect());
                            (
                                name.clone(),
                                ParamSummary {
                                    samples: p.samples,
                                    class: p.widest(),
                                    min_len: p.min_len,
                                    max_len: p.max_len,
                                    values,
                                },
                            )
                        })
                        .collect(),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.route, &a.template, &a.method).cmp(&(&b.route, &b.template, &b.method))
        });
        out
    }

    /// One client's state (`key` as [`client_key`] makes it), with bucket levels under
    /// `settings`.
    pub fn client(&self, key: &str, settings: &Settings, now_ms: u64) -> Option<ClientSummary> {
        let shard = self.clients.shard(key);
        let c = shard.get(key)?;
        let mut levels = BTreeMap::new();
        if let Some(p) = settings.rate {
            levels.insert("rate", c.rate.level(now_ms, p));
        }
        if let Some(p) = settings.probing {
            levels.insert("probing", c.probing.level(now_ms, p));
        }
        if let Some(p) = settings.crawling {
            levels.insert("crawling", c.crawling.level(now_ms, p));
        }
        if let Some(p) = settings.auth_failures {
            levels.insert("auth_failures", c.auth_failures.level(now_ms, p));
        }
        let walks = settings
            .enumeration
            .map(|p| {
                c.walks
                    .iter()
                    .map(|w| (w.template.clone(), w.ids.level(now_ms, p)))
                    .collect()
            })
            .unwrap_or_default();
        Some(ClientSummary {
            client: key.to_owned(),
            first_ms: c.first_ms,
            last_ms: c.last_ms,
            requests: c.requests,
            flagged: c.flagged,
            status: c.status,
            levels,
            walks,
            recent_findings: c.recent.iter().cloned().collect(),
        })
    }
}

fn finding(rule: &'static str, severity: Severity, target: String, evidence: String) -> Finding {
    Finding {
        rule_id: rule.into(),
        class: "behavior".into(),
        severity,
        score: severity.score(),
        target,
        evidence,
    }
}

/// Shown values are cut to this many characters (evidence is logged and exported).
const EVIDENCE_VALUE_LEN: usize = 40;

fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(EVIDENCE_VALUE_LEN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > EVIDENCE_VALUE_LEN {
        out.push('…');
    }
    out
}

fn shape_finding(target: String, value: &str, deviation: Deviation, shape: &ParamShape) -> Finding {
    match deviation {
        Deviation::Class { observed, expected } => finding(
            "behavior.shape.type",
            Severity::Error,
            target,
            format!(
                "observed `{}` ({}), expected {} ({} clean samples)",
                shown(value),
                observed.as_str(),
                expected.as_str(),
                shape.samples
            ),
        ),
        Deviation::Length {
            observed,
            max_seen,
            allowed,
        } => finding(
            "behavior.shape.length",
            Severity::Warning,
            target,
            format!(
                "observed length {observed}, expected at most {allowed} (longest of {} clean samples: {max_seen})",
                shape.samples
            ),
        ),
        Deviation::Unseen { allowed } => finding(
            "behavior.shape.enum",
            Severity::Warning,
            target,
            format!(
                "observed `{}`, expected one of {}",
                shown(value),
                shown(&allowed.join(", "))
            ),
        ),
    }
}

/// The pipeline stage of one route: judges requests against the shared state under the
/// route's settings, and learns from what the proxy observes after the response.
pub struct BehaviorStage {
    pub route: Arc<str>,
    pub settings: Settings,
    pub engine: Arc<Behavior>,
}

impl BehaviorStage {
    pub fn observe(&self, observation: &Observation<'_>) {
        self.engine.observe(
            &self.settings,
            &self.route,
            observation,
            self.engine.now_ms(),
        );
    }
}

impl Stage for BehaviorStage {
    fn name(&self) -> &'static str {
        "behavior"
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        let identity = ctx.identity.as_ref().map(|i| i.subject.as_str());
        let findings = self.engine.judge(
            &self.settings,
            &self.route,
            request,
            identity,
            self.engine.now_ms(),
        );
        if findings.is_empty() {
            Outcome::Continue
        } else {
            Outcome::Score(findings)
        }
    }
}

/// The snapshot file's format version.
const SNAPSHOT_VERSION: u32 = 1;
/// A snapshot file larger than this is refused rather than read.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;

/// What is persisted: the endpoint baselines (client state is short-lived and is not).
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    endpoints: Vec<Endpoint>,
}

/// Why a snapshot could not be written or read.
#[derive(Debug)]
pub struct PersistError(pub String);

impl std::fmt::Display for PersistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PersistError {}

impl Behavior {
    /// Writes the endpoint baselines to `path` (through a temporary file renamed over it, so a
    /// crash never leaves half a file). Returns the endpoints written.
    pub fn save(&self, path: &std::path::Path) -> Result<usize, PersistError> {
        let mut endpoints = Vec::new();
        for shard in &self.endpoints.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            endpoints.extend(shard.values().cloned());
        }
        let count = endpoints.len();
        let file = SnapshotFile {
            version: SNAPSHOT_VERSION,
            endpoints,
        };
        let text = serde_json::to_vec(&file)
            .map_err(|e| PersistError(format!("cannot encode the baselines: {e}")))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| PersistError(format!("cannot write `{}`: {e}", path.display())))?;
        Ok(count)
    }

    /// Loads endpoint baselines written by [`Behavior::save`], up to `max_endpoints`; times
    /// restart from now. A missing file is no error (nothing learned yet): `Ok(0)`.
    pub fn load(&self, path: &std::path::Path) -> Result<usize, PersistError> {
        let metadata = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(PersistError(format!(
                    "cannot read `{}`: {e}",
                    path.display()
                )));
            }
        };
        if metadata.len() > MAX_SNAPSHOT_BYTES {
            return Err(PersistError(format!(
                "`{}` is {} bytes, more than the {MAX_SNAPSHOT_BYTES} a baseline snapshot may be",
                path.display(),
                metadata.len()
            )));
        }
        let text = std::fs::read(path)
            .map_err(|e| PersistError(format!("cannot read `{}`: {e}", path.display())))?;
        let file: SnapshotFile = serde_json::from_slice(&text).map_err(|e| {
            PersistError(format!(
                "`{}` is not a baseline snapshot: {e}",
                path.display()
            ))
        })?;
        if file.version != SNAPSHOT_VERSION {
            return Err(PersistError(format!(
                "`{}` has snapshot version {}, this gateway reads {SNAPSHOT_VERSION}",
                path.display(),
                file.version
            )));
        }
        let now = self.now_ms();
        let mut loaded = 0;
        for mut endpoint in file.endpoints {
            if self.endpoint_count.load(Ordering::Relaxed) >= self.limits.max_endpoints {
                break;
            }
            while endpoint.params.len() > self.limits.max_params {
                endpoint.params.pop_last();
            }
            endpoint.first_ms = now;
            endpoint.last_ms = now;
            endpoint.rate = DecayedRate::default();
            let key = endpoint_key(&endpoint.route, &endpoint.method, &endpoint.template);
            let mut shard = self.endpoints.shard(&key);
            if shard.insert(key, endpoint).is_none() {
                self.endpoint_count.fetch_add(1, Ordering::Relaxed);
                loaded += 1;
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiguard_model::ClientInfo;
    use http::{HeaderMap, Method, Uri};

    fn client(ip: &str) -> ClientInfo {
        ClientInfo {
            peer: format!("{ip}:40000").parse().unwrap(),
            tls: false,
            client_cert_subject: None,
            client_cert_sans: Vec::new(),
        }
    }

    fn judge(b: &Behavior, s: &Settings, ip: &str, target: &str, now: u64) -> Vec<Finding> {
        let uri: Uri = target.parse().unwrap();
        let headers = HeaderMap::new();
        let info = client(ip);
        let view = RequestView {
            method: &Method::GET,
            uri: &uri,
            version: http::Version::HTTP_11,
            headers: &headers,
            client: &info,
            route: "r",
            request_id: "x",
            body: None,
        };
        b.judge(s, "r", &view, None, now)
    }

    fn observe(b: &Behavior, s: &Settings, ip: &str, target: &str, status: u16, now: u64) {
        let uri: Uri = target.parse().unwrap();
        let obs = Observation {
            method: &Method::GET,
            path: uri.path(),
            query: uri.query(),
            client: ip.parse().unwrap(),
            identity: None,
            status,
            latency: Duration::from_millis(3),
            request_bytes: None,
            response_bytes: Some(100),
            flagged: false,
        };
        b.observe(s, "r", &obs, now);
    }

    fn enforcing() -> Settings {
        Settings {
            mode: Mode::Enforce,
            shape: Some(ShapeParams {
                min_samples: 20,
                length_factor: 2.0,
                enum_max_values: 16,
            }),
            ..Settings::default()
        }
    }

    fn rules(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.rule_id.as_ref()).collect()
    }

    #[test]
    fn walking_ids_is_enumeration_and_revisiting_a_few_is_not() {
        let b = Behavior::new(Limits::default());
        let s = enforcing();
        for i in 0..200 {
            let f = judge(&b, &s, "10.0.0.1", &format!("/users/{}", i % 5), i);
            assert!(f.is_empty(), "{f:?}");
        }
        let mut flagged = 0;
        for id in 0..100 {
            let f = judge(&b, &s, "10.0.0.2", &format!("/users/{id}"), 1000);
            if let Some(e) = f.iter().find(|f| f.rule_id == "behavior.enumeration") {
                flagged += 1;
                assert_eq!(e.score, 5);
                assert_eq!(e.target, "path:/users/{id}");
            }
        }
        assert_eq!(flagged, 70, "ids 31 to 100 overflow a bucket of 30");
    }

    #[test]
    fn distinct_404s_flag_the_client_afterwards() {
        let b = Behavior::new(Limits::default());
        let s = enforcing();
        for i in 0..11 {
            observe(&b, &s, "10.0.0.3", &format!("/nope{i}"), 404, 0);
        }
        assert!(judge(&b, &s, "10.0.0.4", "/x", 1).is_empty());
        // Observation alone does not create a client; judging does.
        for i in 0..11 {
            judge(&b, &s, "10.0.0.3", &format!("/nope{i}"), 0);
            observe(&b, &s, "10.0.0.3", &format!("/nope{i}"), 404, 0);
        }
        let f = judge(&b, &s, "10.0.0.3", "/next", 1);
        assert!(rules(&f).contains(&"behavior.probing"), "{f:?}");
        // Leaked away after a while: 20 units leak in 200 s.
        assert!(judge(&b, &s, "10.0.0.3", "/later", 200_000).is_empty());
        assert_eq!(
            b.endpoint_count(),
            0,
            "paths answered 404 are not endpoints"
        );
    }

    #[test]
    fn learned_shapes_judge_values_and_learn_mode_stays_quiet() {
        let b = Behavior::new(Limits::default());
        let s = enforcing();
        for i in 0..30 {
            observe(&b, &s, "10.0.0.1", &format!("/users/{i}?sort=name"), 200, i);
        }
        let f = judge(&b, &s, "10.0.0.1", "/users/7?sort=name", 40);
        assert!(f.is_empty(), "{f:?}");
        let f = judge(&b, &s, "10.0.0.1", "/users/alice", 41);
        assert_eq!(rules(&f), ["behavior.shape.type"]);
        assert_eq!(f[0].target, "path:2");
        assert!(
            f[0].evidence.contains("expected numeric"),
            "{}",
            f[0].evidence
        );
        let f = judge(&b, &s, "10.0.0.1", "/users/7?sort=name%27%20OR%201=1", 42);
        assert_eq!(rules(&f), ["behavior.shape.type"]);
        let f = judge(&b, &s, "10.0.0.1", "/users/7?sort=namenamenamename", 43);
        assert_eq!(rules(&f), ["behavior.shape.length"]);
        let f = judge(&b, &s, "10.0.0.1", "/users/7?sort=date", 44);
        assert_eq!(rules(&f), ["behavior.shape.enum"]);

        let learn = Settings {
            mode: Mode::Learn,
            ..s.clone()
        };
        assert!(judge(&b, &learn, "10.0.0.1", "/users/alice", 45).is_empty());
        let detect = Settings {
            mode: Mode::Detect,
            ..s
        };
        let f = judge(&b, &detect, "10.0.0.1", "/users/alice", 46);
        assert_eq!(f[0].score, 0, "detect mode reports without scoring");
    }

    #[test]
    fn baselines_survive_a_restart_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("apiguard-behavior-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("baselines.json");
        let s = enforcing();
        let b = Behavior::new(Limits::default());
        for i in 0..30 {
            observe(&b, &s, "10.0.0.1", &format!("/users/{i}"), 200, i);
        }
        assert_eq!(b.save(&path).unwrap(), 1);
        let restarted = Behavior::new(Limits::default());
        assert_eq!(restarted.load(&path).unwrap(), 1);
        let f = judge(&restarted, &s, "10.0.0.1", "/users/alice", 1);
        assert_eq!(rules(&f), ["behavior.shape.type"]);
        assert_eq!(
            Behavior::new(Limits::default())
                .load(&dir.join("missing.json"))
                .unwrap(),
            0
        );
        std::fs::write(&path, b"{not json").unwrap();
        let error = restarted.load(&path).unwrap_err().to_string();
        assert!(error.contains("is not a baseline snapshot"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clients_and_endpoints_are_bounded() {
        let b = Behavior::new(Limits {
            max_endpoints: 3,
            max_clients: 64,
            max_params: 2,
        });
        let s = enforcing();
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            judge(&b, &s, &ip, "/a", u64::from(i));
            observe(
                &b,
                &s,
                &ip,
                &format!("/p{i}?a=1&b=2&c=3"),
                200,
                u64::from(i),
            );
        }
        assert!(b.client_count() <= 64, "{}", b.client_count());
        assert_eq!(b.endpoint_count(), 3);
        assert_eq!(b.endpoints_dropped(), 997);
        let baselines = b.baselines(&s, 1000);
        assert!(baselines.iter().all(|e| e.params.len() <= 2));
    }
}
