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
