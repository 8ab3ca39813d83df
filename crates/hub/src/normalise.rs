//! Normalisation: each protocol's natural input becomes a [`RawReport`] (REST takes it as
//! JSON as it is), and a raw report becomes the canonical, anonymised [`ThreatReport`].
//!
//! What is shared is built field by field from what was checked; nothing of the input is
//! copied wholesale. Free text (`description`), headers other than User-Agent, the host name
//! and the payload never reach the output: the payload only as its SHA-256.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use apiguard_model::threat::{
    ActionTaken, AttackClass, Category, Indicators, IpPrefix, MAX_ROUTE_CHARS, MAX_ROUTE_SEGMENTS,
    MAX_USER_AGENT_CHARS, THREAT_SCHEMA_VERSION, ThreatReport, ThreatSeverity, TlsFingerprint,
    TlsFingerprintKind, Trust, truncate_chars,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::anonymise::Redactor;
use crate::auth::hex;
use crate::config::Settings;
use crate::error::HubError;

/// The longest string field of a raw report (the payload has its own limit).
pub const MAX_FIELD_CHARS: usize = 4096;
/// The largest payload a reporter may send for hashing.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The most headers a raw report may carry.
pub const MAX_HEADERS: usize = 64;
/// How far a reported time may lie in the future (clock skew).
const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// A threat report as a reporter sends it over REST (and as gRPC and GraphQL inputs are
/// mapped to). Only `attack` and one indicator are required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    /// The reporter's own id for this report (a UUID). Sending the same id again is a
    /// retry: the hub maps it to the same canonical id and publishes it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// The attack class, such as `sqli` or `credential_stuffing`.
    pub attack: String,
    /// `low`, `medium` (default), `high` or `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// 0 to 100; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<u8>,
    /// The client address: an IP, `IP:port`, `[IPv6]:port`, or a CIDR prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The HTTP method of the attacking request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The raw request path (query included or not); the hub templates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The route template when the reporter knows it, such as `/users/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The reporter's own host name (used only to scrub it from everything else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The client's User-Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Request headers; only User-Agent is used (when `user_agent` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// The malicious payload, hashed by the hub and then forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// SHA-256 of the payload (hex) when the reporter hashed it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    /// JA3 fingerprint (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ja3: Option<String>,
    /// JA4 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ja4: Option<String>,
    /// `blocked` (default), `challenged`, `rate_limited` or `monitored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// When the activity was first seen; default: when the hub received the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    /// When it was last seen; default `first_seen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// How many times it was seen; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// How long consumers should act on it, in seconds; default and cap from the hub config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Free text for the reporter's own records. Never shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Everything a normalisation needs besides the raw report.
pub struct NormaliseContext<'a> {
    pub settings: &'a Settings,
    pub redactor: &'a Redactor,
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub pseudonym: String,
    pub trust: Trust,
}

/// Checks a raw report's sizes and values; what [`normalise`] would refuse, with the same
/// message, but without needing an id or pseudonym.
pub fn validate(raw: &RawReport, settings: &Settings, redactor: &Redactor) -> Result<(), HubError> {
    let context = NormaliseContext {
        settings,
        redactor,
        id: Uuid::now_v7(),
        received_at: Utc::now(),
        pseudonym: format!(
            "{}{}",
            apiguard_model::threat::PSEUDONYM_PREFIX,
            "0".repeat(32)
        ),
        trust: Trust {
            score: 0,
            corroborations: 1,
        },
    };
    normalise(raw, &context).map(|_| ())
}

/// The canonical, anonymised report of `raw`.
pub fn normalise(raw: &RawReport, cx: &NormaliseContext<'_>) -> Result<ThreatReport, HubError> {
    check_sizes(raw)?;
    let invalid = HubError::Invalid;
    let class: AttackClass = raw.attack.parse().map_err(invalid)?;
    let severity = match &raw.severity {
        Some(s) => s.parse::<ThreatSeverity>().map_err(invalid)?,
        None => ThreatSeverity::Medium,
    };
    let confidence = raw.confidence.unwrap_or(50);
    if confidence > 100 {
        return Err(invalid(format!("confidence is 0 to 100, not {confidence}")));
    }
    let action = match &raw.action {
        Some(a) => a.parse::<ActionTaken>().map_err(invalid)?,
        None => ActionTaken::Blocked,
    };

    let latest_allowed = cx.received_at + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECONDS);
    let first_seen = raw.first_seen.unwrap_or(cx.received_at);
    let last_seen = raw.last_seen.unwrap_or(first_seen);
    if first_seen > latest_allowed || last_seen > latest_allowed {
        return Err(invalid(
            "first_seen or last_seen lies in the future".to_owned(),
        ));
    }
    if last_seen < first_seen {
        return Err(invalid("last_seen is before first_seen".to_owned()));
    }
    let count = raw.count.unwrap_or(1);
    if count == 0 {
        return Err(invalid("count must be at least 1".to_owned()));
    }
    let ttl = match raw.ttl_seconds {
        Some(0) => return Err(invalid("ttl_seconds must be positive".to_owned())),
        Some(seconds) => std::time::Duration::from_secs(seconds).min(cx.settings.max_ttl),
        None => cx.settings.default_ttl,
    };
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
    let valid_until = last_seen.max(cx.received_at) + ttl;

    let indicators = indicators(raw, cx)?;
    if indicators.is_empty() {
        return Err(invalid(
            "a report needs at least one indicator: source_ip, user_agent, payload, \
             payload_sha256, path or route, tls_ja3 or tls_ja4 (the reporter's own \
             addresses do not count)"
                .to_owned(),
        ));
    }

    let report = ThreatReport {
        schema_version: THREAT_SCHEMA_VERSION,
        id: cx.id,
        first_seen,
        last_seen,
        count,
        category: Category::of(class),
        severity,
        confidence,
        indicators,
        action,
        valid_until,
        reporter: cx.pseudonym.clone(),
        trust: cx.trust,
    };
    report.validate().map_err(|e| {
        HubError::Internal(format!("normalisation produced an invalid report: {e}"))
    })?;
    Ok(report)
}

fn check_sizes(raw: &RawReport) -> Result<(), HubError> {
    let fields = [
        ("attack", Some(&raw.attack)),
        ("severity", raw.severity.as_ref()),
        ("source_ip", raw.source_ip.as_ref()),
        ("method", raw.method.as_ref()),
        ("path", raw.path.as_ref()),
        ("route", raw.route.as_ref()),
        ("host", raw.host.as_ref()),
        ("user_agent", raw.user_agent.as_ref()),
        ("payload_sha256", raw.payload_sha256.as_ref()),
        ("tls_ja3", raw.tls_ja3.as_ref()),
        ("tls_ja4", raw.tls_ja4.as_ref()),
        ("action", raw.action.as_ref()),
        ("description", raw.description.as_ref()),
    ];
    for (name, value) in fields {
        if let Some(value) = value
            && value.len() > MAX_FIELD_CHARS
        {
            return Err(HubError::Invalid(format!(
                "{name} is {} bytes; the limit is {MAX_FIELD_CHARS}",
                value.len()
            )));
        }
    }
    if let Some(payload) = &raw.payload
        && payload.len() > MAX_PAYLOAD_BYTES
    {
        return Err(HubError::Invalid(format!(
            "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    if let Some(headers) = &raw.headers {
        if headers.len() > MAX_HEADERS {
            return Err(HubError::Invalid(format!(
                "{} headers; the limit is {MAX_HEADERS}",
                headers.len()
            )));
        }
        if let Some((name, _)) = headers
            .iter()
            .find(|(k, v)| k.len() > 256 || v.len() > MAX_FIELD_CHARS)
        {
            return Err(HubError::Invalid(format!(
                "header `{}` is too large",
                truncate_chars(name, 40)
            )));
        }
    }
    Ok(())
}

fn indicators(raw: &RawReport, cx: &NormaliseContext<'_>) -> Result<Indicators, HubError> {
    let redactor = cx.redactor;
    let mut out = Indicators::default();

    if let Some(source) = raw.source_ip.as_deref() {
        let prefix = parse_source(source, cx.settings)?;
        // The reporter's own addresses are never shared (they would name the victim).
        if !redactor.overlaps_own_network(&prefix) {
            out.ip = Some(prefix);
        }
    }

    let user_agent = raw.user_agent.clone().or_else(|| {
        raw.headers.as_ref().and_then(|headers| {
            headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
                .map(|(_, value)| value.clone())
        })
    });
    if let Some(ua) = user_agent {
        let cleaned = redactor.redact(ua.trim());
        let cleaned = truncate_chars(cleaned.trim(), MAX_USER_AGENT_CHARS)
            .trim()
            .to_owned();
        if !cleaned.is_empty() {
            out.user_agent = Some(cleaned);
        }
    }

    out.payload_sha256 = match (&raw.payload_sha256, &raw.payload) {
        (Some(hash), _) => {
            let hash = hash.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(HubError::Invalid(
                    "payload_sha256 must be 64 hex digits".to_owned(),
                ));
            }
            Some(hash)
        }
        (None, Some(payload)) if !payload.is_empty() => {
            Some(hex(&Sha256::digest(payload.as_bytes())))
        }
        _ => None,
    };

    let template = match (raw.route.as_deref(), raw.path.as_deref()) {
        (Some(route), _) => Some(template_path(route, redactor)),
        (None, Some(path)) => Some(template_path(path, redactor)),
        (None, None) => None,
    };
    if let Some(template) = template {
        let method = raw
            .method
            .as_deref()
            .map(str::trim)
            .filter(|m| (1..=16).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_uppercase);
        let route = match method {
            Some(method) => format!("{method} {template}"),
            None => template,
        };
        out.route = Some(truncate_chars(&route, MAX_ROUTE_CHARS).to_owned());
    }

    out.tls_fingerprint = match (&raw.tls_ja4, &raw.tls_ja3) {
        (Some(ja4), _) => {
            Some(TlsFingerprint::new(TlsFingerprintKind::Ja4, ja4).map_err(HubError::Invalid)?)
        }
        (None, Some(ja3)) => {
            Some(TlsFingerprint::new(TlsFingerprintKind::Ja3, ja3).map_err(HubError::Invalid)?)
        }
        (None, None) => None,
    };
    Ok(out)
}

/// Parses the client address: IP, `IP:port`, `[IPv6]:port` or a CIDR prefix. Single IPv6
/// hosts become their configured prefix; IPv4-mapped IPv6 becomes IPv4; prefixes broader
/// than the configured minimum are refused (blocking a /8 is a denial of service).
fn parse_source(source: &str, settings: &Settings) -> Result<IpPrefix, HubError> {
    let source = source.trim();
    if source.contains('/') {
        let prefix: IpPrefix = source.parse().map_err(HubError::Invalid)?;
        let minimum = match prefix.addr() {
            IpAddr::V4(_) => settings.min_ipv4_prefix,
            IpAddr::V6(_) => settings.min_ipv6_prefix,
        };
        if prefix.len() < minimum {
            return Err(HubError::Invalid(format!(
                "source_ip {prefix} is broader than /{minimum}, the broadest prefix shared"
            )));
        }
        return match prefix.addr() {
            IpAddr::V6(_) if prefix.len() > settings.ipv6_prefix => {
                IpPrefix::new(prefix.addr(), settings.ipv6_prefix).map_err(HubError::Invalid)
            }
            _ => Ok(prefix),
        };
    }
    let addr = source
        .parse::<IpAddr>()
        .or_else(|_| source.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            source
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
        })
        .map_err(|_| {
            HubError::Invalid(format!(
                "source_ip `{}` is not an IP address, IP:port or prefix",
                truncate_chars(source, 64)
            ))
        })?;
    IpPrefix::host(addr, settings.ipv6_prefix).map_err(HubError::Invalid)
}

/// A route template of a raw path: query and fragment dropped, ids, e-mail addresses, host
/// names, tokens and anything odd replaced by placeholders, at most
/// [`MAX_ROUTE_SEGMENTS`] segments. `/users/42/orders?x=1` becomes `/users/{id}/orders`.
pub fn template_path(path: &str, redactor: &Redactor) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::new();
    for (index, segment) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        if index == MAX_ROUTE_SEGMENTS {
            out.push_str("/{rest}");
            break;
        }
        out.push('/');
        out.push_str(&template_segment(segment, redactor));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn template_segment(raw: &str, redactor: &Redactor) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    // A placeholder the reporter already wrote.
    if let Some(name) = raw.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
        && (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !redactor.is_sensitive_segment(name)
    {
        return Cow::Owned(format!("{{{name}}}"));
    }
    if raw.starts_with(':') && raw.len() > 1 && raw.len() <= 33 {
        let name = &raw[1..];
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Cow::Owned(format!("{{{name}}}"));
        }
    }
    let Some(segment) = percent_decode(raw) else {
        return Cow::Borrowed("{param}");
    };
    let segment = segment.as_str();
    if segment.len() > 48 {
        return Cow::Borrowed("{param}");
    }
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        return Cow::Borrowed("{id}");
    }
    if is_uuid_like(segment)
        || (segment.len() >= 12 && segment.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Cow::Borrowed("{id}");
    }
    if segment.contains('@') {
        return Cow::Borrowed("{email}");
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Cow::Borrowed("{param}");
    }
    if redactor.is_sensitive_segment(segment) {
        return Cow::Borrowed("{redacted}");
    }
    if segment.bytes().filter(u8::is_ascii_digit).count() >= 3 {
        return Cow::Borrowed("{id}");
    }
    Cow::Owned(segment.to_owned())
}

fn is_uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Percent-decodes to UTF-8; `None` when the escapes are bad or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = s.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HubConfig;

    pub(crate) fn settings() -> Settings {
        HubConfig::parse("listen: 127.0.0.1:0\nsecret: 0123456789abcdef0123456789abcdef\n")
            .unwrap()
            .settings()
            .unwrap()
    }

    fn context<'a>(settings: &'a Settings, redactor: &'a Redactor) -> NormaliseContext<'a> {
        NormaliseContext {
            settings,
            redactor,
            id: Uuid::now_v7(),
            received_at: Utc::now(),
            pseudonym: format!("anon-{}", "a".repeat(32)),
            trust: Trust {
                score: 50,
                corroborations: 1,
            },
        }
    }

    #[test]
    fn paths_become_route_templates() {
        let r = Redactor::new(["acme-shop"], []);
        let cases = [
            ("/users/42/orders?token=abc", "/users/{id}/orders"),
            (
                "/v1/users/3f2b8c1e-8d3a-4c5e-9f00-1234567890ab",
                "/v1/users/{id}",
            ),
            ("/users/bob%40example.com", "/users/{email}"),
            ("/tenants/acme-shop/items", "/tenants/{redacted}/items"),
            ("/proxy/internal.acme.test/x", "/proxy/{redacted}/x"),
            ("/search/1' OR '1'='1", "/search/{param}"),
            ("/static/index.html", "/static/index.html"),
            ("/oauth2/token", "/oauth2/token"),
            ("/users/{id}", "/users/{id}"),
            ("/users/:id", "/users/{id}"),
            ("", "/"),
            ("/a%zz", "/{param}"),
        ];
        for (path, want) in cases {
            assert_eq!(template_path(path, &r), want, "{path}");
        }
        let deep = "/a".repeat(100);
        assert!(template_path(&deep, &r).ends_with("/{rest}"));
    }

    #[test]
    fn a_rest_report_normalises_to_the_canonical_shape() {
        let settings = settings();
        let redactor = Redactor::new(["shop.acme.test"], ["198.51.100.0/24".parse().unwrap()]);
        let raw = RawReport {
            attack: "SQLi".into(),
            severity: Some("high".into()),
            source_ip: Some("[::ffff:203.0.113.9]:5123".into()),
            method: Some("post".into()),
            path: Some("/users/17/orders?q=1".into()),
            host: Some("shop.acme.test".into()),
            headers: Some(BTreeMap::from([
                ("User-Agent".into(), "sqlmap/1.7".into()),
                ("Cookie".into(), "session=deadbeef".into()),
            ])),
            payload: Some("' OR 1=1 --".into()),
            description: Some("call Bob at +1 555 0100 about shop.acme.test".into()),
            ..RawReport::default()
        };
        let report = normalise(&raw, &context(&settings, &redactor)).unwrap();
        assert_eq!(report.indicators.ip.unwrap().to_string(), "203.0.113.9");
        assert_eq!(
            report.indicators.route.as_deref(),
            Some("POST /users/{id}/orders")
        );
        assert_eq!(report.indicators.user_agent.as_deref(), Some("sqlmap/1.7"));
        assert_eq!(report.indicators.payload_sha256.as_ref().unwrap().len(), 64);
        assert_eq!(report.category.class, AttackClass::Sqli);
        let json = String::from_utf8(report.to_json()).unwrap();
        for gone in ["acme", "deadbeef", "555", "OR 1=1", "Bob"] {
            assert!(!json.contains(gone), "{gone} in {json}");
        }
    }

    #[test]
    fn invalid_reports_are_refused_with_a_reason() {
        let settings = settings();
        let redactor = Redactor::new([], ["198.51.100.0/24".parse().unwrap()]);
        let cx = context(&settings, &redactor);
        let cases: Vec<(RawReport, &str)> = vec![
            (
                RawReport {
                    attack: "teleportation".into(),
                    source_ip: Some("203.0.113.1".into()),
                    ..Default::default()
                },
                "unknown attack class",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    ..Default::default()
                },
                "at least one indicator",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    source_ip: Some("198.51.100.7".into()),
                    ..Default::default()
                },
                "at least one indicator",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    source_ip: Some("10.0.0.0/8".into()),
                    ..Default::default()
                },
                "broader",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    source_ip: Some("nope".into()),
                    ..Default::default()
                },
                "not an IP",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    source_ip: Some("203.0.113.1".into()),
                    confidence: Some(101),
                    ..Default::default()
                },
                "0 to 100",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    source_ip: Some("203.0.113.1".into()),
                    user_agent: Some("x".repeat(5000)),
                    ..Default::default()
                },
                "limit",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    source_ip: Some("203.0.113.1".into()),
                    first_seen: Some(Utc::now() + chrono::Duration::days(1)),
                    ..Default::default()
                },
                "future",
            ),
            (
                RawReport {
                    attack: "xss".into(),
                    tls_ja3: Some("zz".into()),
                    ..Default::default()
                },
                "JA3",
            ),
        ];
        for (raw, want) in cases {
            let err = normalise(&raw, &cx).unwrap_err();
            assert!(matches!(err, HubError::Invalid(_)), "{err}");
            assert!(
                err.to_string()
                    .to_lowercase()
                    .contains(&want.to_lowercase()),
                "{err} lacks {want}"
            );
        }
    }

    #[test]
    fn ipv6_sources_are_aggregated_and_ttls_capped() {
        let settings = settings();
        let redactor = Redactor::default();
        let raw = RawReport {
            attack: "scanner".into(),
            source_ip: Some("2001:db8:aa:bb:1:2:3:4".into()),
            ttl_seconds: Some(10 * 365 * 86_400),
            ..Default::default()
        };
        let cx = context(&settings, &redactor);
        let report = normalise(&raw, &cx).unwrap();
        assert_eq!(
            report.indicators.ip.unwrap().to_string(),
            "2001:db8:aa:bb::/64"
        );
        assert!(report.valid_until <= cx.received_at + chrono::Duration::days(7));
    }
}
