//! The STIX 2.1 view of canonical reports: a pure mapping, computed on every read from the
//! stored [`ThreatReport`]s (the store holds no STIX), so it can never disagree with them.
//!
//! | canonical report | STIX 2.1 |
//! | --- | --- |
//! | `reporter` (the pseudonym) | `identity` named by the pseudonym, `created_by_ref` of all below |
//! | `indicators.ip` | `indicator` `[ipv4-addr:value = '…']` (`ISSUBSET '…/len'` for a prefix; IPv6 alike) |
//! | `indicators.user_agent` | `indicator` `[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = '…']` |
//! | `indicators.payload_sha256` | `indicator` `[artifact:hashes.'SHA-256' = '…']` |
//! | `indicators.tls_fingerprint` | `indicator` `[x-apiguard-tls-client:ja3 = '…']` (or `ja4`) |
//! | `category.class` | `attack-pattern` (with CAPEC and OWASP references), `indicates` relationships |
//! | `count`, `first_seen`, `last_seen` | `sighting` of the first indicator, where sighted: the pseudonym |
//! | `valid_until`, `confidence` | `valid_until`, `confidence` of each indicator |
//!
//! Ids are deterministic, so a re-export gives the same objects: the report's UUIDv7 with its
//! version nibble set to 4 and a fixed mask per object slot XORed into its last 48 bits
//! (unique, and invertible: [`locate`] finds the report behind any id); identity ids are
//! the pseudonym's 128 bits, attack-pattern ids a hash of the class, both shaped as UUIDv4.

use apiguard_model::threat::{AttackClass, IpPrefix, ThreatReport, TlsFingerprintKind};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The STIX version of every object.
pub const SPEC_VERSION: &str = "2.1";
/// The media type of a STIX bundle or object.
pub const MEDIA_TYPE: &str = "application/stix+json;version=2.1";
/// `created` and `modified` of the fixed objects (attack patterns, pseudonym identities):
/// they never change, so they have one version.
pub const FIXED_OBJECTS_DATE: &str = "2024-01-01T00:00:00.000Z";

/// Slots of the objects derived from one report (the XOR mask of each id).
const SLOT_INDICATOR: u8 = 0;
const SLOT_RELATIONSHIP: u8 = 4;
const SLOT_SIGHTING: u8 = 8;

/// A STIX timestamp: RFC 3339, UTC, milliseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn mask(slot: u8) -> u128 {
    (u128::from(slot) * 0x009E_3779_B97F) & 0xFFFF_FFFF_FFFF
}

fn as_v4(value: u128) -> Uuid {
    let value = (value & !(0xF << 76)) | (0x4 << 76);
    let value = (value & !(0b11 << 62)) | (0b10 << 62);
    Uuid::from_u128(value)
}

/// The id of the object in `slot` of report `report_id`.
fn derived(report_id: Uuid, slot: u8) -> Uuid {
    as_v4(report_id.as_u128() ^ mask(slot))
}

/// The report id behind a derived id, for one slot (the report ids are UUIDv7).
fn underived(id: Uuid, slot: u8) -> Uuid {
    let value = id.as_u128() ^ mask(slot);
    Uuid::from_u128((value & !(0xF << 76)) | (0x7 << 76))
}

/// The identity id of a pseudonym (`anon-` and 32 hex digits).
pub fn identity_id(pseudonym: &str) -> String {
    let hex = pseudonym.trim_start_matches(apiguard_model::threat::PSEUDONYM_PREFIX);
    let bits = u128::from_str_radix(hex, 16).unwrap_or_else(|_| {
        u128::from_be_bytes(
            Sha256::digest(pseudonym.as_bytes())[..16]
                .try_into()
                .unwrap_or([0; 16]),
        )
    });
    format!("identity--{}", as_v4(bits))
}

/// The attack-pattern id of a class.
pub fn attack_pattern_id(class: AttackClass) -> String {
    let digest = Sha256::digest(format!("apiguard/stix/attack-pattern/{}", class.as_str()));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!("attack-pattern--{}", as_v4(u128::from_be_bytes(bytes)))
}

/// What an object id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// An attack pattern of the fixed catalogue.
    AttackPattern(AttackClass),
    /// An object derived from a report: one of these report ids (one per possible slot).
    Report(Vec<Uuid>),
    /// A pseudonym's identity: the `LIKE` pattern of the pseudonym (two hex digits unknown).
    Identity(String),
}

/// Finds what an object id names, or `None` when it cannot be one of this view's ids.
pub fn locate(id: &str) -> Option<Located> {
    let (kind, uuid) = id.split_once("--")?;
    let uuid = Uuid::parse_str(uuid).ok()?;
    if uuid.get_version_num() != 4 {
        return None;
    }
    let slots: &[u8] = match kind {
        "attack-pattern" => {
            return AttackClass::ALL
                .into_iter()
                .find(|class| attack_pattern_id(*class) == id)
                .map(Located::AttackPattern);
        }
        "identity" => {
            let hex = uuid.simple().to_string();
            let mut pattern = String::with_capacity(32);
            for (index, c) in hex.chars().enumerate() {
                pattern.push(if index == 12 || index == 16 { '_' } else { c });
            }
            return Some(Located::Identity(pattern));
        }
        "indicator" => &[0, 1, 2, 3],
        "relationship" => &[4, 5, 6, 7],
        "sighting" => &[SLOT_SIGHTING],
        _ => return None,
    };
    Some(Located::Report(
        slots.iter().map(|slot| underived(uuid, *slot)).collect(),
    ))
}

/// The attack pattern of a class: name, description, and its CAPEC entry where the class
/// maps onto one cleanly.
fn class_info(class: AttackClass) -> (&'static str, Option<u32>) {
    use AttackClass::*;
    match class {
        Sqli => ("SQL injection", Some(66)),
        Nosqli => ("NoSQL injection", Some(676)),
        Xss => ("Cross-site scripting", Some(63)),
        CommandInjection => ("OS command injection", Some(88)),
        PathTraversal => ("Path traversal", Some(126)),
        FileInclusion => ("Remote file inclusion", Some(253)),
        Ssti => ("Server-side template injection", None),
        Xxe => ("XML external entity injection", None),
        Jndi => ("JNDI lookup injection (Log4Shell)", None),
        Crlf => ("CRLF injection", None),
        Ssrf => ("Server-side request forgery", Some(664)),
        ObjectEnumeration => ("Object id enumeration", None),
        CredentialStuffing => ("Credential stuffing", Some(600)),
        MassAssignment => ("Mass assignment", None),
        ResourceExhaustion => ("Resource exhaustion", None),
        FunctionLevelAccess => ("Function level access abuse", None),
        BusinessFlowAbuse => ("Business flow abuse", None),
        Scanner => ("Vulnerability scanning", None),
        InventoryProbing => ("Probing for undocumented endpoints", None),
        ProtocolViolation => ("Protocol violation", None),
        Other => ("Other API attack", None),
    }
}

/// The CAPEC id a class maps to, if any.
pub fn capec(class: AttackClass) -> Option<u32> {
    class_info(class).1
}

/// The attack-pattern object of a class.
pub fn attack_pattern(class: AttackClass) -> Value {
    let (name, capec) = class_info(class);
    let mut references = Vec::new();
    if let Some(capec) = capec {
        references.push(json!({
            "source_name": "capec",
            "external_id": format!("CAPEC-{capec}"),
        }));
    }
    if let Some(owasp) = class.owasp() {
        let id = serde_json::to_value(owasp)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        references.push(json!({
            "source_name": "owasp-api-security-top-10-2023",
            "external_id": id,
        }));
    }
    let mut object = json!({
        "type": "attack-pattern",
        "spec_version": SPEC_VERSION,
        "id": attack_pattern_id(class),
        "created": FIXED_OBJECTS_DATE,
        "modified": FIXED_OBJECTS_DATE,
        "name": name,
        "description": format!("API attacks of the apiguard class `{}`.", class.as_str()),
    });
    if !references.is_empty() {
        object["external_references"] = Value::Array(references);
    }
    object
}

/// Every attack pattern, in class order: the fixed catalogue the report objects point to.
pub fn catalogue() -> Vec<Value> {
    AttackClass::ALL.into_iter().map(attack_pattern).collect()
}

/// The identity object of a pseudonym: it carries the pseudonym only.
pub fn identity(pseudonym: &str) -> Value {
    json!({
        "type": "identity",
        "spec_version": SPEC_VERSION,
        "id": identity_id(pseudonym),
        "created": FIXED_OBJECTS_DATE,
        "modified": FIXED_OBJECTS_DATE,
        "name": pseudonym,
        "description": "A participant of an apiguard threat-intelligence hub, by pseudonym (a keyed hash that changes every epoch).",
        "identity_class": "organization",
    })
}

/// A STIX pattern string literal.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn ip_pattern(prefix: &IpPrefix) -> String {
    let kind = if prefix.addr().is_ipv4() {
        "ipv4-addr"
    } else {
        "ipv6-addr"
    };
    if prefix.is_host() {
        format!("[{kind}:value = {}]", literal(&prefix.addr().to_string()))
    } else {
        format!("[{kind}:value ISSUBSET {}]", literal(&prefix.to_string()))
    }
}

/// The indicators of a report: (slot, short name, pattern).
fn indicators(report: &ThreatReport) -> Vec<(u8, String, String)> {
    let i = &report.indicators;
    let mut out = Vec::new();
    if let Some(prefix) = &i.ip {
        out.push((0, format!("from {prefix}"), ip_pattern(prefix)));
    }
    if let Some(agent) = &i.user_agent {
        out.push((
            1,
            "by user agent".to_owned(),
            format!(
                "[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = {}]",
                literal(agent)
            ),
        ));
    }
    if let Some(hash) = &i.payload_sha256 {
        out.push((
            2,
            "by payload".to_owned(),
            format!("[artifact:hashes.'SHA-256' = {}]", literal(hash)),
        ));
    }
    if let Some(tls) = &i.tls_fingerprint {
        let property = match tls.kind {
            TlsFingerprintKind::Ja3 => "ja3",
            TlsFingerprintKind::Ja4 => "ja4",
        };
        out.push((
            3,
            format!("by TLS client ({property})"),
            format!(
                "[x-apiguard-tls-client:{property} = {}]",
                literal(&tls.value)
            ),
        ));
    }
    out
}

/// When the hub created the report's objects: the time in its UUIDv7.
fn created(report: &ThreatReport) -> DateTime<Utc> {
    report
        .id
        .get_timestamp()
        .and_then(|ts| {
            let (seconds, nanos) = ts.to_unix();
            Utc.timestamp_opt(i64::try_from(seconds).ok()?, nanos - nanos % 1_000_000)
                .single()
        })
        .unwrap_or(report.first_seen)
}

/// The objects of one report, in a fixed order: the reporter's identity, the indicators,
/// their `indicates` relationships, the sighting. The attack pattern they point to is in
/// [`catalogue`].
pub fn report_objects(report: &ThreatReport) -> Vec<Value> {
    let created = timestamp(created(report));
    let identity_ref = identity_id(&report.reporter);
    let class = report.category.class;
    let pattern_ref = attack_pattern_id(class);
    let (class_name, _) = class_info(class);
    let valid_from = report.first_seen;
    // STIX wants valid_until after valid_from; the canonical report allows them equal.
    let valid_until = if report.valid_until > valid_from {
        report.valid_until
    } else {
        valid_from + chrono::Duration::milliseconds(1)
    };
    let mut description = format!(
        "{} {} reported to an apiguard hub (report {}); action: {}; trust score {}, reported by {} participant(s)",
        report.severity.as_str(),
        class.as_str(),
        report.id,
        serde_json::to_value(report.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        report.trust.score,
        report.trust.corroborations,
    );
    if let Some(route) = &report.indicators.route {
        description.push_str(&format!("; route: {route}"));
    }

    let mut objects = vec![identity(&report.reporter)];
    let indicators = indicators(report);
    for (slot, name, pattern) in &indicators {
        objects.push(json!({
            "type": "indicator",
            "spec_version": SPEC_VERSION,
            "id": format!("indicator--{}", derived(report.id, SLOT_INDICATOR + slot)),
            "created": created,
            "modified": created,
            "created_by_ref": identity_ref,
            "name": format!("{class_name} {name}"),
            "description": description,
            "indicator_types": ["malicious-activity"],
            "pattern": pattern,
            "pattern_type": "stix",
            "pattern_version": SPEC_VERSION,
            "valid_from": timestamp(valid_from),
            "valid_until": timestamp(valid_until),
            "confidence": report.confidence,
            "labels": [class.as_str(), report.severity.as_str()],
        }));
    }
    for (slot, _, _) in &indicators {
        objects.push(json!({
            "type": "relationship",
            "spec_version": SPEC_VERSION,
            "id": format!("relationship--{}", derived(report.id, SLOT_RELATIONSHIP + slot)),
            "created": created,
            "modified": created,
            "created_by_ref": identity_ref,
            "relationship_type": "indicates",
            "source_ref": format!("indicator--{}", derived(report.id, SLOT_INDICATOR + slot)),
            "target_ref": pattern_ref,
        }));
    }
    let sighting_of = match indicators.first() {
        Some((slot, _, _)) => format!("indicator--{}", derived(report.id, SLOT_INDICATOR + slot)),
        None => pattern_ref,
    };
    objects.push(json!({
        "type": "sighting",
        "spec_version": SPEC_VERSION,
        "id": format!("sighting--{}", derived(report.id, SLOT_SIGHTING)),
        "created": created,
        "modified": created,
        "created_by_ref": identity_ref,
        "sighting_of_ref": sighting_of,
        "where_sighted_refs": [identity_ref],
        "first_seen": timestamp(report.first_seen),
        "last_seen": timestamp(report.last_seen),
        "count": report.count.min(999_999_999),
        "confidence": report.confidence,
        "description": description,
    }));
    objects
}

/// A bundle of reports: each identity once, the attack patterns they point to, then every
/// report's objects. Its id is derived from the reports, so the same reports give the same
/// bundle.
pub fn bundle(reports: &[ThreatReport]) -> Value {
    let mut objects = Vec::new();
    let mut classes: Vec<AttackClass> = reports.iter().map(|r| r.category.class).collect();
    classes.sort();
    classes.dedup();
    objects.extend(classes.into_iter().map(attack_pattern));
    let mut seen = std::collections::HashSet::new();
    let mut digest = Sha256::new();
    for report in reports {
        digest.update(report.id.as_bytes());
        for object in report_objects(report) {
            let id = object["id"].as_str().unwrap_or_default().to_owned();
            if seen.insert(id) {
                objects.push(object);
            }
        }
    }
    let digest = digest.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    json!({
        "type": "bundle",
        "id": format!("bundle--{}", as_v4(u128::from_be_bytes(bytes))),
        "objects": objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiguard_model::threat::{
        ActionTaken, Category, Indicators, ThreatSeverity, TlsFingerprint, Trust,
    };

    fn report(ip: &str) -> ThreatReport {
        let now = Utc::now();
        ThreatReport {
            schema_version: 1,
            id: Uuid::now_v7(),
            first_seen: now,
            last_seen: now,
            count: 3,
            category: Category::of(AttackClass::Sqli),
            severity: ThreatSeverity::High,
            confidence: 80,
            indicators: Indicators {
                ip: Some(ip.parse().unwrap()),
                user_agent: Some("it's a \\ test".into()),
                payload_sha256: Some("ab".repeat(32)),
                route: Some("POST /users/{id}".into()),
                tls_fingerprint: Some(
                    TlsFingerprint::new(TlsFingerprintKind::Ja3, &"c".repeat(32)).unwrap(),
                ),
            },
            action: ActionTaken::Blocked,
            valid_until: now,
            reporter: format!("anon-{}", "0f".repeat(16)),
            trust: Trust {
                score: 50,
                corroborations: 1,
            },
        }
    }

    #[test]
    fn every_derived_id_leads_back_to_its_report() {
        let r = report("203.0.113.7");
        for object in report_objects(&r) {
            let id = object["id"].as_str().unwrap();
            match locate(id).unwrap() {
                Located::Report(candidates) => assert!(candidates.contains(&r.id), "{id}"),
                Located::Identity(pattern) => {
                    let hex = r.reporter.trim_start_matches("anon-");
                    assert!(
                        hex.chars()
                            .zip(pattern.chars())
                            .all(|(a, b)| b == '_' || a == b)
                    );
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                Uuid::parse_str(id.split_once("--").unwrap().1)
                    .unwrap()
                    .get_version_num(),
                4
            );
        }
        let ap = attack_pattern_id(AttackClass::Xss);
        assert_eq!(locate(&ap), Some(Located::AttackPattern(AttackClass::Xss)));
        assert_eq!(locate("indicator--not-a-uuid"), None);
        assert_eq!(
            locate("malware--0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f"),
            None
        );
    }

    #[test]
    fn patterns_escape_and_name_prefixes() {
        let r = report("198.51.100.0/24");
        let objects = report_objects(&r);
        let patterns: Vec<&str> = objects
            .iter()
            .filter_map(|o| o["pattern"].as_str())
            .collect();
        assert_eq!(patterns[0], "[ipv4-addr:value ISSUBSET '198.51.100.0/24']");
        assert!(
            patterns[1].ends_with("= 'it\\'s a \\\\ test']"),
            "{}",
            patterns[1]
        );
        assert_eq!(
            ip_pattern(&"2001:db8:1:2::/64".parse().unwrap()),
            "[ipv6-addr:value ISSUBSET '2001:db8:1:2::/64']"
        );
        // valid_until equal to valid_from is moved 1 ms later.
        assert!(objects[1]["valid_until"].as_str() > objects[1]["valid_from"].as_str());
        // The same report gives the same objects.
        assert_eq!(report_objects(&r), objects);
        assert_eq!(bundle(std::slice::from_ref(&r)), bundle(&[r]));
    }
}
