//! The canonical threat report: the one JSON shape the hub publishes, stores and serves, whatever
//! protocol a report came in by. Versioned by [`THREAT_SCHEMA_VERSION`]; its JSON Schema is
//! committed as `schemas/threat-report.schema.json` (a test keeps the two equal).
//!
//! Everything here is pure: types, parsing with limits, and normalisation helpers for the
//! indicators (IP prefixes, route templates) that both the hub and a gateway subscriber use.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The version of the canonical report schema this code reads and writes.
pub const THREAT_SCHEMA_VERSION: u32 = 1;

/// The largest serialised report [`ThreatReport::from_json`] accepts.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;

/// The longest user agent kept in a report (longer ones are cut at a character boundary).
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// The longest route template kept in a report.
pub const MAX_ROUTE_CHARS: usize = 256;

/// The most path segments a route template keeps.
pub const MAX_ROUTE_SEGMENTS: usize = 32;

/// Prefix of every reporter pseudonym.
pub const PSEUDONYM_PREFIX: &str = "anon-";

/// One normalised, anonymised threat report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "apiguard threat report",
    description = "The canonical, anonymised threat report that the apiguard hub publishes, stores and serves (schema version 1)."
)]
pub struct ThreatReport {
    /// Version of this schema. Readers refuse a version they do not know.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// The report's id, a UUIDv7 (time-ordered). Redeliveries carry the same id: consumers
    /// de-duplicate by it.
    pub id: Uuid,
    /// When the reporter first saw the activity (RFC 3339, UTC).
    pub first_seen: DateTime<Utc>,
    /// When the reporter last saw the activity (RFC 3339, UTC); not before `first_seen`.
    pub last_seen: DateTime<Utc>,
    /// How many times the reporter saw it between `first_seen` and `last_seen`; at least 1.
    #[schemars(range(min = 1))]
    pub count: u64,
    /// What kind of attack this is.
    pub category: Category,
    /// How bad it is.
    pub severity: ThreatSeverity,
    /// How sure the reporter is that this is an attack, 0 to 100 (as in STIX 2.1).
    #[schemars(range(max = 100))]
    pub confidence: u8,
    /// What identifies the attacker.
    pub indicators: Indicators,
    /// What the reporter did about it.
    pub action: ActionTaken,
    /// Until when consumers should act on the indicators (RFC 3339, UTC). After it the
    /// report is withdrawn.
    pub valid_until: DateTime<Utc>,
    /// The reporter's pseudonym: a keyed hash of its participant id that changes every
    /// epoch. It never names the organisation.
    #[schemars(regex(pattern = r"^anon-[0-9a-f]{32}$"))]
    pub reporter: String,
    /// How much weight the report carries.
    pub trust: Trust,
}

/// Attack class and its OWASP API Security Top 10 (2023) risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Category {
    /// The attack class.
    pub class: AttackClass,
    /// The OWASP API Security Top 10 (2023) risk the class falls under; absent when none fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owasp: Option<OwaspApiRisk>,
}

impl Category {
    /// The category of `class`, with its OWASP mapping.
    pub fn of(class: AttackClass) -> Self {
        Self {
            class,
            owasp: class.owasp(),
        }
    }
}

/// The attack classes the hub knows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AttackClass {
    /// SQL injection.
    Sqli,
    /// NoSQL (document store) injection.
    Nosqli,
    /// Cross-site scripting.
    Xss,
    /// Operating system command injection.
    CommandInjection,
    /// Path traversal and local file inclusion.
    PathTraversal,
    /// Remote file inclusion.
    FileInclusion,
    /// Server-side template injection.
    Ssti,
    /// XML external entities.
    Xxe,
    /// JNDI / Log4Shell style lookups.
    Jndi,
    /// CRLF injection and response splitting.
    Crlf,
    /// Server-side request forgery.
    Ssrf,
    /// Enumeration of object ids (broken object level authorisation).
    ObjectEnumeration,
    /// Credential stuffing, password spraying, token brute force.
    CredentialStuffing,
    /// Writing properties the client should not set (mass assignment).
    MassAssignment,
    /// Request floods and expensive queries (rate and resource abuse).
    ResourceExhaustion,
    /// Calling functions above the caller's privilege.
    FunctionLevelAccess,
    /// Automated abuse of a business flow (scraping, scalping, sign-up bots).
    BusinessFlowAbuse,
    /// Vulnerability scanners and probing for misconfiguration.
    Scanner,
    /// Probing for undocumented, old or shadow endpoints.
    InventoryProbing,
    /// Malformed or non-conforming protocol use.
    ProtocolViolation,
    /// Anything else.
    Other,
}

impl AttackClass {
    /// Every class, in declaration order.
    pub const ALL: [AttackClass; 21] = [
        AttackClass::Sqli,
        AttackClass::Nosqli,
        AttackClass::Xss,
        AttackClass::CommandInjection,
        AttackClass::PathTraversal,
        AttackClass::FileInclusion,
        AttackClass::Ssti,
        AttackClass::Xxe,
        AttackClass::Jndi,
        AttackClass::Crlf,
        AttackClass::Ssrf,
        AttackClass::ObjectEnumeration,
        AttackClass::CredentialStuffing,
        AttackClass::MassAssignment,
        AttackClass::ResourceExhaustion,
        AttackClass::FunctionLevelAccess,
        AttackClass::BusinessFlowAbuse,
        AttackClass::Scanner,
        AttackClass::InventoryProbing,
        AttackClass::ProtocolViolation,
        AttackClass::Other,
    ];

    /// The snake_case name used in JSON and in routing keys.
    pub fn as_str(self) -> &'static str {
        match self {
            AttackClass::Sqli => "sqli",
            AttackClass::Nosqli => "nosqli",
            AttackClass::Xss => "xss",
            AttackClass::CommandInjection => "command_injection",
            AttackClass::PathTraversal => "path_traversal",
            AttackClass::FileInclusion => "file_inclusion",
            AttackClass::Ssti => "ssti",
            AttackClass::Xxe => "xxe",
            AttackClass::Jndi => "jndi",
            AttackClass::Crlf => "crlf",
            AttackClass::Ssrf => "ssrf",
            AttackClass::ObjectEnumeration => "object_enumeration",
            AttackClass::CredentialStuffing => "credential_stuffing",
            AttackClass::MassAssignment => "mass_assignment",
            AttackClass::ResourceExhaustion => "resource_exhaustion",
            AttackClass::FunctionLevelAccess => "function_level_access",
            AttackClass::BusinessFlowAbuse => "business_flow_abuse",
            AttackClass::Scanner => "scanner",
            AttackClass::InventoryProbing => "inventory_probing",
            AttackClass::ProtocolViolation => "protocol_violation",
            AttackClass::Other => "other",
        }
    }

    /// The OWASP API Security Top 10 (2023) risk of this class. The 2023 list has no
    /// injection entry: injection flaws are mapped to API8 (security misconfiguration:
    /// missing input handling), as most API security vendors do.
    pub fn owasp(self) -> Option<OwaspApiRisk> {
        use AttackClass::*;
        Some(match self {
            ObjectEnumeration => OwaspApiRisk::Api1,
            CredentialStuffing => OwaspApiRisk::Api2,
            MassAssignment => OwaspApiRisk::Api3,
            ResourceExhaustion => OwaspApiRisk::Api4,
            FunctionLevelAccess => OwaspApiRisk::Api5,
            BusinessFlowAbuse => OwaspApiRisk::Api6,
            Ssrf => OwaspApiRisk::Api7,
            Sqli | Nosqli | Xss | CommandInjection | PathTraversal | FileInclusion | Ssti | Xxe
            | Jndi | Crlf | Scanner | ProtocolViolation => OwaspApiRisk::Api8,
            InventoryProbing => OwaspApiRisk::Api9,
            Other => return None,
        })
    }
}

impl fmt::Display for AttackClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttackClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        AttackClass::ALL
            .into_iter()
            .find(|class| class.as_str() == wanted)
            .ok_or_else(|| format!("unknown attack class `{}`", truncate_for_error(s)))
    }
}

/// The OWASP API Security Top 10, 2023 edition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OwaspApiRisk {
    /// Broken Object Level Authorization.
    #[serde(rename = "API1:2023")]
    Api1,
    /// Broken Authentication.
    #[serde(rename = "API2:2023")]
    Api2,
    /// Broken Object Property Level Authorization.
    #[serde(rename = "API3:2023")]
    Api3,
    /// Unrestricted Resource Consumption.
    #[serde(rename = "API4:2023")]
    Api4,
    /// Broken Function Level Authorization.
    #[serde(rename = "API5:2023")]
    Api5,
    /// Unrestricted Access to Sensitive Business Flows.
    #[serde(rename = "API6:2023")]
    Api6,
    /// Server Side Request Forgery.
    #[serde(rename = "API7:2023")]
    Api7,
    /// Security Misconfiguration.
    #[serde(rename = "API8:2023")]
    Api8,
    /// Improper Inventory Management.
    #[serde(rename = "API9:2023")]
    Api9,
    /// Unsafe Consumption of APIs.
    #[serde(rename = "API10:2023")]
    Api10,
}

/// How bad a threat is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ThreatSeverity {
    Low,
    Medium,
    High,
    Critical,
}

impl ThreatSeverity {
    /// Every severity, lowest first.
    pub const ALL: [ThreatSeverity; 4] = [
        ThreatSeverity::Low,
        ThreatSeverity::Medium,
        ThreatSeverity::High,
        ThreatSeverity::Critical,
    ];

    /// The snake_case name used in JSON and in routing keys.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreatSeverity::Low => "low",
            ThreatSeverity::Medium => "medium",
            ThreatSeverity::High => "high",
            ThreatSeverity::Critical => "critical",
        }
    }
}

impl FromStr for ThreatSeverity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        ThreatSeverity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == wanted)
            .ok_or_else(|| format!("unknown severity `{}`", truncate_for_error(s)))
    }
}

/// What the reporter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionTaken {
    /// The requests were refused.
    Blocked,
    /// The client was challenged (CAPTCHA, step-up authentication).
    Challenged,
    /// The client was throttled.
    RateLimited,
    /// Nothing was enforced; the activity was only recorded.
    Monitored,
}

impl FromStr for ActionTaken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', ' '], "_")
            .as_str()
        {
            "blocked" | "block" | "deny" | "denied" => Ok(ActionTaken::Blocked),
            "challenged" | "challenge" => Ok(ActionTaken::Challenged),
            "rate_limited" | "throttled" | "throttle" => Ok(ActionTaken::RateLimited),
            "monitored" | "monitor" | "logged" | "log" | "allowed" => Ok(ActionTaken::Monitored),
            _ => Err(format!("unknown action `{}`", truncate_for_error(s))),
        }
    }
}

/// What identifies the attacker. At least one indicator is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Indicators {
    /// The attacker's address: one IPv4 address, or an IPv6 prefix (single IPv6 addresses
    /// are aggregated to their /64 by default, since one host owns at least that), or a
    /// prefix the reporter named. IPv4-mapped IPv6 addresses appear as IPv4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpPrefix>,
    /// The client's User-Agent, with e-mail addresses, host names and tokens redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub user_agent: Option<String>,
    /// SHA-256 (lowercase hex) of the malicious payload; the payload itself is never shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub payload_sha256: Option<String>,
    /// The templated route attacked, method first, such as `POST /users/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub route: Option<String>,
    /// The client's TLS fingerprint, when the reporter terminated TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<TlsFingerprint>,
}

impl Indicators {
    /// Whether no indicator is present.
    pub fn is_empty(&self) -> bool {
        self.ip.is_none()
            && self.user_agent.is_none()
            && self.payload_sha256.is_none()
            && self.route.is_none()
            && self.tls_fingerprint.is_none()
    }
}

/// A TLS client fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TlsFingerprint {
    /// The fingerprint method.
    pub kind: TlsFingerprintKind,
    /// The fingerprint: 32 hex digits for JA3, the `a_b_c` form for JA4.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]{1,64}$"))]
    pub value: String,
}

impl TlsFingerprint {
    /// Checks the value's form for its kind.
    pub fn new(kind: TlsFingerprintKind, value: &str) -> Result<Self, String> {
        let value = value.trim();
        let ok = match kind {
            TlsFingerprintKind::Ja3 => {
                value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
            }
            TlsFingerprintKind::Ja4 => {
                (1..=64).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }
        };
        if !ok {
            return Err(format!(
                "`{}` is not a {} fingerprint",
                truncate_for_error(value),
                kind.as_str()
            ));
        }
        Ok(Self {
            kind,
            value: if kind == TlsFingerprintKind::Ja3 {
                value.to_ascii_lowercase()
            } else {
                value.to_owned()
            },
        })
    }
}

/// A TLS fingerprint method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsFingerprintKind {
    Ja3,
    Ja4,
}

impl TlsFingerprintKind {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFingerprintKind::Ja3 => "ja3",
            TlsFingerprintKind::Ja4 => "ja4",
        }
    }
}

/// How much weight a report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Trust {
    /// The reporter's trust score when the report was published, 0 to 100.
    #[schemars(range(max = 100))]
    pub score: u8,
    /// How many distinct participants (this reporter included) reported the same
    /// indicator within the corroboration window.
    #[schemars(range(min = 1))]
    pub corroborations: u32,
}

/// An IP address or prefix, normalised: host bits cleared, IPv4-mapped IPv6 written as IPv4.
/// Serialised as the bare address when the prefix covers one host, else in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The prefix of `addr` with `len` bits, normalised. IPv4-mapped IPv6 addresses become
    /// IPv4 (a mapped prefix of 96 bits or more keeps its IPv4 part).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, String> {
        let (addr, len) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if len >= 96 => (IpAddr::V4(v4), len - 96),
                Some(_) => {
                    return Err(format!(
                        "an IPv4-mapped prefix must be at least /96, not /{len}"
                    ));
                }
                None => (IpAddr::V6(v6), len),
            },
            v4 => (v4, len),
        };
        match addr {
            IpAddr::V4(v4) => {
                if len > 32 {
                    return Err(format!("an IPv4 prefix is at most /32, not /{len}"));
                }
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len))
                };
                Ok(Self {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    len,
                })
            }
            IpAddr::V6(v6) => {
                if len > 128 {
                    return Err(format!("an IPv6 prefix is at most /128, not /{len}"));
                }
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len))
                };
                Ok(Self {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    len,
                })
            }
        }
    }

    /// A single host address, with IPv6 aggregated to `ipv6_prefix` bits (one IPv6 host
    /// usually controls a whole /64, so blocking its single address is useless).
    pub fn host(addr: IpAddr, ipv6_prefix: u8) -> Result<Self, String> {
        match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Self::new(addr, 128),
            IpAddr::V6(_) => Self::new(addr, ipv6_prefix),
            IpAddr::V4(_) => Self::new(addr, 32),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix covers no bits (0.0.0.0/0 or ::/0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this prefix covers exactly one address.
    pub fn is_host(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.len == 32,
            IpAddr::V6(_) => self.len == 128,
        }
    }

    /// Whether `addr` (IPv4-mapped IPv6 counted as IPv4) lies inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Self::new(addr, self.len).is_ok_and(|p| p.addr == self.addr)
            }
            _ => false,
        }
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &IpPrefix) -> bool {
        if self.len <= other.len {
            self.contains(other.addr)
        } else {
            other.contains(self.addr)
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    /// Parses `ADDR` or `ADDR/LEN`. A bare address is one host (no IPv6 aggregation: use
    /// [`IpPrefix::host`] for that).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > 64 {
            return Err("an IP address or prefix is at most 64 characters".to_owned());
        }
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (
                addr,
                Some(
                    len.parse::<u8>()
                        .map_err(|_| format!("`{s}` has no valid prefix length"))?,
                ),
            ),
            None => (s, None),
        };
        let addr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| format!("`{s}` is not an IP address or prefix"))?;
        let len = len.unwrap_or(match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        });
        Self::new(addr, len)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for IpPrefix {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpPrefix".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An IPv4 or IPv6 address, or a prefix in CIDR form with host bits cleared.",
            "type": "string",
            "maxLength": 64,
            "examples": ["203.0.113.7", "198.51.100.0/24", "2001:db8:1:2::/64"]
        })
    }
}

/// Why a serialised report was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportError(pub String);

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid threat report: {}", self.0)
    }
}

impl std::error::Error for ReportError {}

impl ThreatReport {
    /// Parses and validates a serialised report from an untrusted source: at most
    /// [`MAX_REPORT_BYTES`], of a known schema version, internally consistent.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError(format!(
                "{} bytes; the limit is {MAX_REPORT_BYTES}",
                bytes.len()
            )));
        }
        let report: ThreatReport =
            serde_json::from_slice(bytes).map_err(|e| ReportError(e.to_string()))?;
        report.validate()?;
        Ok(report)
    }

    /// Checks the rules the JSON Schema states and a few it cannot (ordering of times).
    pub fn validate(&self) -> Result<(), ReportError> {
        let fail = |message: &str| Err(ReportError(message.to_owned()));
        if self.schema_version != THREAT_SCHEMA_VERSION {
            return Err(ReportError(format!(
                "schema version {} is not supported (this reader knows {THREAT_SCHEMA_VERSION})",
                self.schema_version
            )));
        }
        if self.id.get_version_num() != 7 {
            return fail("the id is not a UUIDv7");
        }
        if self.count == 0 {
            return fail("count must be at least 1");
        }
        if self.last_seen < self.first_seen {
            return fail("last_seen is before first_seen");
        }
        if self.valid_until < self.last_seen {
            return fail("valid_until is before last_seen");
        }
        if self.confidence > 100 || self.trust.score > 100 {
            return fail("confidence and trust score are 0 to 100");
        }
        if self.trust.corroborations == 0 {
            return fail("corroborations must be at least 1");
        }
        if !is_pseudonym(&self.reporter) {
            return fail("the reporter is not a pseudonym");
        }
        if self.indicators.is_empty() {
            return fail("a report needs at least one indicator");
        }
        if let Some(ua) = &self.indicators.user_agent
            && ua.chars().count() > MAX_USER_AGENT_CHARS
        {
            return fail("the user agent is too long");
        }
        if let Some(hash) = &self.indicators.payload_sha256
            && !(hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return fail("payload_sha256 is not 64 lowercase hex digits");
        }
        if let Some(route) = &self.indicators.route
            && route.chars().count() > MAX_ROUTE_CHARS
        {
            return fail("the route is too long");
        }
        if let Some(tls) = &self.indicators.tls_fingerprint {
            TlsFingerprint::new(tls.kind, &tls.value).map_err(ReportError)?;
        }
        Ok(())
    }

    /// The report as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a threat report always serialises")
    }
}

/// Whether `s` has the form of a reporter pseudonym.
pub fn is_pseudonym(s: &str) -> bool {
    s.strip_prefix(PSEUDONYM_PREFIX).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Cuts `s` to at most `max` characters, at a character boundary.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((index, _)) => &s[..index],
        None => s,
    }
}

fn truncate_for_error(s: &str) -> &str {
    truncate_chars(s, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ThreatReport {
        let now = Utc::now();
        ThreatReport {
            schema_version: THREAT_SCHEMA_VERSION,
            id: Uuid::now_v7(),
            first_seen: now,
            last_seen: now,
            count: 3,
            category: Category::of(AttackClass::Sqli),
            severity: ThreatSeverity::High,
            confidence: 90,
            indicators: Indicators {
                ip: Some("203.0.113.7".parse().unwrap()),
                route: Some("POST /users/{id}".to_owned()),
                ..Indicators::default()
            },
            action: ActionTaken::Blocked,
            valid_until: now + chrono::Duration::hours(1),
            reporter: format!("{PSEUDONYM_PREFIX}{}", "ab".repeat(16)),
            trust: Trust {
                score: 50,
                corroborations: 1,
            },
        }
    }

    #[test]
    fn a_report_round_trips_through_json() {
        let report = sample();
        let json = report.to_json();
        assert_eq!(ThreatReport::from_json(&json).unwrap(), report);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["category"]["owasp"], "API8:2023");
        assert_eq!(value["indicators"]["ip"], "203.0.113.7");
    }

    #[test]
    fn ipv4_mapped_ipv6_becomes_ipv4() {
        let p = IpPrefix::host("::ffff:198.51.100.9".parse().unwrap(), 64).unwrap();
        assert_eq!(p.to_string(), "198.51.100.9");
        let p: IpPrefix = "::ffff:198.51.100.9/120".parse().unwrap();
        assert_eq!(p.to_string(), "198.51.100.0/24");
    }

    #[test]
    fn ipv6_hosts_are_aggregated_to_their_prefix() {
        let p = IpPrefix::host("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap(), 64).unwrap();
        assert_eq!(p.to_string(), "2001:db8:1:2::/64");
        assert!(p.contains("2001:db8:1:2::1".parse().unwrap()));
        assert!(!p.contains("2001:db8:1:3::1".parse().unwrap()));
    }

    #[test]
    fn prefixes_have_host_bits_cleared_and_bad_ones_are_refused() {
        assert_eq!(
            "198.51.100.77/24".parse::<IpPrefix>().unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert!("198.51.100.77/33".parse::<IpPrefix>().is_err());
        assert!("not-an-ip".parse::<IpPrefix>().is_err());
        assert!("1.2.3.4/x".parse::<IpPrefix>().is_err());
        assert!(format!("{}1", "1".repeat(80)).parse::<IpPrefix>().is_err());
    }

    #[test]
    fn oversized_or_inconsistent_reports_are_refused_with_a_reason() {
        let huge = vec![b' '; MAX_REPORT_BYTES + 1];
        assert!(
            ThreatReport::from_json(&huge)
                .unwrap_err()
                .0
                .contains("limit")
        );

        let mut report = sample();
        report.last_seen = report.first_seen - chrono::Duration::seconds(1);
        assert!(report.validate().unwrap_err().0.contains("last_seen"));

        let mut report = sample();
        report.reporter = "acme-corp".to_owned();
        assert!(report.validate().unwrap_err().0.contains("pseudonym"));

        let mut report = sample();
        report.schema_version = 2;
        assert!(report.validate().unwrap_err().0.contains("version"));

        let mut report = sample();
        report.indicators = Indicators::default();
        assert!(report.validate().unwrap_err().0.contains("indicator"));

        let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        assert!(ThreatReport::from_json(deep.as_bytes()).is_err());
    }

    #[test]
    fn every_class_but_other_maps_to_an_owasp_risk_and_parses_back() {
        for class in AttackClass::ALL {
            assert_eq!(class.as_str().parse::<AttackClass>().unwrap(), class);
            assert_eq!(class.owasp().is_none(), class == AttackClass::Other);
            let json = serde_json::to_value(class).unwrap();
            assert_eq!(json, class.as_str());
        }
    }
}
