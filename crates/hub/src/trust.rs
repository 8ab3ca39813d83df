//! The trust model, pure: participants' trust scores, the weight an organisation carries,
//! the promotion rule, and the allowlist of benign infrastructure. The store keeps the
//! evidence (`hub_trust`) and applies these rules (see `feed.rs`); docs/hub.md, "Trust
//! model", explains them for operators.
//!
//! - A participant's trust is a beta-reputation score in (0, 1):
//!   `t = (positive + 2·initial) / (positive + negative + 2)`, where `positive` counts
//!   corroborations (an indicator it reported was promoted together with at least one other
//!   organisation) and `negative` adds up weighted contradictions (a report never
//!   corroborated, an allowlisted indicator, an indicator withdrawn as a false positive). A
//!   new participant (no evidence) has `initial`; the prior weighs as much as two pieces of
//!   evidence, so a few events move the score and many settle it.
//! - An organisation's weight for one indicator is `min(1, t / initial)` of its most trusted
//!   participant that reported it: a new or good participant counts fully, a distrusted one
//!   partly, and no organisation ever counts more than one (trust above `initial` is a
//!   reserve against contradictions, not a bigger vote).
//! - An indicator is promoted when the weights of the organisations reporting it within
//!   the window add up to at least `k`: at least `k` distinct organisations, all in good
//!   standing, or more when some are distrusted.

use std::collections::HashMap;
use std::time::Duration;

use apiguard_model::threat::IpPrefix;

/// Slack for floating-point sums of weights (three weights of exactly 1 make 3).
const EPSILON: f64 = 1e-9;

/// The trust section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustSettings {
    /// Organisations' weight needed for a promotion.
    pub k: u32,
    /// How far back reports count.
    pub window: Duration,
    /// A new participant's trust, and the trust at which a participant weighs fully.
    pub initial: f64,
    /// Evidence weight of a report never corroborated.
    pub uncorroborated_penalty: f64,
    /// Evidence weight of an allowlisted report or a false positive.
    pub contradiction_penalty: f64,
    /// Benign infrastructure: never published.
    pub allowlist: Vec<IpPrefix>,
    /// How often expiries, settlements and republishing run.
    pub sweep_interval: Duration,
}

impl Default for TrustSettings {
    fn default() -> Self {
        crate::config::TrustConfig::default()
            .settings()
            .expect("the default trust settings are valid")
    }
}

impl TrustSettings {
    /// The trust score of a participant with this evidence.
    pub fn score(&self, evidence: Evidence) -> f64 {
        let positive = evidence.positive.max(0.0);
        let negative = evidence.negative.max(0.0);
        ((positive + 2.0 * self.initial) / (positive + negative + 2.0)).clamp(0.0, 1.0)
    }

    /// The weight of a participant with trust `score`: at most 1.
    pub fn weight(&self, score: f64) -> f64 {
        (score / self.initial).clamp(0.0, 1.0)
    }

    /// Whether these organisations' weights promote an indicator.
    pub fn promotes(&self, tally: &Tally) -> bool {
        tally.weight + EPSILON >= f64::from(self.k)
    }

    /// The allowlisted prefix `indicator` overlaps, if any.
    pub fn allowlisted(&self, indicator: &IpPrefix) -> Option<IpPrefix> {
        self.allowlist
            .iter()
            .find(|allowed| allowed.overlaps(indicator))
            .copied()
    }
}

/// What the store holds about one participant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    /// Corroborations.
    pub positive: f64,
    /// Weighted contradictions.
    pub negative: f64,
}

/// One participant that reported an indicator within the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Reporter {
    pub participant_id: String,
    /// The organisation, normalised by [`organisation_key`].
    pub organisation: String,
    pub evidence: Evidence,
}

/// The organisations behind an indicator and what they weigh together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Distinct organisations.
    pub organisations: u32,
    /// The sum of the organisations' weights.
    pub weight: f64,
    /// The mean trust score of the organisations (each its most trusted participant's).
    pub mean_trust: f64,
}

impl TrustSettings {
    /// Counts each organisation once, with its most trusted reporting participant.
    pub fn tally(&self, reporters: &[Reporter]) -> Tally {
        let mut best: HashMap<&str, f64> = HashMap::new();
        for reporter in reporters {
            let score = self.score(reporter.evidence);
            let entry = best.entry(reporter.organisation.as_str()).or_insert(score);
            if score > *entry {
                *entry = score;
            }
        }
        let organisations = u32::try_from(best.len()).unwrap_or(u32::MAX);
        let weight = best.values().map(|score| self.weight(*score)).sum();
        let mean_trust = if best.is_empty() {
            0.0
        } else {
            best.values().sum::<f64>() / best.len() as f64
        };
        Tally {
            organisations,
            weight,
            mean_trust,
        }
    }
}

/// The form under which organisation names are compared: trimmed, lowercase, inner
/// whitespace collapsed (`Alpha  Bank` and `alpha bank` are one organisation).
pub fn organisation_key(organisation: &str) -> String {
    organisation
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The built-in allowlist (`trust.default_allowlist`), documented in docs/hub.md:
/// - public DNS resolvers (Google, Cloudflare, Quad9, OpenDNS): they do not send API
///   traffic, so a report naming one is a reporter's mistake (a parsed DNS log, a test);
/// - Cloudflare's published proxy ranges (<https://www.cloudflare.com/ips/>): traffic
///   proxied by Cloudflare arrives from them, so a gateway behind Cloudflare that does not
///   restore the real client address would report them for every attack, and sharing them
///   would block every Cloudflare user of every participant.
pub const DEFAULT_ALLOWLIST: &[&str] = &[
    // Public resolvers.
    "8.8.8.8/32",
    "8.8.4.4/32",
    "2001:4860:4860::8888/128",
    "2001:4860:4860::8844/128",
    "1.1.1.1/32",
    "1.0.0.1/32",
    "2606:4700:4700::1111/128",
    "2606:4700:4700::1001/128",
    "9.9.9.9/32",
    "149.112.112.112/32",
    "2620:fe::fe/128",
    "2620:fe::9/128",
    "208.67.222.222/32",
    "208.67.220.220/32",
    // Cloudflare's proxy ranges.
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// [`DEFAULT_ALLOWLIST`], parsed.
pub fn default_allowlist() -> Vec<IpPrefix> {
    DEFAULT_ALLOWLIST
        .iter()
        .map(|text| text.parse().expect("the built-in allowlist parses"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter(id: &str, organisation: &str, positive: f64, negative: f64) -> Reporter {
        Reporter {
            participant_id: id.into(),
            organisation: organisation_key(organisation),
            evidence: Evidence { positive, negative },
        }
    }

    #[test]
    fn scores_start_at_initial_and_stay_between_0_and_1() {
        let t = TrustSettings::default();
        assert_eq!(t.score(Evidence::default()), 0.5);
        assert!(
            t.score(Evidence {
                positive: 10.0,
                negative: 0.0
            }) > 0.9
        );
        assert!(
            t.score(Evidence {
                positive: 0.0,
                negative: 10.0
            }) < 0.1
        );
        for (p, n) in [(0.0, 0.0), (1e12, 0.0), (0.0, 1e12), (-5.0, -5.0)] {
            let s = t.score(Evidence {
                positive: p,
                negative: n,
            });
            assert!((0.0..=1.0).contains(&s), "{p} {n}: {s}");
        }
        assert_eq!(t.weight(0.9), 1.0, "trust above initial is no bigger vote");
        assert_eq!(t.weight(0.25), 0.5);
    }

    #[test]
    fn organisations_count_once_and_distrusted_ones_count_less() {
        let t = TrustSettings::default();
        let three = [
            reporter("a", "Alpha", 0.0, 0.0),
            reporter("b", "Beta", 0.0, 0.0),
            reporter("c", "Gamma", 0.0, 0.0),
        ];
        assert!(t.promotes(&t.tally(&three)));
        // Two keys of one organisation are one vote.
        let sybil = [
            reporter("a", "Alpha", 0.0, 0.0),
            reporter("a2", " alpha  ", 0.0, 0.0),
            reporter("b", "Beta", 0.0, 0.0),
        ];
        let tally = t.tally(&sybil);
        assert_eq!(tally.organisations, 2);
        assert!(!t.promotes(&tally));
        // Three organisations, one of them distrusted: not enough.
        let tainted = [
            reporter("a", "Alpha", 0.0, 0.0),
            reporter("b", "Beta", 0.0, 0.0),
            reporter("m", "Mallory", 0.0, 6.0),
        ];
        assert!(!t.promotes(&t.tally(&tainted)));
        // An organisation counts with its most trusted participant.
        let mixed = [
            reporter("a", "Alpha", 0.0, 0.0),
            reporter("b", "Beta", 0.0, 0.0),
            reporter("m", "Mallory", 0.0, 6.0),
            reporter("m2", "Mallory", 3.0, 0.0),
        ];
        assert!(t.promotes(&t.tally(&mixed)));
    }

    #[test]
    fn the_allowlist_catches_overlapping_prefixes() {
        let t = TrustSettings::default();
        assert!(t.allowlisted(&"8.8.8.8".parse().unwrap()).is_some());
        assert!(t.allowlisted(&"8.8.0.0/16".parse().unwrap()).is_some());
        assert!(t.allowlisted(&"104.18.3.4".parse().unwrap()).is_some());
        assert!(
            t.allowlisted(&"2606:4700:10::/48".parse().unwrap())
                .is_some()
        );
        assert!(t.allowlisted(&"203.0.113.7".parse().unwrap()).is_none());
        assert!(t.allowlisted(&"127.0.0.1".parse().unwrap()).is_none());
    }
}
