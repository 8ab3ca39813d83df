//! Upstream pools: targets, load balancing, passive outlier ejection and active health checks.
//!
//! Per-target state is a handful of atomics, so choosing a target and recording an outcome
//! take no lock. A background task per pool (holding only a weak reference, so it ends with
//! the pool) runs the health checks and brings ejected targets back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use apiguard_model::event::now_ms;
use apiguard_model::{EventKind, SecurityEvent};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::broadcast;

use crate::body::RequestBody;
use crate::config::{Balancing, OutlierConfig, UpstreamConfig, UpstreamProtocol};
use crate::connpool::{ConnPool, PooledBody, SendError};
use crate::metrics::Metrics;

/// The settings a pool is built from, without file positions: two pools with equal settings
/// are the same pool, so a reload that does not change them keeps connections and health state.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub targets: Vec<String>,
    pub protocol: UpstreamProtocol,
    pub balancing: Balancing,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_target: usize,
    pub retries: u32,
    pub health_check: Option<HealthSettings>,
    pub outlier: OutlierConfig,
    /// The pool that takes over when no target is available (and when self-healing
    /// reroutes).
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl PoolSettings {
    pub fn from_config(config: &UpstreamConfig) -> Self {
        PoolSettings {
            targets: config.targets.iter().map(|t| t.value.clone()).collect(),
            protocol: config.protocol,
            balancing: config.balancing,
            connect_timeout: config.connect_timeout.0,
            request_timeout: config.request_timeout.0,
            idle_timeout: config.idle_timeout.0,
            max_idle_per_target: config.max_idle_per_target,
            retries: config.retries,
            health_check: config.health_check.as_ref().map(|h| HealthSettings {
                path: h.path.clone(),
                interval: h.interval.0,
                timeout: h.timeout.0,
                unhealthy_threshold: h.unhealthy_threshold.max(1),
                healthy_threshold: h.healthy_threshold.max(1),
            }),
            outlier: config.outlier_detection.clone(),
            fallback: config.fallback.clone(),
        }
    }
}

/// One upstream target and its live state.
pub struct Target {
    /// Position in the pool's target list.
    pub index: usize,
    pub address: String,
    pub authority: Authority,
    in_flight: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failures: AtomicU32,
    /// Milliseconds since the epoch until which the target is ejected; 0 when it is not.
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    last_ejection_end_ms: AtomicU64,
    /// The active health check's view; true until checks say otherwise.
    healthy: AtomicBool,
    check_streak: AtomicU32,
}

impl Target {
    fn new(index: usize, address: &str) -> Result<Self, String> {
        let authority: Authority = address
            .parse()
            .map_err(|_| format!("`{address}` is not a valid host:port"))?;
        if authority.port_u16().is_none() {
            return Err(format!("`{address}` has no port"));
        }
        Ok(Target {
            index,
            address: address.to_owned(),
            authority,
            in_flight: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            last_ejection_end_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
        })
    }

    /// Whether the target takes traffic. `now` is only read when the target carries an
    /// ejection mark, so the common case reads no clock.
    fn available(&self, now: &mut Option<u64>) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || until <= *now.get_or_insert_with(now_ms)
    }

    fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A target chosen for one attempt; it counts as in flight until dropped.
pub struct Attempt {
    pub target: Arc<Target>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.target.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an attempt ended, as far as outlier detection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response arrived with this status.
    Status(u16),
    /// No response: connection refused or reset, timeout, protocol error.
    GatewayFailure,
}

pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// A pool of targets behind one name.
pub struct Pool {
    pub name: String,
    pub settings: PoolSettings,
    pub targets: Vec<Arc<Target>>,
    /// One client per worker thread, so a request and its upstream connection live on the
    /// same thread (no cross-thread wake-ups on the hot path).
    clients: Vec<UpstreamClient>,
    /// HTTP/1.1 pools send through per-worker connections of their own (see `connpool`).
    conns: Option<ConnPool>,
    next: AtomicUsize,
    events: broadcast::Sender<Arc<SecurityEvent>>,
    metrics: Arc<Metrics>,
    /// Attempts and failed attempts (5xx, connection failures, timeouts) since the pool
    /// started, for self-healing's windows.
    attempts: AtomicU64,
    failures: AtomicU64,
}

impl Pool {
    /// Builds a pool and starts its background task (health checks, ejection expiry).
    pub fn start(
        name: &str,
        settings: PoolSettings,
        workers: usize,
        events: broadcast::Sender<Arc<SecurityEvent>>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Pool>, String> {
        let targets = settings
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| Target::new(i, t).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let clients = (0..workers.max(1))
            .map(|_| build_client(&settings))
            .collect();
        let conns = (settings.protocol == UpstreamProtocol::Http1).then(|| {
            ConnPool::new(
                workers,
                targets.len(),
                settings.connect_timeout,
                settings.idle_timeout,
                settings.max_idle_per_target,
            )
        });
        for target in &targets {
            metrics
                .upstream_healthy
                .with_label_values(&[name, &target.address])
                .set(1);
        }
        let pool = Arc::new(Pool {
            name: name.to_owned(),
            settings,
            targets,
            clients,
            conns,
            next: AtomicUsize::new(0),
            events,
            metrics,
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        tokio::spawn(maintain(Arc::downgrade(&pool)));
        Ok(pool)
    }

    /// The client of the worker thread this runs on.
    pub fn client(&self) -> &UpstreamClient {
        &self.clients[crate::worker::current() % self.clients.len()]
    }

    /// Sends one attempt to `target`. The request's URI is in origin form (`/path?query`).
    pub async fn send(
        &self,
        target: &Target,
        mut request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        match &self.conns {
            Some(conns) => {
                let (response, lease) = conns.send(target.index, &target.address, request).await?;
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    // The connection now belongs to the upgraded protocol.
                    lease.discard();
                    return Ok(response.map(PooledBody::unpooled));
                }
                Ok(response.map(|body| PooledBody::new(body, lease)))
            }
            None => {
                *request.uri_mut() = Pool::upstream_uri(target, request.uri().path_and_query());
                let response = self.client().request(request).await?;
                Ok(response.map(PooledBody::unpooled))
            }
        }
    }

    /// Picks a target for an attempt, skipping unavailable ones and `avoid` (the target a
    /// retry just failed on) when there is another choice.
    pub fn pick(&self, avoid: Option<&Arc<Target>>) -> Option<Attempt> {
        let mut now = None;
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n).map(|i| &self.targets[(start + i) % n]);
        let is_avoided = |t: &Arc<Target>| avoid.is_some_and(|a| Arc::ptr_eq(a, t));
        let chosen = match self.settings.balancing {
            Balancing::RoundRobin => {
                let mut fallback = None;
                let mut chosen = None;
                for t in candidates.filter(|t| t.available(&mut now)) {
                    if is_avoided(t) {
                        fallback.get_or_insert(t);
                    } else {
                        chosen = Some(t);
                        break;
                    }
                }
                chosen.or(fallback)
            }
            Balancing::LeastRequests => candidates
                .filter(|t| t.available(&mut now))
                .min_by_key(|t| (is_avoided(t), t.in_flight())),
        }?;
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Attempt {
            target: chosen.clone(),
        })
    }

    /// The URI to send to a target: its authority with the request's path and query.
    pub fn upstream_uri(target: &Target, path_and_query: Option<&http::uri::PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(target.authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path make a valid URI")
    }

    /// Attempts and failed attempts since the pool started.
    pub fn outcomes(&self) -> (u64, u64) {
        (
            self.attempts.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Targets that can take traffic now.
    pub fn available_targets(&self) -> usize {
        let mut now = None;
        self.targets
            .iter()
            .filter(|t| t.available(&mut now))
            .count()
    }

    /// Feeds outlier detection with an attempt's result.
    pub fn record(&self, target: &Arc<Target>, result: AttemptResult) {
        let outlier = &self.settings.outlier;
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if !matches!(result, AttemptResult::Status(status) if status < 500) {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            AttemptResult::Status(status) if status >= 500 => {
                let n = target.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                target
                    .consecutive_gateway_failures
                    .store(0, Ordering::Relaxed);
                if outlier.consecutive_5xx > 0 && n >= outlier.consecutive_5xx {
                    self.eject(target, "consecutive_5xx");
                }
            }
            AttemptResult::Status(_) => {
                // Relaxed loads first: the common case (nothing to reset) writes nothing.
                if target.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    target.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if target.consecutive_gateway_failures.load(Ordering::Relaxed) != 0 {
                    target
                        .consecutive_gateway_failures
                        .store(0, Ordering::Relaxed);
                }
            }
            AttemptResult::GatewayFailure => {
                let n = target
                    .consecutive_gateway_failures
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if outlier.consecutive_gateway_failures > 0
                    && n >= outlier.consecutive_gateway_failures
                {
                    self.eject(target, "consecutive_gateway_failures");
                }
            }
        }
    }

    fn eject(&self, target: &Arc<Target>, reason: &str) {
        let now = now_ms();
        let n = self.targets.len();
        let percent = usize::from(self.settings.outlier.max_ejection_percent.min(100));
        if n < 2 || percent == 0 || target.is_ejected(now) {
            // Ejecting the only target leaves nothing to fail over to.
            return;
        }
        let cap =
            (n * usize::from(self.settings.outlier.max_ejection_percent.min(100)) / 100).max(1);
        let ejected = self.targets.iter().filter(|t| t.is_ejected(now)).count();
        if ejected >= cap {
            return;
        }
        let times = target.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let base = self.settings.outlier.base_ejection_time.0;
        let length = base
            .saturating_mul(times)
            .min(self.settings.outlier.max_ejection_time.0);
        let until = now + length.as_millis() as u64;
        target.ejected_until_ms.store(until, Ordering::Relaxed);
        target.consecutive_5xx.store(0, Ordering::Relaxed);
        target
            .consecutive_gateway_failures
            .store(0, Ordering::Relaxed);
        self.metrics
            .upstream_ejections
            .with_label_values(&[&self.name, &target.address, reason])
            .inc();
        self.metrics
            .upstream_healthy
            .with_label_values(&[&self.name, &target.address])
            .set(0);
        tracing::warn!(pool = %self.name, target = %target.address, reason, ejection_ms = length.as_millis() as u64, "upstream target ejected");
        let _ = self.events.send(Arc::new(SecurityEvent::system(
            EventKind::UpstreamEjected {
                pool: self.name.clone(),
                target: target.address.clone(),
                reason: reason.to_owned(),
                until_ms: until,
            },
        )));
    }

    /// Whether any target can take traffic now.
    pub fn has_available_target(&self) -> bool {
        let mut now = None;
        self.targets.iter().any(|t| t.available(&mut now))
    }

    fn update_gauge(&self, target: &Target, now: u64) {
        self.metrics
            .upstream_healthy
            .with_label_values(&[&self.name, &target.address])
            .set(i64::from(target.available(&mut Some(now))));
    }

    fn restored(&self, target: &Target, why: &str) {
        tracing::info!(pool = %self.name, target = %target.address, why, "upstream target back in rotation");
        let _ = self.events.send(Arc::new(SecurityEvent::system(
            EventKind::UpstreamRestored {
                pool: self.name.clone(),
                target: target.address.clone(),
            },
        )));
    }

    async fn check(&self, target: &Arc<Target>, health: &HealthSettings) {
        let uri = Pool::upstream_uri(
            target,
            Some(
                &health
                    .path
                    .parse()
                    .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/")),
            ),
        );
        let request = Request::get(uri)
            .header(http::header::USER_AGENT, "apiguard-health-check")
            .body(RequestBody::Empty)
            .expect("a GET with a valid URI is a valid request");
        let passed =
            match tokio::time::timeout(health.timeout, self.client().request(request)).await {
                Ok(Ok(response)) => {
                    response.status().is_success() || response.status().is_redirection()
                }
                _ => false,
            };
        let was_healthy = target.healthy.load(Ordering::Relaxed);
        if passed == was_healthy {
            target.check_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = target.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if passed {
            health.healthy_threshold
        } else {
            health.unhealthy_threshold
        };
        if streak >= threshold {
            target.check_streak.store(0, Ordering::Relaxed);
            target.healthy.store(passed, Ordering::Relaxed);
            if passed {
                self.restored(target, "health check passed");
            } else {
                tracing::warn!(pool = %self.name, target = %target.address, "upstream target failed its health checks");
                self.metrics
                    .upstream_ejections
                    .with_label_values(&[&self.name, &target.address, "health_check"])
                    .inc();
                let _ = self.events.send(Arc::new(SecurityEvent::system(
                    EventKind::UpstreamEjected {
                        pool: self.name.clone(),
                        target: target.address.clone(),
                        reason: "health_check".to_owned(),
                        until_ms: 0,
                    },
                )));
            }
            self.update_gauge(target, now_ms());
        }
    }
}

fn build_client(settings: &PoolSettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.idle_timeout)
        .pool_max_idle_per_host(settings.max_idle_per_target)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(settings.protocol == UpstreamProtocol::H2c)
        .build(connector)
}

/// The pool's background task: ejection expiry every 250 ms, health checks every interval.
async fn maintain(pool: Weak<Pool>) {
    let tick = Duration::from_millis(250);
    let mut since_check = Duration::MAX;
    let mut was_ejected: Vec<bool> = Vec::new();
    loop {
        let Some(pool) = pool.upgrade() else { return };
        let now = now_ms();
        was_ejected.resize(pool.targets.len(), false);
        for (i, target) in pool.targets.iter().enumerate() {
            let until = target.ejected_until_ms.load(Ordering::Relaxed);
            let ejected = until > now;
            if was_ejected[i] && !ejected {
                // Clearing the mark lets the request path skip its clock read again (unless a
                // new ejection raced in).
                let _ = target.ejected_until_ms.compare_exchange(
                    until,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                target.last_ejection_end_ms.store(now, Ordering::Relaxed);
                pool.update_gauge(target, now);
                pool.restored(target, "ejection time over");
            }
            was_ejected[i] = ejected;
            // A target that stayed well for a long ejection period earns a shorter next one.
            let quiet_since = target.last_ejection_end_ms.load(Ordering::Relaxed);
            let max = pool.settings.outlier.max_ejection_time.0.as_millis() as u64;
            if !ejected && quiet_since > 0 && now.saturating_sub(quiet_since) > max {
                let n = target.ejections.load(Ordering::Relaxed);
                if n > 0 {
                    target.ejections.store(n - 1, Ordering::Relaxed);
                }
                target.last_ejection_end_ms.store(now, Ordering::Relaxed);
            }
        }
        if let Some(health) = pool.settings.health_check.clone() {
            if since_check >= health.interval {
                since_check = Duration::ZERO;
                let checks: Vec<_> = pool
                    .targets
                    .iter()
                    .map(|target| {
                        let (pool, target, health) = (pool.clone(), target.clone(), health.clone());
                        tokio::spawn(async move { pool.check(&target, &health).await })
                    })
                    .collect();
                for check in checks {
                    let _ = check.await;
                }
            }
            since_check = since_check.saturating_add(tick);
        }
        drop(pool);
        tokio::time::sleep(tick).await;
    }
}
