//! Rate limiting, stage 3 of the pipeline: GCRA (governor) per client address, API key,
//! identity or route, with bursts. A refusal is a 429 with `Retry-After` and the `RateLimit`
//! and `RateLimit-Policy` fields of draft-ietf-httpapi-ratelimit-headers; allowed requests get
//! `RateLimit` too.
//!
//! Limits keyed by an identity need authentication first: the gateway runs them in a second
//! rate-limit stage right after authentication, and the others before it (so floods are shed
//! before any signature is checked).
//!
//! Cluster mode ([`RateLimits`]): each replica admits on its local GCRA state, and a background
//! task shares the admissions through Redis every `sync_interval` and raises the local states
//! to the cluster-wide ones. Nothing on the request path waits for Redis; see docs/policy.md
//! for the trade-off and for what happens when Redis is unreachable.

mod cluster;
mod limiter;
mod metrics;

use std::sync::Arc;

use apiguard_model::{Finding, Outcome, RequestContext, RequestView, Severity, Stage};
use http::{HeaderName, HeaderValue, header};

pub use cluster::{ClusterSettings, RateLimits};
pub use limiter::{Checked, KeyKind, LimitKey, LimitSpec, Limiter, PolicyClock};
pub use metrics::RateLimitMetrics;

pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Checks a route's limits in order; the first that refuses answers 429.
pub struct RateLimitStage {
    limits: Vec<Arc<Limiter>>,
    /// `RateLimit-Policy` for these limits, made once.
    policy: HeaderValue,
    /// Add `RateLimit` and `RateLimit-Policy` to allowed requests' answers too.
    headers_on_success: bool,
}

impl RateLimitStage {
    pub fn new(limits: Vec<Arc<Limiter>>, headers_on_success: bool) -> Self {
        let policy = limits
            .iter()
            .map(|l| l.spec.policy_item())
            .collect::<Vec<_>>()
            .join(", ");
        RateLimitStage {
            policy: HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
            limits,
            headers_on_success,
        }
    }

    pub fn limits(&self) -> &[Arc<Limiter>] {
        &self.limits
    }
}

fn whole_seconds(duration: std::time::Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Appends `"<name>";r=<remaining>;t=<reset>` to a `RateLimit` field value. Written by hand:
/// it runs for every allowed request, and `write!` costs several times as much.
fn push_item(items: &mut String, name: &str, remaining: u64, reset: u64) {
    if !items.is_empty() {
        items.push_str(", ");
    }
    items.push('"');
    items.push_str(name);
    items.push_str("\";r=");
    push_decimal(items, remaining);
    items.push_str(";t=");
    push_decimal(items, reset);
}

fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

impl Stage for RateLimitStage {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    fn enforced_in_detect_only(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        let mut items = String::with_capacity(if self.headers_on_success { 64 } else { 0 });
        for limit in &self.limits {
            let Some(key) = limit.key_for(request, ctx) else {
                continue;
            };
            match limit.check(&key) {
                Checked::Allowed { remaining, reset } => {
                    if self.headers_on_success {
                        push_item(
                            &mut items,
                            &limit.spec.name,
                            u64::from(remaining),
                            whole_seconds(reset),
                        );
                    }
                }
                Checked::Refused { retry_after } => {
                    limit.refusals.inc();
                    let seconds = whole_seconds(retry_after).max(1);
                    let item = format!("\"{}\";r=0;t={seconds}", limit.spec.name);
                    let headers = &mut ctx.response_headers;
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                    headers.append(RATELIMIT_POLICY.clone(), self.policy.clone());
                    if let Ok(value) = HeaderValue::from_str(&item) {
                        headers.append(RATELIMIT.clone(), value);
                    }
                    return Outcome::Block {
                        status: 429,
                        finding: Finding {
                            rule_id: limit.spec.key.rule_id().into(),
                            class: "ratelimit".into(),
                            severity: Severity::Notice,
                            score: Severity::Notice.score(),
                            target: format!("limit:{}", limit.spec.name),
                            evidence: format!(
                                "{} requests per {:?} (burst {}) exceeded; retry after {seconds} s",
                                limit.spec.rate, limit.spec.per, limit.spec.burst
                            ),
                        },
                    };
                }
            }
        }
        if !items.is_empty()
            && let Ok(value) = HeaderValue::from_str(&items)
        {
            ctx.response_headers
                .append(RATELIMIT_POLICY.clone(), self.policy.clone());
            ctx.response_headers.append(RATELIMIT.clone(), value);
        }
        Outcome::Continue
    }
}

#[cfg(test)]
mod tests;
