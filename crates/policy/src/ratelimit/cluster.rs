//! The limiters of a gateway, kept across reloads, and their cluster mode: a background task
//! that every `sync_interval` sends each limiter's admissions (per key) to Redis, where a
//! script advances a cluster-wide GCRA state per key, and raises the local states to the
//! cluster-wide ones. It also forgets idle keys.
//!
//! When Redis does not answer within `timeout`, the admissions of that interval are dropped,
//! each replica keeps limiting on its own state (local fallback), `ratelimit_redis_up` goes
//! to 0 and one warning is logged; the next interval tries again.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

use super::limiter::{LimitKey, LimitSpec, Limiter, PolicyClock};
use super::metrics::RateLimitMetrics;

/// How often idle keys are forgotten.
const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// Keys per script call (one call must not hold Redis for long).
const KEYS_PER_CALL: usize = 256;

/// Advances the cluster-wide GCRA state of each key by the admissions a replica reports, on
/// Redis' clock, and answers how far ahead of now each state runs (µs). ARGV holds, per key:
/// admissions, period (µs), tolerance (µs, burst - 1 periods).
const SYNC_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local tau = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  tat = tat + n * period
  local cap = now + tau + period
  if tat > cap then tat = cap end
  redis.call('SET', key, string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
  out[i] = tat - now
end
return out
";

/// Cluster mode settings (`rate_limit.redis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    pub sync_interval: Duration,
    /// Time allowed for one sync (connect included).
    pub timeout: Duration,
    /// Prefix of every Redis key, so that several gateway fleets can share one Redis.
    pub key_prefix: String,
}

impl ClusterSettings {
    /// The URL without credentials, for logs.
    pub fn redacted_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }
}

/// Every limiter of the gateway, and the cluster sync.
pub struct RateLimits {
    limiters: Mutex<Vec<Weak<Limiter>>>,
    cluster: ArcSwapOption<ClusterSettings>,
    wake: Arc<Notify>,
    clock: PolicyClock,
    pub metrics: RateLimitMetrics,
    /// UNKNOWN, UP or DOWN: the cluster sync's last result.
    state: AtomicU8,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl RateLimits {
    /// Makes the registry and starts its background task (within a Tokio runtime).
    pub fn new(metrics: RateLimitMetrics) -> Arc<Self> {
        Self::with_clock(metrics, PolicyClock::real())
    }

    pub fn with_clock(metrics: RateLimitMetrics, clock: PolicyClock) -> Arc<Self> {
        let limits = Arc::new(RateLimits {
            limiters: Mutex::new(Vec::new()),
            cluster: ArcSwapOption::empty(),
            wake: Arc::new(Notify::new()),
            clock,
            metrics,
            state: AtomicU8::new(UNKNOWN),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(maintain(Arc::downgrade(&limits), limits.wake.clone()));
        }
        limits
    }

    /// The limiter of `spec` on `route`: the existing one when the route already had this
    /// very limit (its counts survive a reload), otherwise a new one.
    pub fn limiter(&self, route: &str, spec: &LimitSpec) -> Result<Arc<Limiter>, String> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters.retain(|l| l.strong_count() > 0);
        if let Some(existing) = limiters
            .iter()
            .filter_map(Weak::upgrade)
            .find(|l| l.route == route && l.spec == *spec)
        {
            return Ok(existing);
        }
        let refusals = self
            .metrics
            .refusals
            .with_label_values(&[route, spec.name.as_str()]);
        let limiter = Arc::new(Limiter::new(
            route,
            spec.clone(),
            self.clock.clone(),
            refusals,
        )?);
        limiter.set_clustered(self.cluster.load().is_some());
        limiters.push(Arc::downgrade(&limiter));
        Ok(limiter)
    }

    /// Turns cluster mode on, changes it, or turns it off (`None`).
    pub fn configure_cluster(&self, settings: Option<ClusterSettings>) {
        let on = settings.is_some();
        self.cluster.store(settings.map(Arc::new));
        for limiter in self.live() {
            limiter.set_clustered(on);
        }
        if !on {
            self.metrics.redis_up.set(0);
            self.state.store(UNKNOWN, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    fn live(&self) -> Vec<Arc<Limiter>> {
        self.limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Whether the last sync with Redis worked.
    pub fn redis_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    fn mark(&self, settings: &ClusterSettings, up: bool, error: Option<&str>) {
        let state = if up { UP } else { DOWN };
        let before = self.state.swap(state, Ordering::Relaxed);
        self.metrics.redis_up.set(i64::from(up));
        if up {
            self.metrics.redis_syncs.inc();
            if before != UP {
                tracing::info!(redis = %settings.redacted_url(), "rate-limit counters are shared through Redis");
            }
        } else {
            self.metrics.redis_errors.inc();
            if before != DOWN {
                tracing::warn!(
                    redis = %settings.redacted_url(),
                    error = error.unwrap_or("no answer within the timeout"),
                    "Redis is unreachable: each replica enforces rate limits on its own counters (local fallback) until Redis answers again"
                );
            }
        }
    }
}

type Link = (ClusterSettings, ConnectionManager);

fn connect(settings: &ClusterSettings) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(settings.url.as_str()).map_err(|e| e.to_string())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout))
        .set_number_of_retries(1)
        .set_max_delay(settings.sync_interval.max(Duration::from_millis(100)));
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())
}

/// One sync: admissions out, cluster-wide states back, merged.
async fn sync(
    script: &redis::Script,
    connection: &mut ConnectionManager,
    settings: &ClusterSettings,
    batch: &[(Arc<Limiter>, LimitKey, u32)],
) -> Result<(), String> {
    if batch.is_empty() {
        let _: String = redis::cmd("PING")
            .query_async(connection)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    for chunk in batch.chunks(KEYS_PER_CALL) {
        let mut invocation = script.prepare_invoke();
        for (limiter, key, admitted) in chunk {
            invocation
                .key(format!(
                    "{}:{}:{}:{}",
                    settings.key_prefix,
                    limiter.route,
                    limiter.spec.name,
                    key.redis_part()
                ))
                .arg(*admitted)
                .arg(limiter.period().as_micros().max(1) as u64)
                .arg(limiter.tau().as_micros() as u64);
        }
        let debts: Vec<i64> = invocation
            .invoke_async(connection)
            .await
            .map_err(|e| e.to_string())?;
        for ((limiter, key, _), debt) in chunk.iter().zip(debts) {
            limiter.merge_debt(key, Duration::from_micros(debt.max(0) as u64));
        }
    }
    Ok(())
}

async fn maintain(limits: Weak<RateLimits>, wake: Arc<Notify>) {
    let script = redis::Script::new(SYNC_SCRIPT);
    let mut link: Option<Link> = None;
    let mut housekept = Instant::now();
    loop {
        let interval = match limits.upgrade() {
            Some(this) => this
                .cluster
                .load()
                .as_ref()
                .map_or(Duration::from_secs(1), |s| s.sync_interval),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
        let Some(this) = limits.upgrade() else {
            return;
        };
        let live = this.live();
        if housekept.elapsed() >= HOUSEKEEPING {
            housekept = Instant::now();
            for limiter in &live {
                limiter.housekeep();
            }
        }
        let Some(settings) = this.cluster.load_full() else {
            link = None;
            continue;
        };
        if link.as_ref().is_none_or(|(s, _)| *s != *settings) {
            link = match connect(&settings) {
                Ok(connection) => Some(((*settings).clone(), connection)),
                Err(error) => {
                    this.mark(&settings, false, Some(&error));
                    None
                }
            };
        }
        let Some((_, connection)) = link.as_mut() else {
            continue;
        };
        let batch: Vec<(Arc<Limiter>, LimitKey, u32)> = live
            .iter()
            .filter(|l| l.is_clustered())
            .flat_map(|l| {
                l.take_pending()
                    .into_iter()
                    .map(move |(key, n)| (l.clone(), key, n))
            })
            .collect();
        let result = tokio::time::timeout(
            settings.timeout,
            sync(&script, connection, &settings, &batch),
        )
        .await;
        match result {
            Ok(Ok(())) => this.mark(&settings, true, None),
            Ok(Err(error)) => this.mark(&settings, false, Some(&error)),
            Err(_elapsed) => this.mark(&settings, false, None),
        }
    }
}
