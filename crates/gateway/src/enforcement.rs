//! The enforcement state: block rules on client addresses, prefixes, authenticated
//! identities and client fingerprints, each with an expiry, added by operators (admin API),
//! by the hub subscriber (shared indicators) and by self-healing, and self-healing's
//! throttles. It outlives configuration reloads, and the request path reads it without a
//! lock: writers publish a new table (rules change rarely; requests are many). Every lookup is
//! one hash probe (prefixes aside, which are few).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use apiguard_model::event::now_ms;
use apiguard_model::{Finding, Outcome, RequestContext, RequestView, Severity, Stage};
use arc_swap::ArcSwap;
use serde::{Serialize, Serializer};

/// What a block rule covers: one address, a prefix (CIDR), an authenticated identity (the
/// subject authentication proved), or a client fingerprint
/// ([`apiguard_behavior::bot::client_fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlockTarget {
    Address(IpAddr),
    Prefix { network: IpAddr, len: u8 },
    Identity(Arc<str>),
    Fingerprint(u64),
}

const IDENTITY: &str = "identity:";
const FINGERPRINT: &str = "fingerprint:";
/// Longest identity a rule names (token subjects and key names are far shorter).
const MAX_IDENTITY_BYTES: usize = 256;

impl BlockTarget {
    /// The prefix as an IPv6 network (IPv4 as IPv4-mapped) and its length; `None` for
    /// identities and fingerprints.
    fn as_v6_prefix(&self) -> Option<(u128, u8)> {
        match *self {
            BlockTarget::Address(ip) => Some((v6_bits(ip), 128)),
            BlockTarget::Prefix { network, len } => Some(match network {
                IpAddr::V4(_) => (v6_bits(network), 96 + len),
                IpAddr::V6(_) => (v6_bits(network), len),
            }),
            BlockTarget::Identity(_) | BlockTarget::Fingerprint(_) => None,
        }
    }
}

/// An address as 128 bits, IPv4 as IPv4-mapped IPv6 (so one table holds both families, and
/// a client that reaches a dual-stack socket as `::ffff:a.b.c.d` is the same as `a.b.c.d`).
fn v6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl FromStr for BlockTarget {
    type Err = String;

    /// `203.0.113.7`, `2001:db8::1`, `10.0.0.0/8`, `2001:db8::/48`, `identity:<subject>` or
    /// `fingerprint:<16 hex digits>`. Host bits of a prefix must be zero, so a typo cannot
    /// silently block a different network.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(subject) = text.strip_prefix(IDENTITY) {
            if subject.is_empty() || subject.len() > MAX_IDENTITY_BYTES {
                return Err(format!(
                    "`{IDENTITY}` takes a subject of 1 to {MAX_IDENTITY_BYTES} bytes"
                ));
            }
            if subject.chars().any(char::is_control) {
                return Err("an identity must not contain control characters".into());
            }
            return Ok(BlockTarget::Identity(subject.into()));
        }
        if let Some(hex) = text.strip_prefix(FINGERPRINT) {
            if hex.len() == 16
                && let Ok(fingerprint) = u64::from_str_radix(hex, 16)
            {
                return Ok(BlockTarget::Fingerprint(fingerprint));
            }
            return Err(format!("`{text}`: a fingerprint is 16 hex digits"));
        }
        let text = text.trim();
        let Some((network, len)) = text.split_once('/') else {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| format!("`{text}` is not an IP address or prefix"))?;
            return Ok(BlockTarget::Address(ip.to_canonical()));
        };
        let network: IpAddr = network
            .parse()
            .map_err(|_| format!("`{text}`: `{network}` is not an IP address"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?;
        let target = BlockTarget::Prefix { network, len };
        let (bits, full_len) = target.as_v6_prefix().unwrap_or_default();
        if bits & !mask(full_len) != 0 {
            return Err(format!("`{text}` has host bits set after /{len}"));
        }
        if len == max {
            return Ok(BlockTarget::Address(network));
        }
        Ok(target)
    }
}

impl fmt::Display for BlockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockTarget::Address(ip) => write!(f, "{ip}"),
            BlockTarget::Prefix { network, len } => write!(f, "{network}/{len}"),
            BlockTarget::Identity(subject) => write!(f, "{IDENTITY}{subject}"),
            BlockTarget::Fingerprint(fp) => write!(f, "{FINGERPRINT}{fp:016x}"),
        }
    }
}

impl Serialize for BlockTarget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One block rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockRule {
    pub target: BlockTarget,
    /// Milliseconds since the Unix epoch after which the rule no longer applies.
    pub until_ms: u64,
    /// Who added it: `admin`, `hub`, `heal`, ...
    pub source: String,
    /// Why, for people reading logs.
    pub reason: String,
    /// The shared indicator or incident it comes from, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicator: Option<String>,
    pub created_ms: u64,
    /// A canaried rule refuses only this percentage of the matching requests (the others
    /// go on, marked with a zero-score `enforcement.canary` finding), until self-healing
    /// promotes or reverts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_percent: Option<u8>,
}

#[derive(Default)]
struct Table {
    addresses: HashMap<u128, Arc<BlockRule>>,
    /// Prefix rules by length, longest first (so the most specific rule is the one
    /// reported), each length a map by network: a lookup costs one probe per distinct
    /// length (a handful), whatever the number of rules.
    prefixes: Vec<(u8, HashMap<u128, Arc<BlockRule>>)>,
    identities: HashMap<Arc<str>, Arc<BlockRule>>,
    fingerprints: HashMap<u64, Arc<BlockRule>>,
}

impl Table {
    fn build(rules: &[Arc<BlockRule>]) -> Table {
        let mut table = Table::default();
        for rule in rules {
            match &rule.target {
                BlockTarget::Address(ip) => {
                    table.addresses.insert(v6_bits(*ip), rule.clone());
                }
                BlockTarget::Prefix { .. } => {
                    if let Some((bits, len)) = rule.target.as_v6_prefix() {
                        match table.prefixes.iter_mut().find(|(l, _)| *l == len) {
                            Some((_, networks)) => {
                                networks.insert(bits, rule.clone());
                            }
                            None => table
                                .prefixes
                                .push((len, HashMap::from([(bits, rule.clone())]))),
                        }
                    }
                }
                BlockTarget::Identity(subject) => {
                    table.identities.insert(subject.clone(), rule.clone());
                }
                BlockTarget::Fingerprint(fp) => {
                    table.fingerprints.insert(*fp, rule.clone());
                }
            }
        }
        table.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0));
        table
    }

    fn find(&self, ip: IpAddr) -> Option<&Arc<BlockRule>> {
        if self.addresses.is_empty() && self.prefixes.is_empty() {
            return None;
        }
        let bits = v6_bits(ip);
        self.addresses.get(&bits).or_else(|| {
            self.prefixes
                .iter()
                .find_map(|(len, networks)| networks.get(&(bits & mask(*len))))
        })
    }
}

/// Rules by target, and the lookup table published from them.
#[derive(Default)]
struct RuleSet {
    table: ArcSwap<Table>,
    /// The rules, by target: the source of truth the table is built from.
    rules: Mutex<HashMap<BlockTarget, Arc<BlockRule>>>,
}

/// The rule if it has not expired (the clock is read only for a client that matched).
fn live(rule: Option<&Arc<BlockRule>>) -> Option<Arc<BlockRule>> {
    let rule = rule?;
    (rule.until_ms > now_ms()).then(|| rule.clone())
}

impl RuleSet {
    fn find(&self, ip: IpAddr) -> Option<Arc<BlockRule>> {
        live(self.table.load().find(ip))
    }

    fn find_identity(&self, subject: &str) -> Option<Arc<BlockRule>> {
        let table = self.table.load();
        if table.identities.is_empty() {
            return None;
        }
        live(table.identities.get(subject))
    }

    fn find_fingerprint(&self, fingerprint: u64) -> Option<Arc<BlockRule>> {
        live(self.table.load().fingerprints.get(&fingerprint))
    }

    fn has_fingerprints(&self) -> bool {
        !self.table.load().fingerprints.is_empty()
    }

    fn insert(&self, rule: BlockRule) -> Arc<BlockRule> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let rule = Arc::new(rule);
        let kept = match rules.get(&rule.target) {
            Some(existing) if existing.until_ms >= rule.until_ms => existing.clone(),
            _ => {
                rules.insert(rule.target.clone(), rule.clone());
                rule
            }
        };
        self.publish(&rules);
        kept
    }

    fn promote(&self, target: &BlockTarget) -> bool {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rule) = rules.get(target).filter(|r| r.canary_percent.is_some()) else {
            return false;
        };
        let mut full = rule.as_ref().clone();
        full.canary_percent = None;
        rules.insert(target.clone(), Arc::new(full));
        self.publish(&rules);
        true
    }

    fn rule(&self, target: &BlockTarget) -> Option<Arc<BlockRule>> {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.get(target).cloned()
    }

    fn remove(&self, target: &BlockTarget) -> bool {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let removed = rules.remove(target).is_some();
        if removed {
            self.publish(&rules);
        }
        removed
    }

    fn remove_if(&self, target: &BlockTarget, matches: impl FnOnce(&BlockRule) -> bool) -> bool {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let removed =
            rules.get(target).is_some_and(|rule| matches(rule)) && rules.remove(target).is_some();
        if removed {
            self.publish(&rules);
        }
        removed
    }

    fn purge_expired(&self, now: u64) -> Vec<Arc<BlockRule>> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<Arc<BlockRule>> = rules
            .values()
            .filter(|r| r.until_ms <= now)
            .cloned()
            .collect();
        if !expired.is_empty() {
            rules.retain(|_, r| r.until_ms > now);
            self.publish(&rules);
        }
        expired
    }

    fn list(&self) -> Vec<Arc<BlockRule>> {
        let now = now_ms();
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Arc<BlockRule>> = rules
            .values()
            .filter(|r| r.until_ms > now)
            .cloned()
            .collect();
        list.sort_by_cached_key(|r| (r.until_ms, r.target.to_string()));
        list
    }

    fn publish(&self, rules: &HashMap<BlockTarget, Arc<BlockRule>>) {
        let all: Vec<Arc<BlockRule>> = rules.values().cloned().collect();
        self.table.store(Arc::new(Table::build(&all)));
    }
}

/// The block table, and a watch list of addresses that are listed without being blocked
/// (shared indicators in monitor mode), which authorisation policies can read as the
/// address's reputation. Cheap to read from any thread; writes are serialised.
#[derive(Default)]
pub struct Enforcement {
    blocks: RuleSet,
    watch: RuleSet,
    /// Self-healing's rate limits on clients and routes.
    pub throttles: crate::throttle::Throttles,
}

impl Enforcement {
    pub fn new() -> Self {
        Self::default()
    }

    /// The rule that blocks `ip` now, if any.
    pub fn blocking(&self, ip: IpAddr) -> Option<Arc<BlockRule>> {
        self.blocks.find(ip)
    }

    /// The rule that blocks the authenticated `subject` now, if any.
    pub fn blocking_identity(&self, subject: &str) -> Option<Arc<BlockRule>> {
        self.blocks.find_identity(subject)
    }

    /// The rule that blocks the client `fingerprint` now, if any.
    pub fn blocking_fingerprint(&self, fingerprint: u64) -> Option<Arc<BlockRule>> {
        self.blocks.find_fingerprint(fingerprint)
    }

    /// Whether some fingerprint rule exists (the request path computes a fingerprint only
    /// then).
    pub fn has_fingerprint_rules(&self) -> bool {
        self.blocks.has_fingerprints()
    }

    /// Adds a rule, replacing one on the same target unless that one lasts longer (two
    /// sources blocking the same address keep the longer block).
    pub fn insert(&self, rule: BlockRule) -> Arc<BlockRule> {
        self.blocks.insert(rule)
    }

    /// Makes the canaried rule on `target` apply to every matching request; whether there was
    /// one.
    pub fn promote(&self, target: &BlockTarget) -> bool {
        self.blocks.promote(target)
    }

    /// The block rule on exactly `target`, expired or not.
    pub fn rule(&self, target: &BlockTarget) -> Option<Arc<BlockRule>> {
        self.blocks.rule(target)
    }

    /// Removes the rule on exactly `target`; whether there was one.
    pub fn remove(&self, target: &BlockTarget) -> bool {
        self.blocks.remove(target)
    }

    /// Removes the rule on exactly `target` if `matches` accepts it (a hub withdrawal lifts
    /// only the rule that the withdrawn indicator installed); whether one was removed.
    pub fn remove_if(
        &self,
        target: &BlockTarget,
        matches: impl FnOnce(&BlockRule) -> bool,
    ) -> bool {
        self.blocks.remove_if(target, matches)
    }

    /// Drops expired rules; returns them.
    pub fn purge_expired(&self, now: u64) -> Vec<Arc<BlockRule>> {
        self.blocks.purge_expired(now)
    }

    /// Every rule in effect, soonest expiry first.
    pub fn rules(&self) -> Vec<Arc<BlockRule>> {
        self.blocks.list()
    }

    /// The watch rule that lists `ip` now, if any (it does not block).
    pub fn watching(&self, ip: IpAddr) -> Option<Arc<BlockRule>> {
        self.watch.find(ip)
    }

    /// Lists an address or prefix without blocking it, until the rule expires (the longer
    /// of two rules on one target is kept).
    pub fn watch(&self, rule: BlockRule) -> Arc<BlockRule> {
        self.watch.insert(rule)
    }

    /// Drops expired watch rules; returns them.
    pub fn purge_expired_watch(&self, now: u64) -> Vec<Arc<BlockRule>> {
        self.watch.purge_expired(now)
    }

    /// Every watch rule in effect, soonest expiry first.
    pub fn watched(&self) -> Vec<Arc<BlockRule>> {
        self.watch.list()
    }
}

/// Stage 1 of the pipeline: refuses clients under a block rule before anything else runs.
pub struct EnforcementStage {
    pub enforcement: Arc<Enforcement>,
}

impl Stage for EnforcementStage {
    fn name(&self) -> &'static str {
        "enforcement"
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        let client = request.client.peer.ip();
        let rule = self.enforcement.blocking(client).or_else(|| {
            self.enforcement
                .has_fingerprint_rules()
                .then(|| {
                    let fingerprint = apiguard_behavior::bot::client_fingerprint(
                        request.version,
                        request.headers,
                    );
                    self.enforcement.blocking_fingerprint(fingerprint)
                })
                .flatten()
        });
        let Some(rule) = rule else {
            return throttle(&self.enforcement, client, request.route, ctx);
        };
        refuse(&rule)
    }

    fn enforced_in_detect_only(&self) -> bool {
        // A block rule or throttle is a decision already taken, not a detection to tune.
        true
    }
}

/// Refuses requests whose authenticated identity is under a block rule (403) or over a
/// self-healing throttle (429). It runs right after the stages that prove an identity
/// (authentication, signatures), since the first stage cannot know it yet.
pub struct IdentityEnforcementStage {
    pub enforcement: Arc<Enforcement>,
}

impl Stage for IdentityEnforcementStage {
    fn name(&self) -> &'static str {
        "enforcement_identity"
    }

    fn inspect(&self, _request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        let Some(identity) = &ctx.identity else {
            return Outcome::Continue;
        };
        if let Some(rule) = self.enforcement.blocking_identity(&identity.subject) {
            return refuse(&rule);
        }
        match self
            .enforcement
            .throttles
            .check_identity(&identity.subject, now_ms)
        {
            Some((throttle, wait_ms)) => too_many(&throttle, wait_ms, ctx),
            None => Outcome::Continue,
        }
    }

    fn enforced_in_detect_only(&self) -> bool {
        true
    }
}

/// A block rule's answer: 403, or for a canary 403 on a share of the requests and a
/// zero-score mark on the others.
fn refuse(rule: &BlockRule) -> Outcome {
    let indicator = rule
        .indicator
        .as_deref()
        .map(|i| format!(", indicator {i}"))
        .unwrap_or_default();
    let evidence = format!(
        "{} blocked by {} ({}{indicator})",
        rule.target, rule.source, rule.reason
    );
    if let Some(percent) = rule.canary_percent {
        // A canary refuses a share of the matching requests and marks the others, so
        // self-healing can see whom the rule would hit.
        let refused = fastrand::u8(0..100) < percent;
        let finding = Finding {
            rule_id: "enforcement.canary".into(),
            class: "enforcement".into(),
            severity: if refused {
                Severity::Critical
            } else {
                Severity::Notice
            },
            score: if refused {
                Severity::Critical.score()
            } else {
                0
            },
            target: "client".into(),
            evidence: format!("canary ({percent}%): {evidence}"),
        };
        if !refused {
            return Outcome::Score(vec![finding]);
        }
        return Outcome::Block {
            status: 403,
            finding,
        };
    }
    Outcome::Block {
        status: 403,
        finding: Finding {
            rule_id: "enforcement.block".into(),
            class: "enforcement".into(),
            severity: Severity::Critical,
            score: Severity::Critical.score(),
            target: "client".into(),
            evidence,
        },
    }
}

/// Refuses a request over a self-healing throttle with 429 and `Retry-After`.
fn throttle(
    enforcement: &Enforcement,
    client: IpAddr,
    route: &str,
    ctx: &mut RequestContext,
) -> Outcome {
    match enforcement.throttles.check(client, route, now_ms) {
        Some((throttle, wait_ms)) => too_many(&throttle, wait_ms, ctx),
        None => Outcome::Continue,
    }
}

/// A throttle's answer: 429 with `Retry-After`.
fn too_many(
    throttle: &crate::throttle::Throttle,
    wait_ms: u64,
    ctx: &mut RequestContext,
) -> Outcome {
    let seconds = wait_ms.div_ceil(1000).max(1);
    if let Ok(value) = http::HeaderValue::from_str(&seconds.to_string()) {
        ctx.response_headers
            .insert(http::header::RETRY_AFTER, value);
    }
    Outcome::Block {
        status: 429,
        finding: Finding {
            rule_id: "enforcement.throttle".into(),
            class: "enforcement".into(),
            severity: Severity::Warning,
            score: Severity::Warning.score(),
            target: "client".into(),
            evidence: format!(
                "{} throttled to {:.1}/s ({})",
                throttle.scope, throttle.rate_per_s, throttle.reason
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(target: &str, ttl_ms: u64) -> BlockRule {
        BlockRule {
            target: target.parse().unwrap(),
            until_ms: now_ms() + ttl_ms,
            source: "test".into(),
            reason: "test".into(),
            indicator: None,
            created_ms: now_ms(),
            canary_percent: None,
        }
    }

    #[test]
    fn targets_parse_strictly() {
        assert_eq!(
            "10.0.0.0/8".parse::<BlockTarget>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "::ffff:192.0.2.1".parse::<BlockTarget>().unwrap(),
            BlockTarget::Address("192.0.2.1".parse().unwrap())
        );
        assert!("10.0.0.1/8".parse::<BlockTarget>().is_err(), "host bits");
        assert!("10.0.0.0/33".parse::<BlockTarget>().is_err());
        assert!("example.com".parse::<BlockTarget>().is_err());
        assert_eq!(
            "2001:db8::1/128".parse::<BlockTarget>().unwrap(),
            BlockTarget::Address("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn addresses_and_prefixes_of_both_families_match() {
        let table = Enforcement::new();
        assert!(table.blocking("192.0.2.1".parse().unwrap()).is_none());
        table.insert(rule("192.0.2.1", 60_000));
        table.insert(rule("198.51.100.0/24", 60_000));
        table.insert(rule("2001:db8:1::/48", 60_000));
        for blocked in [
            "192.0.2.1",
            "::ffff:192.0.2.1",
            "198.51.100.77",
            "2001:db8:1:ffff::9",
        ] {
            assert!(
                table.blocking(blocked.parse().unwrap()).is_some(),
                "{blocked}"
            );
        }
        for free in ["192.0.2.2", "198.51.101.1", "2001:db8:2::1", "::1"] {
            assert!(table.blocking(free.parse().unwrap()).is_none(), "{free}");
        }
        assert!(table.remove(&"198.51.100.0/24".parse().unwrap()));
        assert!(table.blocking("198.51.100.77".parse().unwrap()).is_none());
    }

    #[test]
    fn identities_and_fingerprints_are_blocked_on_their_own() {
        let table = Enforcement::new();
        assert!(!table.has_fingerprint_rules());
        table.insert(rule("identity:mallory", 60_000));
        table.insert(rule("fingerprint:00000000abad1dea", 60_000));
        assert!(table.blocking_identity("mallory").is_some());
        assert!(table.blocking_identity("bob").is_none());
        assert!(table.has_fingerprint_rules());
        assert!(table.blocking_fingerprint(0xabad1dea).is_some());
        assert!(table.blocking_fingerprint(0xabad1deb).is_none());
        assert!(
            table.blocking("192.0.2.1".parse().unwrap()).is_none(),
            "neither rule reaches an address"
        );
        let listed: Vec<String> = table.rules().iter().map(|r| r.target.to_string()).collect();
        assert!(
            listed.contains(&"identity:mallory".to_string()),
            "{listed:?}"
        );
        assert!(table.remove(&"identity:mallory".parse().unwrap()));
        assert!(table.blocking_identity("mallory").is_none());
        assert!("identity:".parse::<BlockTarget>().is_err());
        assert!("fingerprint:abad1dea".parse::<BlockTarget>().is_err());
        assert!("identity:a\u{7}b".parse::<BlockTarget>().is_err());
    }

    #[test]
    fn rules_expire_and_the_longer_block_wins() {
        let table = Enforcement::new();
        table.insert(rule("192.0.2.1", 0));
        assert!(table.blocking("192.0.2.1".parse().unwrap()).is_none());
        assert_eq!(table.purge_expired(now_ms()).len(), 1);
        table.insert(rule("192.0.2.9", 60_000));
        let shorter = table.insert(rule("192.0.2.9", 1_000));
        assert!(
            shorter.until_ms > now_ms() + 30_000,
            "the longer rule is kept"
        );
        assert_eq!(table.rules().len(), 1);
    }

    #[test]
    fn watched_addresses_are_listed_but_not_blocked() {
        let table = Enforcement::new();
        table.watch(rule("192.0.2.0/24", 60_000));
        let ip = "192.0.2.7".parse().unwrap();
        assert!(table.blocking(ip).is_none());
        assert_eq!(
            table.watching(ip).unwrap().target.to_string(),
            "192.0.2.0/24"
        );
        assert!(table.rules().is_empty());
        assert_eq!(table.watched().len(), 1);
        table.watch(rule("198.51.100.1", 0));
        assert_eq!(table.purge_expired_watch(now_ms()).len(), 1);
    }
}
