//! A route's compiled behaviour settings (the gateway turns its `behavior:` configuration into
//! these). Defaults are documented in docs/behavior.md.

use crate::bucket::BucketParams;
use crate::shape::ShapeParams;

/// What the behaviour stage does with what it notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Neither learns nor judges.
    Off,
    /// Learns baselines and tracks clients; reports nothing (observe only).
    #[default]
    Learn,
    /// Learns and reports findings with a score of 0: they are logged, counted and published,
    /// and never change the decision.
    Detect,
    /// Learns and reports findings with their severity's score, which adds to the request's
    /// anomaly score like the detection engine's findings do.
    Enforce,
}

/// One route's behaviour settings. A model set to `None` is off.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    /// The positive model of parameter values.
    pub shape: Option<ShapeParams>,
    /// Distinct identifiers of one endpoint template walked by one client.
    pub enumeration: Option<BucketParams>,
    /// Distinct paths answered 404 or 410 to one client.
    pub probing: Option<BucketParams>,
    /// Distinct non-static paths requested by one client.
    pub crawling: Option<BucketParams>,
    /// Requests by one client (bursts).
    pub rate: Option<BucketParams>,
    /// Responses 401 or 403 to one client (brute force, credential stuffing).
    pub auth_failures: Option<BucketParams>,
    /// Bot signals: browser claims without a browser's headers, header sets that change under
    /// one User-Agent, automation agents.
    pub bot: Option<BotParams>,
    /// Transitions between endpoints never (or rarely) seen in clean sessions.
    pub sequence: Option<SequenceParams>,
    /// A client's request rate and error ratio against the learned per-client distribution.
    pub rate_anomaly: Option<RateAnomalyParams>,
    /// Authentication failures per account, whatever the address they come from.
    pub accounts: Option<AccountParams>,
    /// Request payload sizes and endpoint latency against their learned baselines.
    pub volume: Option<VolumeParams>,
}

/// Tuning of the payload-size and latency baselines' judgement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VolumeParams {
    /// Clean samples (sized requests, responses) an endpoint needs before it is judged: a
    /// cold baseline never fires.
    pub min_samples: u64,
    /// Standard deviations above the learned mean a value must be.
    pub deviations: f64,
    /// And at least this many times the learned mean.
    pub factor: f64,
    /// Request bodies up to this size are never flagged.
    pub min_payload_bytes: u64,
    /// Latency up to this much above the baseline is never flagged (milliseconds).
    pub latency_floor_ms: f64,
}

impl Default for VolumeParams {
    fn default() -> Self {
        VolumeParams {
            min_samples: 100,
            deviations: 6.0,
            factor: 3.0,
            min_payload_bytes: 1024,
            latency_floor_ms: 100.0,
        }
    }
}

/// Tuning of the bot signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotParams {
    /// Flag known automation agents (headless browsers, scraping frameworks), a weak signal.
    pub automation_agents: bool,
    /// Flag a client whose header set or order changes while its User-Agent stays the same.
    pub consistency: bool,
}

/// Tuning of the call-sequence model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceParams {
    /// Clean transitions into an endpoint before transitions into it are judged.
    pub min_samples: u64,
    /// A transition seen at most this share of the clean transitions into its endpoint is
    /// rare (0 flags only transitions never seen).
    pub rare_ratio: f64,
    /// Distinct previous endpoints remembered per endpoint.
    pub max_predecessors: usize,
    /// A pause longer than this starts a new session.
    pub session_gap_ms: u64,
}

/// Tuning of the learned per-client rate and error-ratio anomalies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateAnomalyParams {
    /// Length of one client's counting window.
    pub window_ms: u64,
    /// Clean client windows a route needs before its clients are judged.
    pub min_windows: u64,
    /// How many standard deviations (of the logarithm of per-window counts) above the learned
    /// mean a client's count must be.
    pub deviations: f64,
    /// A client is never flagged for its rate below this many requests in a window.
    pub min_requests: u32,
    /// Responses a window needs before its error ratio counts (learned or judged).
    pub min_responses: u32,
    /// A client is never flagged for its error ratio below this ratio of 4xx answers.
    pub min_error_ratio: f64,
}

/// Tuning of the per-account authentication-failure model.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountParams {
    /// Failures (401/403) per account: capacity and leak.
    pub bucket: BucketParams,
    /// Where the account name is in a JSON or form body (`username`, `user.email`); without
    /// it, the authenticated identity is the account.
    pub field: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Learn,
            shape: Some(ShapeParams {
                min_samples: 50,
                length_factor: 2.0,
                enum_max_values: 16,
            }),
            enumeration: Some(BucketParams {
                capacity: 30,
                leak_ms: 1_000,
            }),
            probing: Some(BucketParams {
                capacity: 10,
                leak_ms: 10_000,
            }),
            crawling: Some(BucketParams {
                capacity: 40,
                leak_ms: 500,
            }),
            rate: Some(BucketParams {
                capacity: 600,
                leak_ms: 10,
            }),
            auth_failures: Some(BucketParams {
                capacity: 10,
                leak_ms: 10_000,
            }),
            bot: Some(BotParams {
                automation_agents: true,
                consistency: true,
            }),
            sequence: Some(SequenceParams {
                min_samples: 500,
                rare_ratio: 0.002,
                max_predecessors: 32,
                session_gap_ms: 30 * 60_000,
            }),
            rate_anomaly: Some(RateAnomalyParams {
                window_ms: 60_000,
                min_windows: 200,
                deviations: 4.0,
                min_requests: 30,
                min_responses: 10,
                min_error_ratio: 0.5,
            }),
            accounts: Some(AccountParams {
                bucket: BucketParams {
                    capacity: 20,
                    leak_ms: 30_000,
                },
                field: None,
            }),
            volume: Some(VolumeParams::default()),
        }
    }
}

/// Memory bounds of the learned state, fixed when the gateway starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Endpoints (route, method, path template) learned at most; further ones are not learned.
    pub max_endpoints: usize,
    /// Clients tracked at most; past it the least recently seen are forgotten.
    pub max_clients: usize,
    /// Parameters learned per endpoint at most.
    pub max_params: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_endpoints: 10_000,
            max_clients: 100_000,
            max_params: 64,
        }
    }
}
