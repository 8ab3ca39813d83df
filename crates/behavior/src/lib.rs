//! apiguard's behavioural detection (stage 9 of the pipeline): baselines learned from live
//! traffic per endpoint (route, method, path template) and per client (identity or address),
//! and the models that judge a request against them:
//!
//! - the positive model ([`shape`]): a value that does not fit its parameter's learned shape;
//! - enumeration / BOLA: one client walking many distinct ids of one endpoint;
//! - probing: many distinct paths answered 404 to one client (CrowdSec's `http-probing`);
//! - crawling: many distinct non-static paths (CrowdSec's `http-crawl-non_statics`);
//! - rate bursts and authentication failures per client (leaky buckets);
//! - bot signals ([`bot`]): browser claims without a browser's headers, header sets changing
//!   under one User-Agent, automation agents;
//! - call sequences: transitions between endpoints never seen in clean sessions;
//! - learned rate and error-ratio anomalies per client against the distribution of clients;
//! - authentication failures per account, from any address (credential stuffing).
//!
//! Every finding explains itself: rule `behavior.*`, class `behavior`, evidence "observed X,
//! expected Y". State is sharded (no global lock on the request path) and bounded.

#![forbid(unsafe_code)]

pub mod bot;
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
pub use settings::{
    AccountParams, BotParams, Limits, Mode, RateAnomalyParams, SequenceParams, Settings,
    VolumeParams,
};
pub use shape::{CharClass, Deviation, ParamShape, ShapeParams};
use template::Templated;

const SHARDS: usize = 32;
/// Recent findings kept per client for the admin API.
const RECENT_FINDINGS: usize = 8;
/// Endpoint templates tracked per client for enumeration.
const WALKS_PER_CLIENT: usize = 16;
/// Longest value decoded for judging.
const VALUE_LIMIT: usize = 4096;
/// User-Agents whose header fingerprint is remembered per client.
const AGENTS_PER_CLIENT: usize = 4;
/// Endpoints whose counting window is kept per client.
const WINDOWS_PER_CLIENT: usize = 16;
/// Longest endpoint key remembered as a predecessor, and longest account name.
const KEY_LIMIT: usize = 512;
const ACCOUNT_LIMIT: usize = 128;
/// Predecessors per endpoint accepted from a snapshot (settings allow fewer).
const MAX_PREDECESSORS: usize = 1024;
/// The previous "endpoint" of a session's first request.
const SESSION_START: &str = "";
/// Clean client windows the per-endpoint distributions average over.
const WINDOW_HORIZON: u64 = 1000;

/// A mean and variance that follow the recent past (exponentially weighted).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Ewma {
    pub mean: f64,
    pub variance: f64,
    pub samples: u64,
}

impl Ewma {
    pub fn add(&mut self, value: f64) {
        self.add_over(value, 50);
    }

    /// Adds a value with a weight of `1/horizon` once `horizon` values were seen (a plain
    /// average before).
    pub fn add_over(&mut self, value: f64, horizon: u64) {
        self.samples += 1;
        let alpha = 1.0 / (self.samples.min(horizon.max(1)) as f64);
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
    /// Clean transitions into this endpoint by the endpoint the client called before.
    #[serde(default)]
    pub predecessors: Predecessors,
    /// `ln(requests)` of one client on this endpoint per clean window.
    #[serde(default)]
    pub client_requests_ln: Ewma,
    /// The latency of the last few responses, judged against `latency_ms`.
    #[serde(default)]
    pub latency_recent: Ewma,
    /// Since when the endpoint answers far slower than its baseline; the baseline does not
    /// learn meanwhile (a slow upstream must not become the normal at once).
    #[serde(default)]
    pub slow: Option<SlowSpell>,

    pub first_ms: u64,
    pub last_ms: u64,
}

/// An endpoint answering far slower than its learned latency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlowSpell {
    pub since_ms: u64,
    /// The baseline it departs from, as learned at the onset.
    pub baseline_ms: f64,
    pub baseline_stddev_ms: f64,
    pub baseline_samples: u64,
    /// Responses answered since the onset.
    pub responses: u64,
    /// The onset was reported (on the next request judged for the endpoint).
    pub reported: bool,
}

/// The first-order Markov model of one endpoint: how often each endpoint (key as
/// `route METHOD template`, empty for a session's start) came right before it in clean sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Predecessors {
    pub total: u64,
    /// Transitions from endpoints not kept because the table was full.
    pub other: u64,
    pub counts: BTreeMap<String, u64>,
}

impl Predecessors {
    fn learn(&mut self, from: &str, max: usize) {
        self.total += 1;
        if let Some(n) = self.counts.get_mut(from) {
            *n += 1;
        } else if self.counts.len() < max && from.len() <= KEY_LIMIT {
            self.counts.insert(from.to_owned(), 1);
        } else {
            self.other += 1;
        }
    }

    /// How often `from` preceded, at most: a predecessor missing from a full table may be
    /// among the `other` ones.
    fn count(&self, from: &str, max: usize) -> u64 {
        match self.counts.get(from) {
            Some(n) => *n,
            None if self.counts.len() >= max || self.other > 0 => self.other,
            None => 0,
        }
    }
}

/// What was learned about one route's clients: the 4xx share of one client's responses per
/// clean window with enough responses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteStats {
    pub route: String,
    pub client_error_ratio: Ewma,
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
    /// `(hash of a User-Agent, fingerprint of the stack headers)` first seen with it.
    agents: Vec<(u64, u32)>,
    /// The endpoint key of the client's last request and when it came.
    last_endpoint: Option<String>,
    last_request_ms: u64,
    /// What the response to the latest request teaches, once the proxy observes it.
    pending: Option<Pending>,
    /// Counting windows by route (learned rate and error ratio).
    windows: Vec<Window>,
    /// The last findings about this client, newest last.
    pub recent: VecDeque<RecentFinding>,
    /// The accounts the client's requests named lately (at most [`ACCOUNTS_PER_CLIENT`]),
    /// newest last: shown with their failure buckets.
    #[serde(default)]
    accounts: Vec<String>,
}

/// Accounts remembered per client for the admin view.
const ACCOUNTS_PER_CLIENT: usize = 4;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Pending {
    path_hash: u64,
    /// The previous endpoint (the transition to learn from a clean response).
    from: Option<String>,
    /// The account the request named (a 401/403 counts against it).
    account: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counts {
    requests: u32,
    responses: u32,
    errors: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Window {
    /// The endpoint key, or the route id for the route's window.
    endpoint: String,
    start_ms: u64,
    counts: Counts,
    /// Something was found about the client in this window: it does not teach.
    flagged: bool,
}

/// One account's authentication failures.
#[derive(Debug, Clone, Default)]
struct AccountState {
    failures: Bucket,
    addresses: DistinctBucket,
    last_ms: u64,
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
    accounts: Sharded<AccountState>,
    routes: Sharded<RouteStats>,
    endpoint_count: AtomicUsize,
    /// Endpoints not learned because `max_endpoints` was reached.
    endpoints_dropped: AtomicU64,
    /// Slow spells not reported yet: requests look their endpoint up only while some is.
    unreported_slow: AtomicUsize,
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
    /// The latency of the last few responses.
    pub latency_recent_ms: f64,
    /// Set while the endpoint answers far slower than its baseline.
    pub slow: Option<SlowSpell>,
    pub request_bytes: Ewma,
    pub response_bytes: Ewma,
    pub params: BTreeMap<String, ParamSummary>,
    /// Clean transitions into this endpoint by previous endpoint (`(session start)` for a
    /// session's first call).
    pub predecessors: BTreeMap<String, u64>,
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
    /// Bot signals: each User-Agent the client used (by hash) and the order of the headers
    /// its network stack sent with it first (the reference for `behavior.bot.inconsistent`).
    pub agents: Vec<AgentSummary>,
    /// Call sequences: the endpoint of the client's last request, and when it came (the
    /// `from` of its next transition unless a session gap passes first).
    pub last_endpoint: Option<String>,
    pub last_request_ms: u64,
    /// Learned rates: the client's current counting windows, with what the endpoint (or
    /// route) learned from clean clients' windows.
    pub windows: Vec<WindowSummary>,
    /// Per-account authentication failures of the accounts the client named lately.
    pub accounts: Vec<AccountSummary>,
}

/// One User-Agent of a client.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSummary {
    pub user_agent_hash: String,
    pub stack_headers: String,
}

/// One counting window of a client: an endpoint's (requests judged against the endpoint's
/// learned rate) or a route's (4xx ratio judged against the route's).
#[derive(Debug, Clone, Serialize)]
pub struct WindowSummary {
    /// `METHOD template`, or `route <id>` for the route's window.
    pub scope: String,
    pub start_ms: u64,
    pub requests: u32,
    pub responses: u32,
    pub errors: u32,
    /// Something was found about the client in it: it will not teach.
    pub flagged: bool,
    /// The learned typical value for a client (requests per window, or 4xx ratio), the limit
    /// above which it is flagged, and the clean client windows behind them; absent until
    /// `min_windows` were learned.
    pub typical: Option<f64>,
    pub limit: Option<f64>,
    pub learned_windows: u64,
}

/// One account's failure bucket.
#[derive(Debug, Clone, Serialize)]
pub struct AccountSummary {
    pub account: String,
    pub failures: f64,
    pub capacity: u32,
    /// Distinct addresses in its bucket.
    pub addresses: f64,
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
            accounts: Sharded::new(),
            routes: Sharded::new(),
            endpoint_count: AtomicUsize::new(0),
            endpoints_dropped: AtomicU64::new(0),
            unreported_slow: AtomicUsize::new(0),
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
        let agent = settings
            .bot
            .and_then(|p| self.judge_bot(p, request, &mut findings));
        let key = client_key(identity, request.client.peer.ip());
        let ekey = endpoint_key(route, request.method.as_str(), &templated.template);
        let account = settings
            .accounts
            .as_ref()
            .and_then(|p| account_of(p, request, identity));
        let seen = self.judge_client(
            settings,
            Visit {
                key: &key,
                route,
                endpoint: &ekey,
                path,
                templated: &templated,
                agent,
                account: account.as_deref(),
            },
            now_ms,
            &mut findings,
        );
        if let (Some(p), Some(from)) = (settings.sequence, &seen.from) {
            self.judge_sequence(p, route, &ekey, from, &mut findings);
        }
        if let Some(p) = settings.rate_anomaly {
            let (closed, current) = seen.endpoint_window;
            self.judge_rate(p, &ekey, closed, current, &mut findings);
            let (closed, current) = seen.route_window;
            self.judge_errors(p, route, closed, current, &mut findings);
        }
        if let (Some(p), Some(account)) = (&settings.accounts, &account) {
            self.judge_account(p, account, now_ms, &mut findings);
        }
        if let Some(p) = settings.volume {
            self.judge_payload(p, &ekey, request, &mut findings);
        }
        if !findings.is_empty() {
            let mut clients = self.clients.shard(&key);
            if let Some(client) = clients.get_mut(&key) {
                client.flagged += 1;
                // A client something was found about teaches no rates, on any endpoint.
                for w in &mut client.windows {
                    w.flagged = true;
                }
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
        // About the endpoint, not the client: kept out of the client's state, never scored.
        if settings.volume.is_some() && self.unreported_slow.load(Ordering::Relaxed) > 0 {
            self.report_slow(&ekey, &mut findings);
        }
        let score = settings.mode == Mode::Enforce;
        if settings.mode == Mode::Learn {
            findings.clear();
        } else if !score {
            findings.iter_mut().for_each(|f| f.score = 0);
        }
        findings
    }

    /// A request body far larger than the endpoint's learned sizes (an overlong field, a
    /// smuggled document, a resource-exhaustion attempt). The size is the declared
    /// Content-Length, else the inspected body's length; the endpoint is looked up only for
    /// a body over `min_payload_bytes`.
    fn judge_payload(
        &self,
        params: VolumeParams,
        endpoint: &str,
        request: &RequestView<'_>,
        findings: &mut Vec<Finding>,
    ) {
        let size = request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or_else(|| request.body.map(|b| b.len() as u64));
        let Some(size) = size.filter(|n| *n > params.min_payload_bytes) else {
            return;
        };
        let shard = self.endpoints.shard(endpoint);
        let Some(stats) = shard.get(endpoint) else {
            return;
        };
        let learned = stats.request_bytes;
        if learned.samples < params.min_samples.max(1) {
            return;
        }
        let limit = volume_limit(&learned, params, params.min_payload_bytes as f64);
        if size as f64 > limit {
            findings.push(finding(
                "behavior.payload.size",
                Severity::Warning,
                "body".into(),
                format!(
                    "observed a {size}-byte body on {} {}, expected at most {limit:.0} (typically {:.0} ± {:.0}; learned from {} clean requests)",
                    stats.method,
                    stats.template,
                    learned.mean,
                    learned.stddev(),
                    learned.samples
                ),
            ));
        }
    }

    /// Reports an endpoint's slow spell once, on the first request judged for it after the
    /// onset.
    fn report_slow(&self, endpoint: &str, findings: &mut Vec<Finding>) {
        let mut shard = self.endpoints.shard(endpoint);
        let Some(stats) = shard.get_mut(endpoint) else {
            return;
        };
        let (method, template) = (&stats.method, &stats.template);
        let recent = stats.latency_recent.mean;
        let Some(spell) = stats.slow.as_mut().filter(|s| !s.reported) else {
            return;
        };
        spell.reported = true;
        self.unreported_slow.fetch_sub(1, Ordering::Relaxed);
        let mut f = finding(
            "behavior.latency.anomaly",
            Severity::Warning,
            format!("endpoint:{method} {template}"),
            format!(
                "observed a mean latency of {recent:.0} ms over the last {LATENCY_RECENT} responses of {method} {template}, expected about {:.0} ms (± {:.0}; learned from {} responses)",
                spell.baseline_ms, spell.baseline_stddev_ms, spell.baseline_samples
            ),
        );
        f.score = 0;
        findings.push(f);
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

    /// Browser claims checked against browser habits, automation agents; returns the
    /// `(User-Agent hash, stack header fingerprint)` for the client's consistency check.
    fn judge_bot(
        &self,
        params: BotParams,
        request: &RequestView<'_>,
        findings: &mut Vec<Finding>,
    ) -> Option<(u64, u32)> {
        let headers = request.headers;
        let ua = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match bot::classify(ua) {
            bot::Agent::Browser { family, major } => {
                let secure = bot::secure(request.client.tls, headers);
                let name = family.as_str();
                match bot::check_browser(family, major, secure, headers) {
                    Some(bot::Mismatch::Missing(missing)) => findings.push(finding(
                        "behavior.bot.browser_headers",
                        Severity::Error,
                        "header:user-agent".into(),
                        format!(
                            "observed a {name} {major} User-Agent without {}, expected the headers {name} sends on every request{}",
                            missing.join(", "),
                            if secure { " over HTTPS" } else { "" }
                        ),
                    )),
                    Some(bot::Mismatch::Order { observed, expected }) => findings.push(finding(
                        "behavior.bot.browser_headers",
                        Severity::Error,
                        "header:user-agent".into(),
                        format!(
                            "observed {observed} under a {name} {major} User-Agent, expected {expected} as {name} sends them"
                        ),
                    )),
                    None => {}
                }
            }
            bot::Agent::Automation(tool) if params.automation_agents => findings.push(finding(
                "behavior.bot.automation",
                Severity::Notice,
                "header:user-agent".into(),
                format!(
                    "observed User-Agent `{}` naming the automation tool `{tool}`, expected a browser or an API client",
                    shown(ua)
                ),
            )),
            _ => {}
        }
        // An upgrade (WebSocket) handshake carries a different header set by design.
        let upgrade = headers.contains_key(http::header::UPGRADE);
        (params.consistency && !ua.is_empty() && !upgrade)
            .then(|| (hash_of(&self.hasher, ua), bot::fingerprint(headers)))
    }

    /// A transition into an endpoint never (or rarely) seen in clean sessions.
    fn judge_sequence(
        &self,
        params: SequenceParams,
        route: &str,
        endpoint: &str,
        from: &str,
        findings: &mut Vec<Finding>,
    ) {
        let shard = self.endpoints.shard(endpoint);
        let Some(e) = shard.get(endpoint) else {
            return;
        };
        let model = &e.predecessors;
        if model.total < params.min_samples.max(1) {
            return;
        }
        let seen = model.count(from, params.max_predecessors);
        if seen as f64 > params.rare_ratio * model.total as f64 {
            return;
        }
        let mut usual: Vec<(&String, &u64)> = model.counts.iter().collect();
        usual.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let expected: Vec<String> = usual
            .iter()
            .take(3)
            .map(|(k, n)| {
                format!(
                    "{} ({:.0}%)",
                    display_endpoint(k, route),
                    **n as f64 * 100.0 / model.total as f64
                )
            })
            .collect();
        findings.push(finding(
            "behavior.sequence.unseen",
            Severity::Warning,
            format!("sequence:{}", display_endpoint(endpoint, route)),
            format!(
                "observed {} → {}, seen {seen} times in {} clean transitions into it, expected after {}",
                display_endpoint(from, route),
                display_endpoint(endpoint, route),
                model.total,
                expected.join(", ")
            ),
        ));
    }

    /// Learns from the client's window on an endpoint that just closed, then judges its
    /// current window against the endpoint's learned distribution of clients.
    fn judge_rate(
        &self,
        params: RateAnomalyParams,
        endpoint: &str,
        closed: Option<Counts>,
        current: Counts,
        findings: &mut Vec<Finding>,
    ) {
        let due = current.requests >= params.min_requests;
        // The endpoint is looked up only when there is something to learn or judge.
        if closed.is_none() && !due {
            return;
        }
        let mut shard = self.endpoints.shard(endpoint);
        // Unknown endpoints (never answered, or past `max_endpoints`) learn nothing here.
        let Some(stats) = shard.get_mut(endpoint) else {
            return;
        };
        if let Some(c) = closed {
            stats
                .client_requests_ln
                .add_over(f64::from(c.requests.max(1)).ln(), WINDOW_HORIZON);
        }
        let learned = &stats.client_requests_ln;
        if !due || learned.samples < params.min_windows.max(1) {
            return;
        }
        let limit = (learned.mean + params.deviations * learned.stddev()).exp();
        if f64::from(current.requests) > limit {
            findings.push(finding(
                "behavior.rate.anomaly",
                Severity::Error,
                "client".into(),
                format!(
                    "observed {} requests in {}s to {} {}, expected at most {limit:.0} (a typical client makes {:.1}; learned from {} clean client windows)",
                    current.requests,
                    params.window_ms as f64 / 1000.0,
                    stats.method,
                    stats.template,
                    learned.mean.exp(),
                    learned.samples
                ),
            ));
        }
    }

    /// The same for the client's 4xx ratio over the whole route.
    fn judge_errors(
        &self,
        params: RateAnomalyParams,
        route: &str,
        closed: Option<Counts>,
        current: Counts,
        findings: &mut Vec<Finding>,
    ) {
        let ratio = |c: Counts| f64::from(c.errors) / f64::from(c.responses.max(1));
        let enough = |c: Counts| c.responses >= params.min_responses.max(1);
        let due = enough(current) && ratio(current) >= params.min_error_ratio;
        let closed = closed.filter(|c| enough(*c));
        if closed.is_none() && !due {
            return;
        }
        let mut routes = self.routes.shard(route);
        let stats = routes
            .entry(route.to_owned())
            .or_insert_with(|| RouteStats {
                route: route.to_owned(),
                ..RouteStats::default()
            });
        if let Some(c) = closed {
            stats.client_error_ratio.add_over(ratio(c), WINDOW_HORIZON);
        }
        let learned = &stats.client_error_ratio;
        if !due || learned.samples < params.min_windows.max(1) {
            return;
        }
        let limit =
            (learned.mean + params.deviations * learned.stddev()).max(params.min_error_ratio);
        if ratio(current) > limit {
            findings.push(finding(
                "behavior.errors.anomaly",
                Severity::Error,
                "client".into(),
                format!(
                    "observed {} of {} responses answered 4xx ({:.0}%) in {}s on route `{route}`, expected at most {:.0}% (a typical client gets {:.1}%; learned from {} clean client windows)",
                    current.errors,
                    current.responses,
                    ratio(current) * 100.0,
                    params.window_ms as f64 / 1000.0,
                    limit * 100.0,
                    learned.mean * 100.0,
                    learned.samples
                ),
            ));
        }
    }

    fn judge_account(
        &self,
        params: &AccountParams,
        account: &str,
        now_ms: u64,
        findings: &mut Vec<Finding>,
    ) {
        let shard = self.accounts.shard(account);
        let Some(state) = shard.get(account) else {
            return;
        };
        if state.failures.overflowing(now_ms, params.bucket) {
            findings.push(finding(
                "behavior.auth_failures.account",
                Severity::Critical,
                "account".into(),
                format!(
                    "observed {} authentication failures (401/403) for account `{}` from {} distinct addresses in its bucket, expected at most {} (one leaks every {} ms)",
                    state.failures.level(now_ms, params.bucket).floor(),
                    shown(account),
                    state.addresses.level(now_ms, params.bucket).ceil(),
                    params.bucket.capacity,
                    params.bucket.leak_ms
                ),
            ));
        }
    }

    /// Counts a 401/403 against an account.
    fn account_failure(&self, params: &AccountParams, account: &str, address: IpAddr, now_ms: u64) {
        let mut shard = self.accounts.shard(account);
        if !shard.contains_key(account) {
            self.make_room(&mut shard, |a| a.last_ms);
        }
        let state = shard.entry(account.to_owned()).or_default();
        state.last_ms = now_ms;
        state.failures.pour(now_ms, params.bucket);
        state.addresses.pour(
            hash_of(&self.hasher, address.to_canonical()),
            now_ms,
            params.bucket,
        );
    }

    fn judge_client(
        &self,
        settings: &Settings,
        visit: Visit<'_>,
        now_ms: u64,
        findings: &mut Vec<Finding>,
    ) -> Seen {
        let Visit {
            key,
            route,
            endpoint,
            path,
            templated,
            agent,
            account,
        } = visit;
        let path_hash = hash_of(&self.hasher, path);
        let mut clients = self.clients.shard(key);
        let client = match clients.get_mut(key) {
            Some(client) => client,
            None => {
                self.make_room(&mut clients, |c| c.last_ms);
                clients
                    .entry(key.to_owned())
                    .or_insert_with(|| ClientState {
                        first_ms: now_ms,
                        ..ClientState::default()
                    })
            }
        };
        let mut seen = Seen::default();
        if let Some(p) = settings.sequence {
            let pause = now_ms.saturating_sub(client.last_ms);
            let from = match client.last_endpoint.take() {
                Some(last) if pause <= p.session_gap_ms => last,
                _ => SESSION_START.to_owned(),
            };
            client.last_endpoint = Some(endpoint.to_owned());
            seen.from = Some(from);
        }
        client.pending = Some(Pending {
            path_hash,
            from: seen.from.clone(),
            account: account.map(str::to_owned),
        });
        if let Some(account) = account
            && client.accounts.last().is_none_or(|a| a != account)
        {
            client.accounts.retain(|a| a != account);
            if client.accounts.len() >= ACCOUNTS_PER_CLIENT {
                client.accounts.remove(0);
            }
            client.accounts.push(account.to_owned());
        }
        if let Some(p) = settings.rate_anomaly {
            seen.endpoint_window = tick(&mut client.windows, endpoint, now_ms, p.window_ms);
            seen.route_window = tick(&mut client.windows, route, now_ms, p.window_ms);
        }
        if let Some((ua, fingerprint)) = agent {
            match client.agents.iter().find(|(u, _)| *u == ua) {
                Some((_, first)) if *first != fingerprint => findings.push(finding(
                    "behavior.bot.inconsistent",
                    Severity::Warning,
                    "headers".into(),
                    format!(
                        "observed headers in the order {} under the same User-Agent as before, expected {} as in this client's earlier requests",
                        bot::describe(fingerprint),
                        bot::describe(*first)
                    ),
                )),
                Some(_) => {}
                None => {
                    if client.agents.len() >= AGENTS_PER_CLIENT {
                        client.agents.remove(0);
                    }
                    client.agents.push((ua, fingerprint));
                }
            }
        }
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
        seen
    }

    /// Forgets the least recently seen eighth of a full shard (clients or accounts).
    fn make_room<V>(&self, shard: &mut HashMap<String, V>, last_ms: impl Fn(&V) -> u64) {
        let cap = (self.limits.max_clients / SHARDS).max(1);
        if shard.len() < cap {
            return;
        }
        let mut ages: Vec<(u64, String)> =
            shard.iter().map(|(k, c)| (last_ms(c), k.clone())).collect();
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
        let path_hash = hash_of(&self.hasher, obs.path);
        let templated = template::template(obs.path);
        let ekey = endpoint_key(route, obs.method.as_str(), &templated.template);
        let mut learn_from = None;
        let mut failed_account = None;
        {
            let mut clients = self.clients.shard(&key);
            if let Some(client) = clients.get_mut(&key) {
                client.status[status_class(obs.status)] += 1;
                // Another request of the client may have been judged since: then this
                // response teaches nothing about sequences or accounts.
                if let Some(pending) = client.pending.take_if(|p| p.path_hash == path_hash) {
                    if !obs.flagged && obs.status < 400 {
                        learn_from = pending.from;
                    }
                    if matches!(obs.status, 401 | 403) {
                        failed_account = pending.account;
                    }
                }
                if settings.rate_anomaly.is_some()
                    && let Some(w) = client.windows.iter_mut().find(|w| w.endpoint == route)
                {
                    w.counts.responses += 1;
                    if (400..500).contains(&obs.status) {
                        w.counts.errors += 1;
                    }
                }
                if obs.flagged {
                    for w in &mut client.windows {
                        w.flagged = true;
                    }
                }
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
        if let (Some(p), Some(account)) = (&settings.accounts, failed_account) {
            self.account_failure(p, &account, obs.client, now_ms);
        }
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
        let latency = obs.latency.as_secs_f64() * 1000.0;
        match settings.volume {
            Some(p) => self.judge_latency(p, endpoint, latency, obs.flagged, now_ms),
            None => endpoint.latency_ms.add(latency),
        }
        if let Some(n) = obs.response_bytes {
            endpoint.response_bytes.add(n as f64);
        }
        if obs.flagged || obs.status >= 400 {
            return;
        }
        // Sizes learn from clean requests only: an attack's payloads must not widen them.
        if let Some(n) = obs.request_bytes {
            endpoint.request_bytes.add(n as f64);
        }
        endpoint.clean += 1;
        if let (Some(p), Some(from)) = (settings.sequence, &learn_from) {
            endpoint.predecessors.learn(from, p.max_predecessors);
        }
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

    /// Follows an endpoint's recent latency against its baseline: a spell starts when the
    /// average of the last responses departs sharply from it (with enough samples on both
    /// sides), and ends when it comes back. Meanwhile the baseline does not learn (nor, once
    /// warm, from any single answer above the limit); a spell
    /// lasting `min_samples` × 10 responses is the endpoint's new normal, and the baseline
    /// starts again from it.
    fn judge_latency(
        &self,
        params: VolumeParams,
        endpoint: &mut Endpoint,
        latency_ms: f64,
        flagged: bool,
        now_ms: u64,
    ) {
        endpoint.latency_recent.add_over(latency_ms, LATENCY_RECENT);
        let baseline = endpoint.latency_ms;
        let limit = volume_limit(&baseline, params, baseline.mean + params.latency_floor_ms);
        let warm = baseline.samples >= params.min_samples.max(1)
            && endpoint.latency_recent.samples >= LATENCY_RECENT;
        let slow = warm && endpoint.latency_recent.mean > limit;
        match (endpoint.slow.is_some(), slow) {
            (false, true) => {
                endpoint.slow = Some(SlowSpell {
                    since_ms: now_ms,
                    baseline_ms: baseline.mean,
                    baseline_stddev_ms: baseline.stddev(),
                    baseline_samples: baseline.samples,
                    responses: 1,
                    reported: false,
                });
                self.unreported_slow.fetch_add(1, Ordering::Relaxed);
            }
            (true, true) => {
                let lasting = endpoint.slow.as_mut().is_some_and(|spell| {
                    spell.responses += 1;
                    spell.responses >= params.min_samples.saturating_mul(10)
                });
                if lasting {
                    self.end_spell(endpoint);
                    endpoint.latency_ms = endpoint.latency_recent;
                }
            }
            (true, false) => self.end_spell(endpoint),
            // Once warm, an answer above the limit does not teach either: the first slow
            // answers of a spell would otherwise widen the baseline before the recent
            // average shows it.
            (false, false) => {
                let outlier = baseline.samples >= params.min_samples.max(1) && latency_ms > limit;
                if !flagged && !outlier {
                    endpoint.latency_ms.add(latency_ms);
                }
            }
        }
    }

    fn end_spell(&self, endpoint: &mut Endpoint) {
        if endpoint.slow.take().is_some_and(|s| !s.reported) {
            self.unreported_slow.fetch_sub(1, Ordering::Relaxed);
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
                    latency_recent_ms: e.latency_recent.mean,
                    slow: e.slow.clone(),
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
                    predecessors: e
                        .predecessors
                        .counts
                        .iter()
                        .map(|(k, n)| (display_endpoint(k, &e.route), *n))
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
        let agents = c
            .agents
            .iter()
            .map(|(ua, stack)| AgentSummary {
                user_agent_hash: format!("{ua:016x}"),
                stack_headers: bot::describe(*stack),
            })
            .collect();
        let last_endpoint = c.last_endpoint.clone();
        let last_request_ms = c.last_ms;
        let windows: Vec<Window> = c.windows.clone();
        let accounts: Vec<String> = c.accounts.clone();
        let mut summary = ClientSummary {
            client: key.to_owned(),
            first_ms: c.first_ms,
            last_ms: c.last_ms,
            requests: c.requests,
            flagged: c.flagged,
            status: c.status,
            levels,
            walks,
            recent_findings: c.recent.iter().cloned().collect(),
            agents,
            last_endpoint: None,
            last_request_ms,
            windows: Vec::new(),
            accounts: Vec::new(),
        };
        // The client's shard is released before endpoints, routes and accounts are read
        // (the request path locks them in that order too).
        drop(shard);
        summary.last_endpoint = last_endpoint.map(|k| match k.split_once(' ') {
            Some((route, _)) => display_endpoint(&k, route),
            None => k,
        });
        summary.windows = windows
            .iter()
            .map(|w| self.window_summary(w, settings))
            .collect();
        if let Some(p) = &settings.accounts {
            for account in accounts {
                let shard = self.accounts.shard(&account);
                if let Some(a) = shard.get(&account) {
                    summary.accounts.push(AccountSummary {
                        failures: a.failures.level(now_ms, p.bucket),
                        capacity: p.bucket.capacity,
                        addresses: a.addresses.level(now_ms, p.bucket),
                        account,
                    });
                }
            }
        }
        Some(summary)
    }

    fn window_summary(&self, w: &Window, settings: &Settings) -> WindowSummary {
        // Endpoint keys are `route METHOD template`; a route's window is keyed by its id.
        let route_window = !w.endpoint.contains(' ');
        let mut out = WindowSummary {
            scope: match w.endpoint.split_once(' ') {
                Some((route, _)) => display_endpoint(&w.endpoint, route),
                None => format!("route {}", w.endpoint),
            },
            start_ms: w.start_ms,
            requests: w.counts.requests,
            responses: w.counts.responses,
            errors: w.counts.errors,
            flagged: w.flagged,
            typical: None,
            limit: None,
            learned_windows: 0,
        };
        let Some(p) = settings.rate_anomaly else {
            return out;
        };
        if route_window {
            if let Some(r) = self.routes.shard(&w.endpoint).get(&w.endpoint) {
                let learned = &r.client_error_ratio;
                out.learned_windows = learned.samples;
                if learned.samples >= p.min_windows.max(1) {
                    out.typical = Some(learned.mean);
                    out.limit = Some(
                        (learned.mean + p.deviations * learned.stddev()).max(p.min_error_ratio),
                    );
                }
            }
        } else if let Some(e) = self.endpoints.shard(&w.endpoint).get(&w.endpoint) {
            let learned = &e.client_requests_ln;
            out.learned_windows = learned.samples;
            if learned.samples >= p.min_windows.max(1) {
                out.typical = Some(learned.mean.exp());
                out.limit = Some((learned.mean + p.deviations * learned.stddev()).exp());
            }
        }
        out
    }
}

/// What the client-state pass of [`Behavior::judge`] needs about the request.
struct Visit<'a> {
    key: &'a str,
    route: &'a str,
    endpoint: &'a str,
    path: &'a str,
    templated: &'a Templated,
    agent: Option<(u64, u32)>,
    account: Option<&'a str>,
}

/// What the client-state pass found for the models judged after it.
#[derive(Default)]
struct Seen {
    /// The previous endpoint (or the session start), when the sequence model runs.
    from: Option<String>,
    /// The client's window on the endpoint that just closed (when clean), and its current
    /// one, this request included.
    endpoint_window: (Option<Counts>, Counts),
    /// The same over the whole route.
    route_window: (Option<Counts>, Counts),
}

/// Counts a request in the client's window under `key` (an endpoint key, or the route id
/// for the route's window): returns the window that just closed, if it was clean, and the
/// current counts.
fn tick(
    windows: &mut Vec<Window>,
    key: &str,
    now_ms: u64,
    window_ms: u64,
) -> (Option<Counts>, Counts) {
    let index = match windows.iter().position(|w| w.endpoint == key) {
        Some(i) => i,
        None => {
            if windows.len() >= WINDOWS_PER_CLIENT {
                let oldest = windows
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, w)| w.start_ms)
                    .map_or(0, |(i, _)| i);
                windows.swap_remove(oldest);
            }
            windows.push(Window {
                endpoint: key.to_owned(),
                start_ms: now_ms,
                ..Window::default()
            });
            windows.len() - 1
        }
    };
    let window = &mut windows[index];
    let mut closed = None;
    if now_ms >= window.start_ms.saturating_add(window_ms) {
        if !window.flagged && window.counts.requests > 0 {
            closed = Some(window.counts);
        }
        window.start_ms = now_ms;
        window.counts = Counts::default();
        window.flagged = false;
    }
    window.counts.requests += 1;
    (closed, window.counts)
}

/// An endpoint key as shown: without the route when it is the one judged.
fn display_endpoint(key: &str, route: &str) -> String {
    if key == SESSION_START {
        return "(session start)".into();
    }
    key.strip_prefix(route)
        .and_then(|rest| rest.strip_prefix(' '))
        .unwrap_or(key)
        .to_owned()
}

/// The account a request names: the configured body field (JSON or form), else the
/// authenticated identity. Lower-cased, since account names (emails) rarely differ by case.
fn account_of(
    params: &AccountParams,
    request: &RequestView<'_>,
    identity: Option<&str>,
) -> Option<String> {
    let named = params.field.as_deref().and_then(|field| {
        let body = request.body?;
        let content_type = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.contains("json") {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let mut at = &value;
            for part in field.split('.') {
                at = at.get(part)?;
            }
            match at {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            let text = std::str::from_utf8(body).ok()?;
            query_pairs(Some(text))
                .find(|(name, _)| shape::decode(name, true, 256) == field)
                .map(|(_, value)| shape::decode(value, true, ACCOUNT_LIMIT * 4))
        } else {
            None
        }
    });
    let account = named.or_else(|| identity.map(str::to_owned))?;
    let account: String = account
        .trim()
        .chars()
        .take(ACCOUNT_LIMIT)
        .collect::<String>()
        .to_lowercase();
    (!account.is_empty()).then_some(account)
}

/// Responses the recent latency averages over.
const LATENCY_RECENT: u64 = 20;

/// The largest value that still fits a learned distribution: `deviations` standard deviations
/// above its mean, `factor` times its mean, and `floor`, whichever is largest.
fn volume_limit(learned: &Ewma, params: VolumeParams, floor: f64) -> f64 {
    (learned.mean + params.deviations * learned.stddev())
        .max(learned.mean * params.factor)
        .max(floor)
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

    /// Only to read the account name of a login from its body.
    fn needs_body(&self) -> bool {
        self.settings.mode != Mode::Off
            && self
                .settings
                .accounts
                .as_ref()
                .is_some_and(|a| a.field.is_some())
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
    /// The learned per-client error ratio of each route.
    #[serde(default)]
    routes: Vec<RouteStats>,
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
        let mut routes = Vec::new();
        for shard in &self.routes.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            routes.extend(shard.values().cloned());
        }
        let file = SnapshotFile {
            version: SNAPSHOT_VERSION,
            endpoints,
            routes,
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
        // Routes come from the configuration: few, and a file cannot make them many.
        for stats in file.routes.into_iter().take(self.limits.max_endpoints) {
            let key = stats.route.clone();
            self.routes.shard(&key).insert(key, stats);
        }
        let mut loaded = 0;
        for mut endpoint in file.endpoints {
            if self.endpoint_count.load(Ordering::Relaxed) >= self.limits.max_endpoints {
                break;
            }
            while endpoint.params.len() > self.limits.max_params {
                endpoint.params.pop_last();
            }
            let predecessors = &mut endpoint.predecessors.counts;
            predecessors.retain(|k, _| k.len() <= KEY_LIMIT);
            while predecessors.len() > MAX_PREDECESSORS {
                predecessors.pop_last();
            }
            endpoint.first_ms = now;
            endpoint.last_ms = now;
            endpoint.rate = DecayedRate::default();
            // A slow spell is about the upstream as it was; after a restart it is judged
            // afresh from new responses.
            endpoint.slow = None;
            endpoint.latency_recent = Ewma::default();
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

    /// A request as a client sends it: method, target, headers in order, body.
    struct Req<'a> {
        method: Method,
        target: &'a str,
        headers: &'a [(&'static str, &'a str)],
        body: Option<&'a str>,
    }

    fn get_req<'a>(target: &'a str, headers: &'a [(&'static str, &'a str)]) -> Req<'a> {
        Req {
            method: Method::GET,
            target,
            headers,
            body: None,
        }
    }

    fn judge_req(b: &Behavior, s: &Settings, ip: &str, req: &Req<'_>, now: u64) -> Vec<Finding> {
        let uri: Uri = req.target.parse().unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in req.headers {
            headers.append(*k, v.parse().unwrap());
        }
        let info = client(ip);
        let body = req.body.map(bytes_of);
        let view = RequestView {
            method: &req.method,
            uri: &uri,
            version: http::Version::HTTP_11,
            headers: &headers,
            client: &info,
            route: "r",
            request_id: "x",
            body: body.as_ref(),
        };
        b.judge(s, "r", &view, None, now)
    }

    fn bytes_of(text: &str) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(text.as_bytes())
    }

    /// Judges then observes with the given status, as the proxy does; returns the findings.
    fn exchange(
        b: &Behavior,
        s: &Settings,
        ip: &str,
        req: &Req<'_>,
        status: u16,
        now: u64,
    ) -> Vec<Finding> {
        let f = judge_req(b, s, ip, req, now);
        let uri: Uri = req.target.parse().unwrap();
        let obs = Observation {
            method: &req.method,
            path: uri.path(),
            query: uri.query(),
            client: ip.parse().unwrap(),
            identity: None,
            status,
            latency: Duration::from_millis(3),
            request_bytes: None,
            response_bytes: Some(100),
            flagged: !f.is_empty(),
        };
        b.observe(s, "r", &obs, now);
        f
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

    /// Chrome's fetch() over plain HTTP, in Chrome's order.
    const CHROME_FETCH: &[(&str, &str)] = &[
        ("host", "shop.example"),
        ("connection", "keep-alive"),
        ("accept", "application/json"),
        ("user-agent", CHROME),
        ("referer", "http://shop.example/"),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", "en-GB,en;q=0.9"),
    ];

    /// A POST to `/orders` with a body of `size` bytes (declared), answered after
    /// `latency_ms`; returns the findings judged before it was forwarded.
    fn post_sized(
        b: &Behavior,
        s: &Settings,
        size: u64,
        latency_ms: u64,
        now: u64,
    ) -> Vec<Finding> {
        let uri: Uri = "/orders".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, size.into());
        let info = client("192.0.2.50");
        let view = RequestView {
            method: &Method::POST,
            uri: &uri,
            version: http::Version::HTTP_11,
            headers: &headers,
            client: &info,
            route: "r",
            request_id: "x",
            body: None,
        };
        let findings = b.judge(s, "r", &view, None, now);
        let obs = Observation {
            method: &Method::POST,
            path: "/orders",
            query: None,
            client: info.peer.ip(),
            identity: None,
            status: 201,
            latency: Duration::from_millis(latency_ms),
            request_bytes: Some(size),
            response_bytes: Some(100),
            flagged: findings.iter().any(|f| f.score > 0),
        };
        b.observe(s, "r", &obs, now);
        findings
    }

    fn volume_only() -> Settings {
        Settings {
            sequence: None,
            rate_anomaly: None,
            bot: None,
            rate: None,
            ..only_new_models()
        }
    }

    #[test]
    fn an_oversized_body_is_flagged_once_the_sizes_are_learned() {
        let s = volume_only();
        let mut now = 1_000_000;
        let cold = Behavior::new(Limits::default());
        for i in 0..50 {
            now += 1_000;
            assert!(post_sized(&cold, &s, 200 + i % 60, 12, now).is_empty());
        }
        assert!(
            post_sized(&cold, &s, 80_000, 12, now).is_empty(),
            "a cold baseline (50 samples) never fires"
        );
        let b = Behavior::new(Limits::default());
        for i in 0..150 {
            now += 1_000;
            assert!(post_sized(&b, &s, 200 + i % 60, 12, now).is_empty());
        }
        let findings = post_sized(&b, &s, 80_000, 12, now);
        assert_eq!(rules(&findings), ["behavior.payload.size"]);
        assert_eq!(findings[0].score, Severity::Warning.score());
        assert!(
            findings[0]
                .evidence
                .contains("observed a 80000-byte body on POST /orders, expected at most 1024")
                && findings[0]
                    .evidence
                    .contains("learned from 150 clean requests"),
            "{}",
            findings[0].evidence
        );
        assert!(
            post_sized(&b, &s, 1_000, 12, now).is_empty(),
            "under min_payload_bytes"
        );
        // The flagged request did not widen the learned sizes.
        assert_eq!(
            rules(&post_sized(&b, &s, 80_000, 12, now)),
            ["behavior.payload.size"]
        );
    }

    #[test]
    fn an_endpoint_turning_slow_is_reported_once_and_recovers() {
        let b = Behavior::new(Limits::default());
        let s = volume_only();
        let mut now = 1_000_000;
        let latency_findings = |findings: &[Finding]| {
            findings
                .iter()
                .filter(|f| f.rule_id == "behavior.latency.anomaly")
                .cloned()
                .collect::<Vec<_>>()
        };
        // Too few samples: a slow start is not judged.
        for i in 0..30 {
            now += 1_000;
            post_sized(&b, &s, 200, 10 + i % 5, now);
        }
        for _ in 0..30 {
            now += 1_000;
            assert!(latency_findings(&post_sized(&b, &s, 200, 400, now)).is_empty());
        }
        let b = Behavior::new(Limits::default());
        for i in 0..300 {
            now += 1_000;
            assert!(latency_findings(&post_sized(&b, &s, 200, 10 + i % 5, now)).is_empty());
        }
        // The upstream turns slow: the recent average departs after a few responses.
        let mut reported = Vec::new();
        for _ in 0..40 {
            now += 1_000;
            reported.extend(latency_findings(&post_sized(&b, &s, 200, 450, now)));
        }
        assert_eq!(reported.len(), 1, "reported once per spell: {reported:?}");
        assert_eq!(
            reported[0].score, 0,
            "about the endpoint, never the client's score"
        );
        assert_eq!(reported[0].target, "endpoint:POST /orders");
        assert!(
            reported[0].evidence.contains("expected about 12 ms"),
            "{}",
            reported[0].evidence
        );
        let summary = b.baselines(&s, now);
        let slow = summary[0].slow.as_ref().expect("a slow spell");
        assert!(
            slow.baseline_ms < 20.0,
            "the baseline did not learn the slowness"
        );
        // It recovers: the spell ends.
        for i in 0..40 {
            now += 1_000;
            assert!(latency_findings(&post_sized(&b, &s, 200, 10 + i % 5, now)).is_empty());
        }
        assert!(b.baselines(&s, now)[0].slow.is_none());
    }

    fn only_new_models() -> Settings {
        Settings {
            mode: Mode::Enforce,
            shape: None,
            enumeration: None,
            probing: None,
            crawling: None,
            rate: None,
            auth_failures: None,
            ..Settings::default()
        }
    }

    #[test]
    fn browser_claims_are_checked_and_api_clients_are_not() {
        let b = Behavior::new(Limits::default());
        let s = only_new_models();
        let f = judge_req(&b, &s, "10.1.0.1", &get_req("/products", CHROME_FETCH), 0);
        assert!(f.is_empty(), "a real Chrome request was flagged: {f:?}");
        for api in [
            &[
                ("host", "api.example"),
                ("user-agent", "curl/8.5.0"),
                ("accept", "*/*"),
            ][..],
            &[("user-agent", "okhttp/4.12.0"), ("accept-encoding", "gzip")][..],
            &[("host", "api.example")][..],
        ] {
            let f = judge_req(&b, &s, "10.1.0.2", &get_req("/products", api), 0);
            assert!(f.is_empty(), "an API client was flagged: {f:?}");
        }
        // python-requests wearing Chrome's User-Agent.
        let spoofed = [
            ("host", "shop.example"),
            ("user-agent", CHROME),
            ("accept-encoding", "gzip, deflate"),
            ("accept", "*/*"),
            ("connection", "keep-alive"),
        ];
        let f = judge_req(&b, &s, "10.1.0.3", &get_req("/products", &spoofed), 0);
        assert_eq!(rules(&f), ["behavior.bot.browser_headers"]);
        assert_eq!(f[0].score, 4);
        assert!(
            f[0].evidence
                .contains("observed a Chrome 124 User-Agent without Accept-Language"),
            "{}",
            f[0].evidence
        );
        let headless = [(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        )];
        let f = judge_req(&b, &s, "10.1.0.4", &get_req("/products", &headless), 0);
        assert_eq!(rules(&f), ["behavior.bot.automation"]);
        assert_eq!(f[0].score, 2, "automation agents are a weak signal");
    }

    #[test]
    fn headers_changing_under_one_user_agent_are_inconsistent() {
        let b = Behavior::new(Limits::default());
        let s = only_new_models();
        let sdk = [("user-agent", "ShopSDK/2.1"), ("accept-encoding", "gzip")];
        for i in 0..5 {
            let f = judge_req(&b, &s, "10.2.0.1", &get_req("/products", &sdk), i);
            assert!(f.is_empty(), "{f:?}");
        }
        // The same User-Agent string from another tool without Accept-Encoding.
        let other = [("user-agent", "ShopSDK/2.1")];
        let f = judge_req(&b, &s, "10.2.0.1", &get_req("/products", &other), 6);
        assert_eq!(rules(&f), ["behavior.bot.inconsistent"]);
        assert!(
            f[0].evidence.contains(
                "observed headers in the order user-agent under the same User-Agent as before, expected user-agent, accept-encoding"
            ),
            "{}",
            f[0].evidence
        );
        // Another client with that set from the start is fine.
        assert!(judge_req(&b, &s, "10.2.0.2", &get_req("/products", &other), 7).is_empty());
    }

    #[test]
    fn unseen_transitions_are_flagged_once_learned_and_usual_sessions_are_not() {
        let b = Behavior::new(Limits::default());
        let s = Settings {
            sequence: Some(SequenceParams {
                min_samples: 50,
                ..Settings::default().sequence.unwrap()
            }),
            ..only_new_models()
        };
        let post = |target| Req {
            method: Method::POST,
            target,
            headers: &[],
            body: None,
        };
        let shop = |b: &Behavior, ip: &str, t: u64| -> Vec<Finding> {
            let mut all = Vec::new();
            for (i, req) in [
                get_req("/products", &[]),
                get_req("/products/42", &[]),
                get_req("/cart", &[]),
                post("/checkout/77/confirm"),
            ]
            .iter()
            .enumerate()
            {
                all.extend(exchange(b, &s, ip, req, 200, t + i as u64 * 1000));
            }
            all
        };
        for c in 0..60u32 {
            let ip = std::net::Ipv4Addr::from(0x0a03_0000 + c).to_string();
            assert!(shop(&b, &ip, u64::from(c)).is_empty());
        }
        // Straight from a product page to the confirmation, without the cart.
        let attacker = "10.9.0.1";
        exchange(&b, &s, attacker, &get_req("/products/42", &[]), 200, 100);
        let f = exchange(&b, &s, attacker, &post("/checkout/78/confirm"), 200, 200);
        assert_eq!(rules(&f), ["behavior.sequence.unseen"]);
        assert_eq!(f[0].score, 3);
        assert_eq!(f[0].target, "sequence:POST /checkout/{id}/confirm");
        assert!(
            f[0].evidence.starts_with(
                "observed GET /products/{id} → POST /checkout/{id}/confirm, seen 0 times in 60 clean transitions into it, expected after GET /cart (100%)"
            ),
            "{}",
            f[0].evidence
        );
        // A session that starts on the confirmation is unusual as well.
        let f = exchange(&b, &s, "10.9.0.2", &post("/checkout/9/confirm"), 200, 300);
        assert!(f[0].evidence.contains("(session start) →"), "{f:?}");
        // A usual session after a long pause is still clean: the pause starts a new one.
        assert!(shop(&b, attacker, 3_600_000).is_empty());
        let baselines = b.baselines(&s, 0);
        let confirm = baselines
            .iter()
            .find(|e| e.template == "/checkout/{id}/confirm")
            .unwrap();
        assert_eq!(confirm.predecessors.get("GET /cart"), Some(&61));
    }

    #[test]
    fn a_client_far_above_the_learned_rate_or_error_ratio_is_flagged() {
        let b = Behavior::new(Limits::default());
        let s = Settings {
            rate_anomaly: Some(RateAnomalyParams {
                window_ms: 10_000,
                min_windows: 100,
                ..Settings::default().rate_anomaly.unwrap()
            }),
            ..only_new_models()
        };
        // 200 clients, two windows each: 4 to 12 requests a window, one 404 in some.
        for c in 0..200u32 {
            let ip = std::net::Ipv4Addr::from(0x0a04_0000 + c).to_string();
            for w in 0..3u64 {
                let n = 4 + (c as u64 * 7 + w) % 9;
                for i in 0..n {
                    let status = if i == 0 && c % 3 == 0 { 404 } else { 200 };
                    let t = w * 10_000 + i * 500;
                    let f = exchange(&b, &s, &ip, &get_req("/products", &[]), status, t);
                    assert!(f.is_empty(), "normal client {ip} flagged: {f:?}");
                }
            }
        }
        // A scraper: 120 requests in one window.
        let mut flagged_at = None;
        for i in 0..120u64 {
            let f = exchange(
                &b,
                &s,
                "10.9.1.1",
                &get_req("/products", &[]),
                200,
                40_000 + i * 50,
            );
            if let Some(first) = f.iter().find(|f| f.rule_id == "behavior.rate.anomaly") {
                flagged_at.get_or_insert((i + 1, first.evidence.clone()));
            }
        }
        let (at, evidence) = flagged_at.expect("the scraper was not flagged");
        assert!(
            (30..=60).contains(&at),
            "flagged at request {at}: {evidence}"
        );
        assert!(
            evidence.contains("requests in 10s to GET /products, expected at most"),
            "{evidence}"
        );
        // A fuzzer: most answers 400.
        let mut errors = Vec::new();
        for i in 0..20u64 {
            let f = exchange(
                &b,
                &s,
                "10.9.1.2",
                &get_req("/products", &[]),
                400,
                40_000 + i * 100,
            );
            errors.extend(
                f.into_iter()
                    .filter(|f| f.rule_id == "behavior.errors.anomaly"),
            );
        }
        assert!(!errors.is_empty(), "the fuzzer was not flagged");
        assert!(
            errors[0].evidence.contains("responses answered 4xx (100%)"),
            "{}",
            errors[0].evidence
        );
    }

    #[test]
    fn failures_against_one_account_from_many_addresses_are_flagged() {
        let b = Behavior::new(Limits::default());
        let s = Settings {
            accounts: Some(AccountParams {
                bucket: BucketParams {
                    capacity: 20,
                    leak_ms: 30_000,
                },
                field: Some("user.email".into()),
            }),
            ..only_new_models()
        };
        let json = [("content-type", "application/json")];
        let login = |body| Req {
            method: Method::POST,
            target: "/login",
            headers: &json,
            body: Some(body),
        };
        // One legitimate typo is nothing.
        let mine = r#"{"user":{"email":"bob@example.com"},"password":"x"}"#;
        assert!(exchange(&b, &s, "10.5.0.9", &login(mine), 401, 0).is_empty());
        let target = r#"{"user":{"email":"Alice@Example.com"},"password":"123456"}"#;
        for i in 0..21u32 {
            let ip = std::net::Ipv4Addr::from(0x0a05_0000 + i).to_string();
            let f = exchange(&b, &s, &ip, &login(target), 401, u64::from(i));
            assert!(f.is_empty(), "{f:?}");
        }
        // The next attempt on that account, from a fresh address, and in a form body.
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let f = judge_req(
            &b,
            &s,
            "10.5.1.1",
            &Req {
                method: Method::POST,
                target: "/login",
                headers: &form,
                body: Some("user.email=alice%40example.com&password=x"),
            },
            30,
        );
        assert_eq!(rules(&f), ["behavior.auth_failures.account"]);
        assert!(
            f[0].evidence
                .contains("for account `alice@example.com` from 21 distinct addresses"),
            "{}",
            f[0].evidence
        );
        assert!(judge_req(&b, &s, "10.5.1.1", &login(mine), 31).is_empty());
        // Without a configured field, bodies are not read.
        assert!(
            !BehaviorStage {
                route: "r".into(),
                settings: Settings::default(),
                engine: Arc::new(Behavior::new(Limits::default())),
            }
            .needs_body()
        );
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
