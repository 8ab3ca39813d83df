//! One configured limit on one route: a keyed GCRA limiter (governor) whose state lives in a
//! map this module can also read and raise, so that the cluster sync can merge what other
//! replicas admitted into the local state.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apiguard_model::{AuthMethod, RequestContext, RequestView};
use dashmap::DashMap;
use governor::clock::{Clock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use prometheus::IntCounter;
use sha2::{Digest, Sha256};

/// What a limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The client's address (IPv6 clients by their /64).
    Client,
    /// The API key the request was authenticated with (requests without one are not counted).
    ApiKey,
    /// The authenticated identity, whatever the method (anonymous requests are not counted).
    Identity,
    /// Every request of the route together.
    Route,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Client => "client",
            KeyKind::ApiKey => "api_key",
            KeyKind::Identity => "identity",
            KeyKind::Route => "route",
        }
    }

    /// Whether the key needs the identity, which authentication sets: such limits run in a
    /// second rate-limit stage right after authentication.
    pub fn needs_identity(self) -> bool {
        matches!(self, KeyKind::ApiKey | KeyKind::Identity)
    }

    pub(crate) fn rule_id(self) -> &'static str {
        match self {
            KeyKind::Client => "ratelimit.client",
            KeyKind::ApiKey => "ratelimit.api_key",
            KeyKind::Identity => "ratelimit.identity",
            KeyKind::Route => "ratelimit.route",
        }
    }
}

/// A limit as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSpec {
    /// Letters, digits, `-`, `_` and `.`: it names the limit in headers and metrics.
    pub name: String,
    pub key: KeyKind,
    /// Requests allowed per `per`, sustained.
    pub rate: u32,
    pub per: Duration,
    /// Requests allowed at once on a full bucket.
    pub burst: u32,
    /// Shared between replicas through Redis when cluster mode is configured.
    pub cluster: bool,
    /// Keys tracked at most; beyond, new keys share one bucket until old ones expire.
    pub max_keys: usize,
}

impl LimitSpec {
    /// The GCRA quota, or why there is none.
    pub fn quota(&self) -> Result<Quota, String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "limit name `{}` must be 1 to 64 letters, digits, `-`, `_` or `.`",
                self.name
            ));
        }
        let rate = NonZeroU32::new(self.rate).ok_or("rate must be at least 1")?;
        let burst = NonZeroU32::new(self.burst).ok_or("burst must be at least 1")?;
        if self.max_keys == 0 {
            return Err("max_keys must be at least 1".into());
        }
        let period = self.per / rate.get();
        if period.is_zero() {
            return Err(format!(
                "{} requests per {:?} is more than one per nanosecond",
                self.rate, self.per
            ));
        }
        Quota::with_period(period)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| "per must be longer than 0".to_owned())
    }

    /// This limit's item in `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the
    /// sustained rate as a quota over a window in whole seconds.
    pub fn policy_item(&self) -> String {
        let (quota, window) = if self.per.subsec_nanos() == 0 && self.per.as_secs() > 0 {
            (u64::from(self.rate), self.per.as_secs())
        } else {
            // A period that is not whole seconds: the rate per second.
            (
                (f64::from(self.rate) / self.per.as_secs_f64()).ceil() as u64,
                1,
            )
        };
        format!("\"{}\";q={quota};w={window}", self.name)
    }
}

/// What a limit counts one request under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// An address as 128 bits (IPv4 as IPv4-mapped, IPv6 cut to its /64).
    Addr(u128),
    Subject(AuthMethod, Box<str>),
    Route,
    /// The shared bucket of new keys while the limit tracks `max_keys` keys.
    Overflow,
}

impl LimitKey {
    pub fn client(ip: IpAddr) -> LimitKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => LimitKey::Addr(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => LimitKey::Addr(u128::from(v6) & (u128::MAX << 64)),
        }
    }

    /// The key's part of a Redis key: short, stable across replicas, and without the
    /// subject in clear.
    pub(crate) fn redis_part(&self) -> String {
        match self {
            LimitKey::Addr(bits) => format!("ip:{bits:032x}"),
            LimitKey::Subject(method, subject) => {
                let digest = Sha256::digest(subject.as_bytes());
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                let method = match method {
                    AuthMethod::Jwt => "jwt",
                    AuthMethod::ApiKey => "key",
                    AuthMethod::Mtls => "mtls",
                    AuthMethod::Signature => "sig",
                };
                format!("{method}:{hex}")
            }
            LimitKey::Route => "route".into(),
            LimitKey::Overflow => "overflow".into(),
        }
    }
}

/// The limiters' clock: monotonic time since the limiter was made, or a manual clock in
/// tests.
#[derive(Clone, Debug)]
pub struct PolicyClock {
    origin: Instant,
    manual: Option<Arc<AtomicU64>>,
}

impl PolicyClock {
    pub fn real() -> Self {
        PolicyClock {
            origin: Instant::now(),
            manual: None,
        }
    }

    /// A clock that only moves when told (`advance`).
    pub fn manual() -> Self {
        PolicyClock {
            origin: Instant::now(),
            manual: Some(Arc::new(AtomicU64::new(1))),
        }
    }

    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.manual {
            now.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
        }
    }
}

impl Clock for PolicyClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match &self.manual {
            Some(now) => Nanos::from(now.load(Ordering::Acquire)),
            None => Nanos::from(self.origin.elapsed()),
        }
    }
}

/// The GCRA states, readable from outside the limiter, with a bound on the number of keys.
#[derive(Clone)]
struct Store {
    map: Arc<DashMap<LimitKey, InMemoryState>>,
    keys: Arc<AtomicUsize>,
    max_keys: usize,
}

impl StateStore for Store {
    type Key = LimitKey;

    fn measure_and_replace<T, F, E>(&self, key: &LimitKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let key = if self.keys.load(Ordering::Relaxed) >= self.max_keys {
            &LimitKey::Overflow
        } else {
            key
        };
        let state = self.map.entry(key.clone()).or_insert_with(|| {
            self.keys.fetch_add(1, Ordering::Relaxed);
            InMemoryState::default()
        });
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// Reads a state's theoretical arrival time without changing it.
fn tat_of(state: &InMemoryState) -> Nanos {
    let read: Result<(), Nanos> = state.measure_and_replace(&NotKeyed::NonKey, |tat| {
        Err(tat.unwrap_or(Nanos::from(0u64)))
    });
    read.err().unwrap_or(Nanos::from(0u64))
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Allowed {
        /// Requests still allowed at once.
        remaining: u32,
        /// Until the bucket is full again.
        reset: Duration,
    },
    Refused {
        retry_after: Duration,
    },
}

/// One limit of one route.
pub struct Limiter {
    pub route: String,
    pub spec: LimitSpec,
    limiter: RateLimiter<LimitKey, Store, PolicyClock, StateInformationMiddleware>,
    store: Store,
    clock: PolicyClock,
    /// The limiter's start on `clock` (GCRA times are relative to it).
    start: Nanos,
    /// Time one request "costs" (per / rate).
    period: Duration,
    /// How far ahead of now the state may run (burst - 1 periods).
    tau: Duration,
    /// Counting admissions for the cluster sync.
    clustered: AtomicBool,
    /// Requests admitted per key since the last sync.
    pending: DashMap<LimitKey, AtomicU32>,
    pub(crate) refusals: IntCounter,
}

impl Limiter {
    pub fn new(
        route: &str,
        spec: LimitSpec,
        clock: PolicyClock,
        refusals: IntCounter,
    ) -> Result<Self, String> {
        let quota = spec.quota()?;
        let store = Store {
            map: Arc::new(DashMap::new()),
            keys: Arc::new(AtomicUsize::new(0)),
            max_keys: spec.max_keys,
        };
        // The limiter reads the clock once when made: taking the reading just before is
        // within nanoseconds of it, far below what the cluster sync can tell apart.
        let start = clock.now();
        let limiter = RateLimiter::<_, _, _, StateInformationMiddleware>::new(
            quota,
            store.clone(),
            clock.clone(),
        );
        let period = quota.replenish_interval();
        let tau = period * (spec.burst - 1);
        Ok(Limiter {
            route: route.to_owned(),
            spec,
            limiter,
            store,
            clock,
            start,
            period,
            tau,
            clustered: AtomicBool::new(false),
            pending: DashMap::new(),
            refusals,
        })
    }

    /// What this limit counts the request under; `None` when it does not apply (no identity
    /// for an identity limit).
    pub fn key_for(&self, request: &RequestView<'_>, ctx: &RequestContext) -> Option<LimitKey> {
        match self.spec.key {
            KeyKind::Client => Some(LimitKey::client(request.client.peer.ip())),
            KeyKind::Route => Some(LimitKey::Route),
            KeyKind::ApiKey => ctx
                .identity
                .as_ref()
                .filter(|i| i.method == AuthMethod::ApiKey)
                .map(|i| LimitKey::Subject(i.method, i.subject.as_str().into())),
            KeyKind::Identity => ctx
                .identity
                .as_ref()
                .map(|i| LimitKey::Subject(i.method, i.subject.as_str().into())),
        }
    }

    /// Counts one request under `key`, if the limit allows it.
    pub fn check(&self, key: &LimitKey) -> Checked {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                if self.clustered.load(Ordering::Relaxed) {
                    match self.pending.get(key) {
                        Some(count) => {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            self.pending
                                .entry(key.clone())
                                .or_default()
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let remaining = snapshot.remaining_burst_capacity();
                Checked::Allowed {
                    remaining,
                    reset: self.period * self.spec.burst.saturating_sub(remaining),
                }
            }
            Err(not_until) => Checked::Refused {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    pub fn set_clustered(&self, on: bool) {
        self.clustered
            .store(on && self.spec.cluster, Ordering::Relaxed);
        if !on {
            self.pending.clear();
        }
    }

    pub fn is_clustered(&self) -> bool {
        self.clustered.load(Ordering::Relaxed)
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn tau(&self) -> Duration {
        self.tau
    }

    /// Takes the admissions counted since the last call.
    pub(crate) fn take_pending(&self) -> Vec<(LimitKey, u32)> {
        let mut taken = Vec::new();
        for entry in self.pending.iter() {
            let n = entry.value().swap(0, Ordering::AcqRel);
            if n > 0 {
                taken.push((entry.key().clone(), n));
            }
        }
        self.pending.retain(|_, n| n.load(Ordering::Acquire) > 0);
        taken
    }

    fn now(&self) -> Nanos {
        self.clock.now().duration_since(self.start)
    }

    /// Raises the local state of `key` to what the cluster admitted: the cluster-wide
    /// state runs `debt` ahead of now. Never lowers it (this replica's own admissions are in
    /// both).
    pub fn merge_debt(&self, key: &LimitKey, debt: Duration) {
        let debt = debt.min(self.tau + self.period);
        if debt.is_zero() {
            return;
        }
        let now = self.now();
        let target = now + Nanos::from(debt);
        let raise = |tat: Option<Nanos>| -> Result<((), Nanos), ()> {
            if tat.is_none_or(|tat| target > tat) {
                Ok(((), target))
            } else {
                Err(())
            }
        };
        if let Some(state) = self.store.map.get(key) {
            let _ = state.measure_and_replace(&NotKeyed::NonKey, raise);
        }
    }

    /// Forgets keys whose bucket is full again (they behave exactly like new keys).
    pub fn housekeep(&self) {
        let now = self.now();
        self.store.map.retain(|_, state| tat_of(state) > now);
        self.store
            .keys
            .store(self.store.map.len(), Ordering::Relaxed);
    }

    /// Keys tracked now.
    pub fn tracked_keys(&self) -> usize {
        self.store.keys.load(Ordering::Relaxed)
    }
}
