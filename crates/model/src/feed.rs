//! What a participant's feed carries: canonical threat reports (a promoted indicator, see
//! docs/hub.md, "Trust model") and withdrawals of earlier ones. A withdrawal is told apart by
//! its `kind` field (`"withdrawal"`); a report has no `kind`, so feeds written before
//! withdrawals existed read the same. Its JSON Schema is committed as
//! `schemas/withdrawal.schema.json` (a test keeps the two equal).

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::threat::{
    Indicators, MAX_REPORT_BYTES, ReportError, THREAT_SCHEMA_VERSION, ThreatReport,
};

/// The `kind` of a withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalKind {
    /// The only value.
    Withdrawal,
}

/// Why an indicator was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalReason {
    /// Its `valid_until` passed and no fresh reports keep it promoted.
    Expired,
    /// An operator of the hub withdrew it as a false positive.
    FalsePositive,
    /// It lies on the hub's allowlist of benign infrastructure.
    Allowlisted,
}

impl WithdrawalReason {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalReason::Expired => "expired",
            WithdrawalReason::FalsePositive => "false_positive",
            WithdrawalReason::Allowlisted => "allowlisted",
        }
    }
}

impl fmt::Display for WithdrawalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Consumers must stop acting on the report `withdraws`: remove the block rule it
/// installed, now, whatever that report's `valid_until` said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "apiguard indicator withdrawal",
    description = "An item of an apiguard hub feed that withdraws an earlier threat report (schema version 1)."
)]
pub struct Withdrawal {
    /// Always `withdrawal`: what tells this item from a threat report in a feed.
    pub kind: WithdrawalKind,
    /// Version of this schema (the threat report's). Readers refuse a version they do not
    /// know.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// The withdrawal's own id, a UUIDv7. Redeliveries carry the same id.
    pub id: Uuid,
    /// The id of the threat report withdrawn.
    pub withdraws: Uuid,
    /// The withdrawn report's indicators, for consumers that index their rules by indicator.
    pub indicators: Indicators,
    /// Why.
    pub reason: WithdrawalReason,
    /// When the hub withdrew it (RFC 3339, UTC).
    pub withdrawn_at: DateTime<Utc>,
}

impl Withdrawal {
    /// Checks what the JSON Schema states.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.schema_version != THREAT_SCHEMA_VERSION {
            return Err(ReportError(format!(
                "schema version {} is not supported (this reader knows {THREAT_SCHEMA_VERSION})",
                self.schema_version
            )));
        }
        if self.id.get_version_num() != 7 || self.withdraws.get_version_num() != 7 {
            return Err(ReportError("a withdrawal's ids are UUIDv7".into()));
        }
        if self.indicators.is_empty() {
            return Err(ReportError(
                "a withdrawal names the indicators withdrawn".into(),
            ));
        }
        Ok(())
    }

    /// The withdrawal as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a withdrawal always serialises")
    }
}

/// One item of a participant's feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A promoted indicator: act on it until its `valid_until`.
    Report(Box<ThreatReport>),
    /// Stop acting on an earlier report.
    Withdrawal(Withdrawal),
}

#[derive(Deserialize)]
struct KindOnly {
    #[serde(default)]
    kind: Option<String>,
}

impl FeedItem {
    /// Parses and validates a feed item from an untrusted source: at most
    /// [`MAX_REPORT_BYTES`]; a withdrawal when its `kind` says so, else a threat report.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError(format!(
                "{} bytes; the limit is {MAX_REPORT_BYTES}",
                bytes.len()
            )));
        }
        let kind: KindOnly =
            serde_json::from_slice(bytes).map_err(|e| ReportError(e.to_string()))?;
        match kind.kind.as_deref() {
            None => Ok(FeedItem::Report(Box::new(ThreatReport::from_json(bytes)?))),
            Some("withdrawal") => {
                let withdrawal: Withdrawal =
                    serde_json::from_slice(bytes).map_err(|e| ReportError(e.to_string()))?;
                withdrawal.validate()?;
                Ok(FeedItem::Withdrawal(withdrawal))
            }
            Some(other) => Err(ReportError(format!(
                "unknown feed item kind `{}`",
                crate::threat::truncate_chars(other, 40)
            ))),
        }
    }

    /// The item's id (a report's, or a withdrawal's own).
    pub fn id(&self) -> Uuid {
        match self {
            FeedItem::Report(report) => report.id,
            FeedItem::Withdrawal(withdrawal) => withdrawal.id,
        }
    }

    /// `report` or `withdrawal`.
    pub fn kind(&self) -> &'static str {
        match self {
            FeedItem::Report(_) => "report",
            FeedItem::Withdrawal(_) => "withdrawal",
        }
    }
}

/// The key under which the hub counts reports of "the same indicator": the address or
/// prefix when there is one, else the TLS fingerprint, else the payload hash, else the user
/// agent. A report with only a route has none (a route names the victim's API, not the
/// attacker) and is never promoted.
pub fn indicator_key(indicators: &Indicators) -> Option<String> {
    if let Some(ip) = &indicators.ip {
        return Some(ip.to_string());
    }
    if let Some(tls) = &indicators.tls_fingerprint {
        return Some(format!("{}:{}", tls.kind.as_str(), tls.value));
    }
    if let Some(hash) = &indicators.payload_sha256 {
        return Some(format!("sha256:{hash}"));
    }
    indicators.user_agent.as_ref().map(|ua| format!("ua:{ua}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threat::{
        ActionTaken, AttackClass, Category, PSEUDONYM_PREFIX, ThreatSeverity, Trust,
    };

    fn report() -> ThreatReport {
        let now = Utc::now();
        ThreatReport {
            schema_version: THREAT_SCHEMA_VERSION,
            id: Uuid::now_v7(),
            first_seen: now,
            last_seen: now,
            count: 1,
            category: Category::of(AttackClass::Sqli),
            severity: ThreatSeverity::High,
            confidence: 90,
            indicators: Indicators {
                ip: Some("203.0.113.7".parse().unwrap()),
                ..Indicators::default()
            },
            action: ActionTaken::Blocked,
            valid_until: now + chrono::Duration::hours(1),
            reporter: format!("{PSEUDONYM_PREFIX}{}", "ab".repeat(16)),
            trust: Trust {
                score: 50,
                corroborations: 3,
            },
        }
    }

    #[test]
    fn reports_and_withdrawals_are_told_apart_by_kind() {
        let report = report();
        let item = FeedItem::from_json(&report.to_json()).unwrap();
        assert_eq!(item, FeedItem::Report(Box::new(report.clone())));
        assert_eq!(item.kind(), "report");

        let withdrawal = Withdrawal {
            kind: WithdrawalKind::Withdrawal,
            schema_version: THREAT_SCHEMA_VERSION,
            id: Uuid::now_v7(),
            withdraws: report.id,
            indicators: report.indicators.clone(),
            reason: WithdrawalReason::Expired,
            withdrawn_at: Utc::now(),
        };
        let json = withdrawal.to_json();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["kind"], "withdrawal");
        assert_eq!(value["reason"], "expired");
        assert_eq!(value["indicators"]["ip"], "203.0.113.7");
        let item = FeedItem::from_json(&json).unwrap();
        assert_eq!(item.id(), withdrawal.id);
        assert_eq!(item, FeedItem::Withdrawal(withdrawal.clone()));

        // A report reader refuses a withdrawal (unknown to it, it has no report fields).
        assert!(ThreatReport::from_json(&json).is_err());

        let mut bad = value.clone();
        bad["kind"] = "promotion".into();
        let err = FeedItem::from_json(bad.to_string().as_bytes()).unwrap_err();
        assert!(err.0.contains("unknown feed item kind"), "{err}");
        let mut bad = value;
        bad["indicators"] = serde_json::json!({});
        assert!(FeedItem::from_json(bad.to_string().as_bytes()).is_err());
        assert!(FeedItem::from_json(&vec![b' '; MAX_REPORT_BYTES + 1]).is_err());
    }

    #[test]
    fn the_indicator_key_prefers_the_address() {
        let mut indicators = Indicators {
            ip: Some("198.51.100.0/24".parse().unwrap()),
            payload_sha256: Some("ab".repeat(32)),
            route: Some("GET /x".into()),
            ..Indicators::default()
        };
        assert_eq!(indicator_key(&indicators).unwrap(), "198.51.100.0/24");
        indicators.ip = None;
        assert_eq!(
            indicator_key(&indicators).unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        indicators.payload_sha256 = None;
        assert_eq!(indicator_key(&indicators), None, "a route alone is no key");
    }
}
