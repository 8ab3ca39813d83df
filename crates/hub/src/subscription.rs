//! Subscription filters and the topic routing keys they bind to.
//!
//! Every published report carries the routing key `r.<class>.<severity>.<address kind>`
//! (address kind: `ip` for one address, `prefix` for a network, `none` without one). A
//! participant's queue is bound with one key per accepted combination, using `*` where the
//! filter accepts everything, so RabbitMQ does the filtering.

use apiguard_model::threat::{AttackClass, ThreatReport, ThreatSeverity};
use serde::{Deserialize, Serialize};

/// Which reports a participant receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Attack classes to receive; empty means all.
    #[serde(default)]
    pub classes: Vec<AttackClass>,
    /// The lowest severity received.
    #[serde(default = "lowest")]
    pub min_severity: ThreatSeverity,
    /// Kinds of address indicator to receive (`ip`, `prefix`, `none`); empty means all.
    #[serde(default)]
    pub address_kinds: Vec<AddressKind>,
}

fn lowest() -> ThreatSeverity {
    ThreatSeverity::Low
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            classes: Vec::new(),
            min_severity: ThreatSeverity::Low,
            address_kinds: Vec::new(),
        }
    }
}

/// The kind of address indicator a report has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// One address.
    Ip,
    /// A network prefix.
    Prefix,
    /// No address indicator.
    None,
}

impl AddressKind {
    fn of(report: &ThreatReport) -> Self {
        match &report.indicators.ip {
            Some(prefix) if prefix.is_host() => AddressKind::Ip,
            Some(_) => AddressKind::Prefix,
            None => AddressKind::None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            AddressKind::Ip => "ip",
            AddressKind::Prefix => "prefix",
            AddressKind::None => "none",
        }
    }
}

impl std::str::FromStr for AddressKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ip" => Ok(AddressKind::Ip),
            "prefix" => Ok(AddressKind::Prefix),
            "none" => Ok(AddressKind::None),
            _ => Err(format!(
                "unknown address kind `{}`: ip, prefix or none",
                s.chars().take(64).collect::<String>()
            )),
        }
    }
}

/// The routing key of a report.
pub fn routing_key(report: &ThreatReport) -> String {
    format!(
        "r.{}.{}.{}",
        report.category.class.as_str(),
        report.severity.as_str(),
        AddressKind::of(report).as_str()
    )
}

impl Subscription {
    /// Checks the filter's size (it becomes broker bindings).
    pub fn validate(&self) -> Result<(), String> {
        if self.classes.len() > AttackClass::ALL.len() || self.address_kinds.len() > 3 {
            return Err("a subscription lists each class and address kind at most once".into());
        }
        Ok(())
    }

    /// The binding keys that deliver exactly the reports this filter accepts.
    pub fn binding_keys(&self) -> Vec<String> {
        let mut classes: Vec<&str> = self.classes.iter().map(|c| c.as_str()).collect();
        classes.sort_unstable();
        classes.dedup();
        if classes.is_empty() {
            classes.push("*");
        }
        let severities: Vec<&str> = if self.min_severity == ThreatSeverity::Low {
            vec!["*"]
        } else {
            ThreatSeverity::ALL
                .iter()
                .filter(|s| **s >= self.min_severity)
                .map(|s| s.as_str())
                .collect()
        };
        let mut kinds: Vec<&str> = self.address_kinds.iter().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        if kinds.is_empty() || kinds.len() == 3 {
            kinds = vec!["*"];
        }
        let mut keys = Vec::new();
        for class in &classes {
            for severity in &severities {
                for kind in &kinds {
                    keys.push(format!("r.{class}.{severity}.{kind}"));
                }
            }
        }
        keys
    }

    /// Whether the filter accepts an item published with `routing_key` (what the broker's
    /// bindings do; the in-process bus and the GraphQL feed filter with this). A key of
    /// another form matches nothing.
    pub fn matches_key(&self, routing_key: &str) -> bool {
        let mut parts = routing_key.split('.');
        let (Some("r"), Some(class), Some(severity), Some(kind), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return false;
        };
        let (Ok(class), Ok(severity)) = (
            class.parse::<AttackClass>(),
            severity.parse::<ThreatSeverity>(),
        ) else {
            return false;
        };
        let kind = match kind {
            "ip" => AddressKind::Ip,
            "prefix" => AddressKind::Prefix,
            "none" => AddressKind::None,
            _ => return false,
        };
        (self.classes.is_empty() || self.classes.contains(&class))
            && severity >= self.min_severity
            && (self.address_kinds.is_empty() || self.address_kinds.contains(&kind))
    }

    /// Whether the filter accepts `report`.
    pub fn matches(&self, report: &ThreatReport) -> bool {
        (self.classes.is_empty() || self.classes.contains(&report.category.class))
            && report.severity >= self.min_severity
            && (self.address_kinds.is_empty()
                || self.address_kinds.contains(&AddressKind::of(report)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_keys_cover_the_filter() {
        assert_eq!(Subscription::default().binding_keys(), vec!["r.*.*.*"]);
        let sub = Subscription {
            classes: vec![AttackClass::Sqli, AttackClass::Xss],
            min_severity: ThreatSeverity::High,
            address_kinds: vec![AddressKind::Ip],
        };
        assert_eq!(
            sub.binding_keys(),
            vec![
                "r.sqli.high.ip",
                "r.sqli.critical.ip",
                "r.xss.high.ip",
                "r.xss.critical.ip"
            ]
        );
        assert!(sub.matches_key("r.sqli.critical.ip"));
        assert!(!sub.matches_key("r.sqli.medium.ip"));
        assert!(!sub.matches_key("r.sqli.high.prefix"));
        assert!(!sub.matches_key("r.nosqli.high.ip"));
        assert!(!sub.matches_key("r.sqli.high.ip.extra"));
        assert!(!sub.matches_key("garbage"));
        assert!(Subscription::default().matches_key("r.other.low.none"));
    }
}
