//! The gateway's side of the hub (see docs/hub.md): a reporter that turns this gateway's
//! blocking decisions into reports and sends them through a durable on-disk outbox, and a
//! subscriber that reads this participant's feed and applies shared indicators to the
//! enforcement state, under the local policy of the `hub:` section.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use apiguard_model::event::now_ms;
use apiguard_model::feed::{FeedItem, Withdrawal};
use apiguard_model::threat::{AttackClass, ThreatReport};
use apiguard_model::{Action, EventKind, SecurityEvent};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::config::{HubConfig, SubscribeConfig, SubscribeMode};
use crate::enforcement::{BlockRule, BlockTarget, Enforcement};
use crate::load::Problem;
use crate::metrics::Metrics;

/// The `hub:` section, resolved (the key file read, the URL checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    pub api_key: String,
    pub report: bool,
    pub outbox: PathBuf,
    pub outbox_max: usize,
    pub subscribe: SubscribeConfig,
}

impl HubSettings {
    pub fn resolve(config: &HubConfig, problems: &mut Vec<Problem>) -> Option<HubSettings> {
        let url = config.url.value.trim_end_matches('/');
        let valid = url
            .strip_prefix("http://")
            .and_then(|rest| rest.parse::<http::uri::Authority>().ok())
            .is_some_and(|a| a.port_u16().is_some());
        if !valid {
            problems.push(Problem::at(
                &config.url,
                format!(
                    "hub.url `{}` must be http://host:port (TLS to the hub goes through a local proxy for now)",
                    config.url.value
                ),
            ));
        }
        let api_key = match (&config.api_key, &config.api_key_file) {
            (Some(key), None) => Some(key.trim().to_owned()),
            (None, Some(file)) => match std::fs::read_to_string(&file.value) {
                Ok(text) => Some(text.trim().to_owned()),
                Err(e) => {
                    problems.push(Problem::at(
                        file,
                        format!("cannot read hub.api_key_file `{}`: {e}", file.value),
                    ));
                    None
                }
            },
            _ => {
                problems.push(Problem::at(
                    &config.url,
                    "hub: give exactly one of `api_key_file` or `api_key`",
                ));
                None
            }
        };
        let api_key = api_key.filter(|k| {
            let ok = !k.is_empty() && http::HeaderValue::from_str(k).is_ok();
            if !ok {
                problems.push(Problem::at(
                    &config.url,
                    "hub: the API key is empty or not a valid header value",
                ));
            }
            ok
        });
        if config.outbox_max == 0 {
            problems.push(Problem::at(
                &config.url,
                "hub.outbox_max must be at least 1",
            ));
        }
        if config.subscribe.min_confidence > 100 || config.subscribe.min_trust > 100 {
            problems.push(Problem::at(
                &config.url,
                "hub.subscribe: min_confidence and min_trust are 0 to 100",
            ));
        }
        Some(HubSettings {
            base: valid.then(|| url.to_owned())?,
            api_key: api_key?,
            report: config.report,
            outbox: PathBuf::from(&config.outbox),
            outbox_max: config.outbox_max,
            subscribe: config.subscribe.clone(),
        })
    }
}

/// The running reporter and subscriber; stopped when dropped.
pub struct HubLink {
    pub settings: HubSettings,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HubLink {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

type HubClient = Client<HttpConnector, Full<Bytes>>;

/// Starts the reporter (when `report`) and the subscriber (unless its mode is `off`).
pub fn start(
    settings: HubSettings,
    events: &broadcast::Sender<Arc<SecurityEvent>>,
    enforcement: Arc<Enforcement>,
    metrics: Arc<Metrics>,
) -> io::Result<HubLink> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    let client: HubClient = Client::builder(TokioExecutor::new()).build(connector);
    let mut tasks = Vec::new();
    if settings.report {
        let outbox = Arc::new(Outbox::open(&settings.outbox, settings.outbox_max)?);
        metrics.hub_outbox.set(outbox.len() as i64);
        let wake = Arc::new(Notify::new());
        tasks.push(tokio::spawn(collect_reports(
            events.subscribe(),
            outbox.clone(),
            wake.clone(),
            metrics.clone(),
        )));
        tasks.push(tokio::spawn(send_reports(
            client.clone(),
            settings.clone(),
            outbox,
            wake,
            metrics.clone(),
        )));
    }
    if settings.subscribe.mode != SubscribeMode::Off {
        tasks.push(tokio::spawn(follow_feed(
            client,
            settings.clone(),
            enforcement,
            metrics,
        )));
    }
    tracing::info!(hub = %settings.base, report = settings.report, subscribe = ?settings.subscribe.mode, "hub link started");
    Ok(HubLink { settings, tasks })
}

/// A directory of pending reports, one file each, named so that sorting gives sending order.
/// A report is written to a temporary name and renamed, so a crash never leaves half a
/// report; it is deleted only after the hub acknowledged it.
pub struct Outbox {
    dir: PathBuf,
    max: usize,
    count: AtomicUsize,
    seq: AtomicU64,
}

impl Outbox {
    pub fn open(dir: &Path, max: usize) -> io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all(dir.join("rejected"))?;
        let outbox = Outbox {
            dir: dir.to_owned(),
            max,
            count: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
        };
        outbox
            .count
            .store(outbox.pending()?.len(), Ordering::Relaxed);
        Ok(outbox)
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores one report; past the bound the oldest pending report is dropped (returned
    /// as `true`).
    pub fn put(&self, report: &[u8]) -> io::Result<bool> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{:016}-{:010}.json", now_ms(), seq);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, report)?;
        std::fs::rename(&tmp, self.dir.join(&name))?;
        let mut dropped = false;
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 > self.max
            && let Some(oldest) = self.pending()?.first()
        {
            std::fs::remove_file(oldest)?;
            self.count.fetch_sub(1, Ordering::Relaxed);
            dropped = true;
        }
        Ok(dropped)
    }

    /// Pending reports, oldest first.
    pub fn pending(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    fn done(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    fn reject(&self, path: &Path, reason: &str) -> io::Result<()> {
        let name = path.file_name().unwrap_or_default();
        let target = self.dir.join("rejected").join(name);
        std::fs::rename(path, &target)?;
        std::fs::write(target.with_extension("reason"), reason)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The raw report (the hub's REST shape) for one blocking decision, or `None` when the
/// decision is not worth sharing: not a block, a block by a shared rule (sharing it back
/// would echo the hub), a size limit, a rate limit, an authentication failure or a GraphQL or
/// gRPC protocol limit, a signature failure (not attacks by themselves).
pub fn report_for(event: &SecurityEvent) -> Option<serde_json::Value> {
    let EventKind::RequestInspected {
        action,
        findings,
        score,
        ..
    } = &event.kind
    else {
        return None;
    };
    if *action != Action::Block || findings.iter().any(|f| f.class == "enforcement") {
        return None;
    }
    // Size limits, rate limits, and refusals by local policy (authentication, authorisation,
    // the API specification, GraphQL and gRPC limits, signatures) are not attacks to share.
    let top = findings
        .iter()
        .filter(|f| {
            !matches!(
                &*f.class,
                "limits"
                    | "ratelimit"
                    | "authn"
                    | "authz"
                    | "openapi"
                    | "graphql_policy"
                    | "grpc_policy"
                    | "integrity"
            )
        })
        .max_by_key(|f| f.score)?;
    let severity = match score {
        0..=6 => "medium",
        7..=14 => "high",
        _ => "critical",
    };
    let mut report = serde_json::json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "attack": attack_class(&top.class).as_str(),
        "severity": severity,
        "confidence": (50 + score.saturating_mul(5)).min(95),
        "action": "blocked",
        "payload": top.evidence,
    });
    if let Some(ip) = event.client_ip {
        report["source_ip"] = ip.to_string().into();
    }
    if let Some(method) = &event.method {
        report["method"] = method.clone().into();
    }
    if let Some(path) = &event.path {
        report["path"] = path.clone().into();
    }
    Some(report)
}

/// The shared vocabulary's attack class for a detection class.
pub fn attack_class(class: &str) -> AttackClass {
    match class {
        "rce" | "php" | "java" | "node" => AttackClass::CommandInjection,
        "lfi" => AttackClass::PathTraversal,
        "rfi" => AttackClass::FileInclusion,
        "protocol" => AttackClass::ProtocolViolation,
        other => other.parse().unwrap_or(AttackClass::Other),
    }
}

async fn collect_reports(
    mut events: broadcast::Receiver<Arc<SecurityEvent>>,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                metrics
                    .hub_reports
                    .with_label_values(&["missed"])
                    .inc_by(missed);
                tracing::warn!(missed, "the hub reporter fell behind the event stream");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(report) = report_for(&event) else {
            continue;
        };
        match outbox.put(report.to_string().as_bytes()) {
            Ok(dropped) => {
                if dropped {
                    metrics.hub_reports.with_label_values(&["dropped"]).inc();
                    tracing::warn!("hub outbox full: the oldest pending report was dropped");
                }
                metrics.hub_outbox.set(outbox.len() as i64);
                wake.notify_one();
            }
            Err(error) => tracing::error!(%error, "cannot write to the hub outbox"),
        }
    }
}

async fn send_reports(
    client: HubClient,
    settings: HubSettings,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    let url = format!("{}/v1/reports", settings.base);
    let mut backoff = Backoff::default();
    loop {
        let pending = outbox.pending().unwrap_or_default();
        if pending.is_empty() {
            // A missed wake-up costs at most this long.
            let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
            continue;
        }
        for path in pending {
            let Ok(body) = std::fs::read(&path) else {
                continue;
            };
            let request = Request::builder()
                .method(Method::POST)
                .uri(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", settings.api_key),
                )
                .body(Full::new(Bytes::from(body)))
                .expect("a valid request");
            let answer = exchange(&client, request).await;
            match answer {
                Ok((status, _)) if status.is_success() => {
                    let _ = outbox.done(&path);
                    metrics.hub_reports.with_label_values(&["sent"]).inc();
                    backoff.reset();
                }
                // The hub will never take it: keep it aside, with the reason, and go on.
                Ok((status, body)) if matches!(status.as_u16(), 400 | 409 | 413 | 415 | 422) => {
                    let reason = format!("{status}: {}", String::from_utf8_lossy(&body));
                    tracing::error!(report = %path.display(), %reason, "the hub refused a report; kept in the outbox's rejected/ folder");
                    let _ = outbox.reject(&path, &reason);
                    metrics.hub_reports.with_label_values(&["rejected"]).inc();
                }
                other => {
                    let why = match other {
                        Ok((status, _)) => status.to_string(),
                        Err(e) => e,
                    };
                    tracing::warn!(reason = %why, pending = outbox.len(), "the hub did not take a report; retrying later");
                    tokio::time::sleep(backoff.next()).await;
                    break;
                }
            }
            metrics.hub_outbox.set(outbox.len() as i64);
        }
    }
}

async fn follow_feed(
    client: HubClient,
    settings: HubSettings,
    enforcement: Arc<Enforcement>,
    metrics: Arc<Metrics>,
) {
    let url = format!("{}/v1/feed?max=100&wait_ms=10000", settings.base);
    let mut backoff = Backoff::default();
    // A restart of the broker may deliver a report again: apply each once.
    let mut seen: HashSet<uuid::Uuid> = HashSet::new();
    loop {
        let request = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", settings.api_key),
            )
            .body(Full::default())
            .expect("a valid request");
        let reports = match exchange(&client, request).await {
            Ok((StatusCode::OK, body)) => {
                backoff.reset();
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("reports").and_then(|r| r.as_array()).cloned())
                    .unwrap_or_default()
            }
            other => {
                let why = match other {
                    Ok((status, _)) => status.to_string(),
                    Err(e) => e,
                };
                tracing::warn!(reason = %why, "cannot read the hub feed; retrying");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        // In feed order: a withdrawal after the report it withdraws.
        for value in reports {
            let item = match serde_json::to_vec(&value)
                .map_err(|e| e.to_string())
                .and_then(|b| FeedItem::from_json(&b).map_err(|e| e.to_string()))
            {
                Ok(item) => item,
                Err(error) => {
                    metrics.hub_indicators.with_label_values(&["invalid"]).inc();
                    tracing::warn!(%error, "the hub feed carried an invalid item");
                    continue;
                }
            };
            if !seen.insert(item.id()) {
                continue;
            }
            if seen.len() > 100_000 {
                seen.clear();
                seen.insert(item.id());
            }
            let result = match &item {
                FeedItem::Report(report) => apply(report, &settings.subscribe, &enforcement),
                FeedItem::Withdrawal(withdrawal) => withdraw(withdrawal, &enforcement),
            };
            metrics.hub_indicators.with_label_values(&[result]).inc();
        }
    }
}

/// Applies one shared report under the local policy; returns what was done.
pub fn apply(
    report: &ThreatReport,
    policy: &SubscribeConfig,
    enforcement: &Enforcement,
) -> &'static str {
    let class = report.category.class.as_str();
    let Some(prefix) = report.indicators.ip else {
        return "ignored";
    };
    if report.confidence < policy.min_confidence
        || report.trust.score < policy.min_trust
        || (!policy.categories.is_empty() && !policy.categories.iter().any(|c| c == class))
    {
        return "ignored";
    }
    let until_ms = u64::try_from(report.valid_until.timestamp_millis()).unwrap_or(0);
    let now = now_ms();
    if until_ms <= now {
        return "ignored";
    }
    let target = target_of(prefix);
    let indicator = report.id.to_string();
    if policy.mode == SubscribeMode::Monitor {
        // Listed, not blocked: authorisation policies read it as the address's reputation.
        enforcement.watch(BlockRule {
            target: target.clone(),
            until_ms,
            source: "hub".into(),
            reason: format!("shared {class} indicator from {}", report.reporter),
            indicator: Some(indicator.clone()),
            created_ms: now,
            canary_percent: None,
        });
        tracing::info!(target: "apiguard::security", %target, indicator = %indicator, class, "shared indicator (monitor mode: listed, not enforced)");
        return "monitored";
    }
    enforcement.insert(BlockRule {
        target: target.clone(),
        until_ms,
        source: "hub".into(),
        reason: format!("shared {class} indicator from {}", report.reporter),
        indicator: Some(indicator.clone()),
        created_ms: now,
        canary_percent: None,
    });
    tracing::info!(target: "apiguard::security", %target, indicator = %indicator, class, until_ms, "shared indicator applied: blocking");
    "applied"
}

/// Applies a withdrawal: removes the block rule the withdrawn report installed (and no
/// other: a later report of the same address, or a local rule, stays). Returns what was done.
pub fn withdraw(withdrawal: &Withdrawal, enforcement: &Enforcement) -> &'static str {
    let Some(prefix) = withdrawal.indicators.ip else {
        return "ignored";
    };
    let target = target_of(prefix);
    let indicator = withdrawal.withdraws.to_string();
    let removed = enforcement.remove_if(&target, |rule| {
        rule.source == "hub" && rule.indicator.as_deref() == Some(indicator.as_str())
    });
    if removed {
        tracing::info!(target: "apiguard::security", %target, indicator = %indicator, reason = %withdrawal.reason, "shared indicator withdrawn: block lifted");
        "withdrawn"
    } else {
        "ignored"
    }
}

fn target_of(prefix: apiguard_model::threat::IpPrefix) -> BlockTarget {
    if prefix.is_host() {
        BlockTarget::Address(prefix.addr())
    } else {
        BlockTarget::Prefix {
            network: prefix.addr(),
            len: prefix.len(),
        }
    }
}

/// One request to the hub with a time limit; the status and a bounded body.
async fn exchange(
    client: &HubClient,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let call = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 8 * 1024 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .map_err(|_| "the hub did not answer within 30 s".to_owned())?
}

/// Exponential backoff from 250 ms to 30 s.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        let ms = 250u64.saturating_mul(1 << self.attempts.min(7));
        Duration::from_millis(ms.min(30_000))
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_detection_class_has_a_shared_class() {
        for (class, shared) in [
            ("sqli", "sqli"),
            ("nosqli", "nosqli"),
            ("xss", "xss"),
            ("rce", "command_injection"),
            ("php", "command_injection"),
            ("java", "command_injection"),
            ("lfi", "path_traversal"),
            ("rfi", "file_inclusion"),
            ("ssrf", "ssrf"),
            ("xxe", "xxe"),
            ("jndi", "jndi"),
            ("crlf", "crlf"),
            ("ssti", "ssti"),
            ("scanner", "scanner"),
            ("protocol", "protocol_violation"),
            ("ldapi", "other"),
            ("orm", "other"),
        ] {
            assert_eq!(attack_class(class).as_str(), shared, "{class}");
        }
    }

    /// A GraphQL or gRPC limit refuses without an attack: nothing to share. A detection
    /// finding next to it still is.
    #[test]
    fn protocol_limits_are_not_reported_as_attacks() {
        let finding = |rule: &str, class: &str| apiguard_model::Finding {
            rule_id: rule.to_owned().into(),
            class: class.to_owned().into(),
            severity: apiguard_model::Severity::Critical,
            score: 5,
            target: "graphql".into(),
            evidence: "the query's depth of 12 is over the limit of 10".into(),
        };
        let event = |findings| SecurityEvent {
            at_ms: 0,
            request_id: None,
            client_ip: None,
            identity: None,
            fingerprint: None,
            route: None,
            method: None,
            path: None,
            kind: EventKind::RequestInspected {
                action: Action::Block,
                score: 5,
                threshold: 5,
                findings,
            },
        };
        for class in ["graphql_policy", "grpc_policy"] {
            assert!(report_for(&event(vec![finding("x.limit", class)])).is_none());
        }
        let report = report_for(&event(vec![
            finding("graphql.depth", "graphql_policy"),
            finding("sqli.tokenizer", "sqli"),
        ]))
        .expect("the attack is shared");
        assert_eq!(report["attack"], "sqli");
    }

    #[test]
    fn a_withdrawal_lifts_exactly_the_rule_its_report_installed() {
        use apiguard_model::feed::{WithdrawalKind, WithdrawalReason};
        use apiguard_model::threat::{
            ActionTaken, Category, Indicators, THREAT_SCHEMA_VERSION, ThreatSeverity, Trust,
        };
        let now = chrono::Utc::now();
        let report = |ip: &str| ThreatReport {
            schema_version: THREAT_SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            first_seen: now,
            last_seen: now,
            count: 1,
            category: Category::of(AttackClass::Sqli),
            severity: ThreatSeverity::High,
            confidence: 90,
            indicators: Indicators {
                ip: Some(ip.parse().unwrap()),
                ..Indicators::default()
            },
            action: ActionTaken::Blocked,
            valid_until: now + chrono::Duration::hours(1),
            reporter: format!("anon-{}", "ab".repeat(16)),
            trust: Trust {
                score: 50,
                corroborations: 3,
            },
        };
        let withdrawal = |report: &ThreatReport| Withdrawal {
            kind: WithdrawalKind::Withdrawal,
            schema_version: THREAT_SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            withdraws: report.id,
            indicators: report.indicators.clone(),
            reason: WithdrawalReason::FalsePositive,
            withdrawn_at: now,
        };
        let enforcement = Enforcement::new();
        let policy = SubscribeConfig::default();
        let ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
        let first = report("203.0.113.9");
        assert_eq!(apply(&first, &policy, &enforcement), "applied");
        assert!(enforcement.blocking(ip).is_some());
        assert_eq!(withdraw(&withdrawal(&first), &enforcement), "withdrawn");
        assert!(enforcement.blocking(ip).is_none(), "lifted before its TTL");

        // A withdrawal of an older report leaves the rule of a newer one alone.
        let mut renewed = report("203.0.113.9");
        renewed.valid_until = now + chrono::Duration::hours(2);
        assert_eq!(apply(&renewed, &policy, &enforcement), "applied");
        assert_eq!(withdraw(&withdrawal(&first), &enforcement), "ignored");
        assert!(enforcement.blocking(ip).is_some());

        // And a prefix rule goes with its own withdrawal.
        let network = report("198.51.100.0/24");
        apply(&network, &policy, &enforcement);
        assert!(
            enforcement
                .blocking("198.51.100.20".parse().unwrap())
                .is_some()
        );
        assert_eq!(withdraw(&withdrawal(&network), &enforcement), "withdrawn");
        assert!(
            enforcement
                .blocking("198.51.100.20".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn the_outbox_survives_reopening_and_drops_the_oldest_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 3).unwrap();
        for i in 0..3 {
            assert!(!outbox.put(format!("{{\"n\":{i}}}").as_bytes()).unwrap());
        }
        assert!(outbox.put(b"{\"n\":3}").unwrap(), "the fourth drops one");
        let reopened = Outbox::open(dir.path(), 3).unwrap();
        assert_eq!(reopened.len(), 3);
        let first = std::fs::read_to_string(&reopened.pending().unwrap()[0]).unwrap();
        assert_eq!(first, "{\"n\":1}", "the oldest went");
        let path = reopened.pending().unwrap()[0].clone();
        reopened.reject(&path, "400: bad").unwrap();
        assert_eq!(reopened.len(), 2);
        assert!(dir.path().join("rejected").read_dir().unwrap().count() == 2);
    }
}
