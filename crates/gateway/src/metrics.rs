//! Prometheus metrics. Label sets are bounded: routes and pools come from the configuration,
//! methods outside the standard set are counted as `OTHER`.

use std::sync::OnceLock;

use apiguard_policy::authn::AuthnMetrics;
use apiguard_policy::integrity::IntegrityMetrics;
use apiguard_policy::ratelimit::RateLimitMetrics;
use http::Method;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_failures: IntCounterVec,
    pub open_connections: IntGaugeVec,
    pub worker_connections: IntGaugeVec,
    pub rejected_connections: IntCounterVec,
    pub config_version: IntGauge,
    pub config_reloads: IntCounterVec,
    pub findings: IntCounterVec,
    pub request_score: HistogramVec,
    pub block_rules: IntGauge,
    pub behavior_endpoints: IntGauge,
    pub behavior_clients: IntGauge,
    pub hub_outbox: IntGauge,
    pub hub_reports: IntCounterVec,
    pub hub_indicators: IntCounterVec,
    /// Authentication failures, continuous verification, JWKS fetches.
    pub authn: AuthnMetrics,
    /// Rate-limit refusals and the Redis cluster sync.
    pub rate_limits: RateLimitMetrics,
    /// Signature and Content-Digest refusals, the replay cache, response inspection.
    pub integrity: IntegrityMetrics,
}

/// Scores by severity are 2 to 5 per finding; the default threshold is 5.
const SCORE_BUCKETS: &[f64] = &[0.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("apiguard".into()), None)
            .expect("a constant metric prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests by route, method, status class and decision",
            ),
            &["route", "method", "status_class", "decision"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request head to response head, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "upstream_target_healthy",
                "1 when a target takes traffic, 0 when it is unhealthy or ejected",
            ),
            &["pool", "target"],
        )
        .expect("valid metric");
        let upstream_ejections = IntCounterVec::new(
            Opts::new(
                "upstream_ejections_total",
                "Targets taken out of rotation, by reason",
            ),
            &["pool", "target", "reason"],
        )
        .expect("valid metric");
        let upstream_failures = IntCounterVec::new(
            Opts::new(
                "upstream_failures_total",
                "Failed upstream attempts by kind (connect, timeout, protocol)",
            ),
            &["pool", "kind"],
        )
        .expect("valid metric");
        let open_connections = IntGaugeVec::new(
            Opts::new("open_connections", "Open client connections by listener"),
            &["listener"],
        )
        .expect("valid metric");
        let worker_connections = IntGaugeVec::new(
            Opts::new(
                "worker_connections",
                "Open client connections by worker thread (the acceptor balances them)",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let rejected_connections = IntCounterVec::new(
            Opts::new(
                "rejected_connections_total",
                "Connections closed at once because the listener was at max_connections",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let config_version = IntGauge::new(
            "config_version",
            "The version number of the configuration in effect",
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "config_reloads_total",
                "Configuration reloads by result (applied, rejected)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let findings = IntCounterVec::new(
            Opts::new(
                "findings_total",
                "Pipeline findings (limits, attack detection, behaviour) by rule and class",
            ),
            &["rule", "class"],
        )
        .expect("valid metric");
        let request_score = HistogramVec::new(
            HistogramOpts::new(
                "request_score",
                "Anomaly score of each routed request after its pipeline ran, by route",
            )
            .buckets(SCORE_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let block_rules = IntGauge::new(
            "block_rules",
            "Block rules in effect (admin, hub indicators, self-healing)",
        )
        .expect("valid metric");
        let behavior_endpoints = IntGauge::new(
            "behavior_learned_endpoints",
            "Endpoints (route, method, path template) with a learned baseline",
        )
        .expect("valid metric");
        let behavior_clients = IntGauge::new(
            "behavior_tracked_clients",
            "Clients (identities or addresses) the behaviour models track",
        )
        .expect("valid metric");
        let hub_outbox = IntGauge::new(
            "hub_outbox_pending",
            "Reports waiting in the durable outbox for the hub to take them",
        )
        .expect("valid metric");
        let hub_reports = IntCounterVec::new(
            Opts::new(
                "hub_reports_total",
                "Reports to the hub by result (sent, rejected, dropped, missed)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let hub_indicators = IntCounterVec::new(
            Opts::new(
                "hub_indicators_total",
                "Shared indicators from the hub feed by result (applied, withdrawn, monitored, ignored, invalid)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_healthy.clone()),
            Box::new(upstream_ejections.clone()),
            Box::new(upstream_failures.clone()),
            Box::new(open_connections.clone()),
            Box::new(worker_connections.clone()),
            Box::new(rejected_connections.clone()),
            Box::new(config_version.clone()),
            Box::new(config_reloads.clone()),
            Box::new(findings.clone()),
            Box::new(request_score.clone()),
            Box::new(block_rules.clone()),
            Box::new(behavior_endpoints.clone()),
            Box::new(behavior_clients.clone()),
            Box::new(hub_outbox.clone()),
            Box::new(hub_reports.clone()),
            Box::new(hub_indicators.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let authn = AuthnMetrics::new();
        authn.register(&registry).expect("metric names are unique");
        let rate_limits = RateLimitMetrics::new();
        rate_limits
            .register(&registry)
            .expect("metric names are unique");
        let integrity = IntegrityMetrics::new();
        integrity
            .register(&registry)
            .expect("metric names are unique");
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_healthy,
            upstream_ejections,
            upstream_failures,
            open_connections,
            worker_connections,
            rejected_connections,
            config_version,
            config_reloads,
            findings,
            request_score,
            block_rules,
            behavior_endpoints,
            behavior_clients,
            hub_outbox,
            hub_reports,
            hub_indicators,
            authn,
            rate_limits,
            integrity,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const DECISIONS: [&str; 4] = ["allow", "log_only", "challenge", "block"];
const SLOTS: usize = (METHODS.len() + 1) * STATUS_CLASSES.len() * DECISIONS.len();

/// A route's metric handles, resolved once per label combination so the request path does
/// not hash label values.
pub struct RouteMetrics {
    route: String,
    duration: Histogram,
    score: Histogram,
    counters: Box<[OnceLock<IntCounter>]>,
}

impl RouteMetrics {
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        RouteMetrics {
            route: route.to_owned(),
            duration: metrics.request_duration.with_label_values(&[route]),
            score: metrics.request_score.with_label_values(&[route]),
            counters: (0..SLOTS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records the anomaly score a request reached.
    pub fn observe_score(&self, score: u32) {
        self.score.observe(f64::from(score));
    }

    pub fn observe(
        &self,
        metrics: &Metrics,
        method: &Method,
        status: u16,
        decision: &str,
        seconds: f64,
    ) {
        self.duration.observe(seconds);
        let method_slot = METHODS
            .iter()
            .position(|m| m == method)
            .unwrap_or(METHODS.len());
        let class_slot = usize::from((status / 100).clamp(1, 5) - 1);
        let decision_slot = DECISIONS.iter().position(|d| *d == decision).unwrap_or(0);
        let slot =
            (method_slot * STATUS_CLASSES.len() + class_slot) * DECISIONS.len() + decision_slot;
        self.counters[slot]
            .get_or_init(|| {
                let method = METHODS.get(method_slot).map_or("OTHER", |m| m.as_str());
                metrics.requests.with_label_values(&[
                    self.route.as_str(),
                    method,
                    STATUS_CLASSES[class_slot],
                    DECISIONS[decision_slot],
                ])
            })
            .inc();
    }
}
