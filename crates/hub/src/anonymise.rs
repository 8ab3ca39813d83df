//! Anonymisation: the reporter's identity becomes a pseudonym (HMAC-SHA256 under the hub
//! secret, with a key that changes every epoch), and every text that leaves the ingest step is
//! scrubbed of host names, URLs, e-mail addresses, API keys, tokens, cookies, long numbers, the
//! reporter's own names and addresses. Free text (descriptions, other headers, payloads) is
//! never carried over at all: see `normalise`.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use apiguard_model::threat::{IpPrefix, PSEUDONYM_PREFIX};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use regex::{Captures, Regex};
use sha2::Sha256;
use uuid::Uuid;

use crate::auth::hex;

type HmacSha256 = Hmac<Sha256>;

/// Keyed hashes under the hub secret: pseudonyms and report ids.
#[derive(Clone)]
pub struct Pseudonymiser {
    secret: Vec<u8>,
    epoch: Duration,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymiser")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Pseudonymiser {
    /// `secret` must be at least 32 bytes (the config check enforces it).
    pub fn new(secret: Vec<u8>, epoch: Duration) -> Self {
        Self {
            secret,
            epoch: epoch.max(Duration::from_secs(1)),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        for part in parts {
            // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The epoch number at `at`.
    pub fn epoch_at(&self, at: DateTime<Utc>) -> u64 {
        let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
        seconds / self.epoch.as_secs().max(1)
    }

    /// The pseudonym of `participant_id` in `epoch`: `anon-` and 32 hex digits. The key is
    /// itself derived per epoch, so pseudonyms of different epochs cannot be linked without
    /// the hub secret.
    pub fn pseudonym(&self, participant_id: &str, epoch: u64) -> String {
        let epoch_key = self.mac(&[b"apiguard-pseudonym-epoch", &epoch.to_be_bytes()]);
        let mut mac = HmacSha256::new_from_slice(&epoch_key).expect("HMAC takes any key");
        mac.update(participant_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("{PSEUDONYM_PREFIX}{}", hex(&digest[..16]))
    }

    /// The canonical id of a report. When the reporter named its own id (for safe retries),
    /// the hub id is derived from it and the participant, so a retry maps to the same id
    /// while two participants can never collide or learn each other's ids; the time part is
    /// kept when the reporter's id is a UUIDv7. Otherwise a fresh UUIDv7.
    pub fn report_id(
        &self,
        participant_id: &str,
        client_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Uuid {
        let Some(client_id) = client_id else {
            return Uuid::now_v7();
        };
        let millis = match client_id.get_timestamp() {
            Some(ts) if client_id.get_version_num() == 7 => {
                let (seconds, nanos) = ts.to_unix();
                seconds * 1000 + u64::from(nanos) / 1_000_000
            }
            _ => u64::try_from(now.timestamp_millis()).unwrap_or(0),
        };
        let digest = self.mac(&[
            b"apiguard-report-id",
            participant_id.as_bytes(),
            client_id.as_bytes(),
        ]);
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }
}

/// What must never leave the hub for one participant: its names, host names, addresses.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Literal identifiers, lowercase, longest first.
    literals: Vec<String>,
    /// The participant's own networks.
    networks: Vec<IpPrefix>,
}

/// Replacement markers.
const REDACTED: &str = "[redacted]";

static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b[a-z][a-z0-9+.\-]{0,15}://[^\s;()<>'\x22]*").unwrap());
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[^\s@;:,()<>'\x22\[\]]*@[^\s@;,()<>'\x22\[\]]*").unwrap());
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)?").unwrap()
});
static SECRET_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(api[_\-]?key|access[_\-]?token|token|secret|password|passwd|pwd|session(?:id)?|sid|auth(?:orization)?|cookie|key|bearer|basic)(?:\s*[=:]\s*|(?-i:\s+)(?:[A-Za-z0-9_\-+/=.]{8,}))[^\s;,()]*",
    )
    .unwrap()
});
static API_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)ahk_[0-9a-z]*").unwrap());
static LONG_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9_\-+/=%]{20,}").unwrap());
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9\-]{1,62}\b")
        .unwrap()
});
static IPV4: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d{1,3}(?:\.\d{1,3}){3}\b").unwrap());
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:\d{1,3}(?:\.\d{1,3}){3})?").unwrap()
});
static LONG_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d[\d\- ]{7,}\d").unwrap());
static FILE_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^[a-z0-9_\-]+\.(?:html?|php\d?|json|xml|js|css|txt|aspx?|jsp|cgi|ya?ml|env|bak|git|zip|gz|tar|sql|log|ini|conf|cfg|config|old|swp|svn|ds_store|htaccess|htpasswd|pl|py|rb|sh|war|jar)$",
    )
    .unwrap()
});

impl Redactor {
    /// A redactor for one participant. Identifiers shorter than 3 characters are ignored
    /// (they would redact ordinary words).
    pub fn new<'a>(
        identifiers: impl IntoIterator<Item = &'a str>,
        networks: impl IntoIterator<Item = IpPrefix>,
    ) -> Self {
        let mut literals: Vec<String> = identifiers
            .into_iter()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| s.chars().count() >= 3)
            .collect();
        literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
        literals.dedup();
        Self {
            literals,
            networks: networks.into_iter().collect(),
        }
    }

    /// Whether `addr` is one of the participant's own addresses.
    pub fn is_own_address(&self, addr: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(addr))
    }

    /// Whether `prefix` overlaps the participant's own networks.
    pub fn overlaps_own_network(&self, prefix: &IpPrefix) -> bool {
        self.networks.iter().any(|n| n.overlaps(prefix))
    }

    /// `text` with every identifying part replaced by a marker, control characters removed.
    pub fn redact(&self, text: &str) -> String {
        let mut out: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        out = self.redact_literals(&out);
        out = URL.replace_all(&out, "[url]").into_owned();
        out = EMAIL.replace_all(&out, "[email]").into_owned();
        out = JWT.replace_all(&out, "[token]").into_owned();
        out = API_KEY.replace_all(&out, "[token]").into_owned();
        out = SECRET_PAIR
            .replace_all(&out, |c: &Captures<'_>| format!("{}=[redacted]", &c[1]))
            .into_owned();
        out = LONG_TOKEN
            .replace_all(&out, |c: &Captures<'_>| {
                let token = &c[0];
                let letters = token.bytes().any(|b| b.is_ascii_alphabetic());
                let digits = token.bytes().any(|b| b.is_ascii_digit());
                if letters && digits || token.contains('%') {
                    "[token]".to_owned()
                } else {
                    token.to_owned()
                }
            })
            .into_owned();
        out = HOST.replace_all(&out, "[host]").into_owned();
        out = IPV4
            .replace_all(&out, |c: &Captures<'_>| self.redact_ip(&c[0]))
            .into_owned();
        out = IPV6
            .replace_all(&out, |c: &Captures<'_>| self.redact_ip(&c[0]))
            .into_owned();
        out = LONG_NUMBER.replace_all(&out, "[number]").into_owned();
        // A last pass: a marker may have joined pieces of an identifier.
        self.redact_literals(&out)
    }

    /// Whether `segment` (one path segment) carries anything [`Redactor::redact`] would
    /// remove. File names such as `index.html` are not taken for host names.
    pub fn is_sensitive_segment(&self, segment: &str) -> bool {
        if FILE_NAME.is_match(segment) && !self.contains_literal(segment) {
            return false;
        }
        self.redact(segment) != segment
    }

    fn contains_literal(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        self.literals.iter().any(|l| lower.contains(l.as_str()))
    }

    fn redact_ip(&self, candidate: &str) -> String {
        match candidate.parse::<IpAddr>() {
            Ok(addr) if self.is_own_address(addr) => "[ip]".to_owned(),
            _ => candidate.to_owned(),
        }
    }

    fn redact_literals(&self, text: &str) -> String {
        if self.literals.is_empty() {
            return text.to_owned();
        }
        let mut out = text.to_owned();
        for literal in &self.literals {
            loop {
                // Case-insensitive search on a lowercase copy; lowercasing may change byte
                // lengths for some scripts, so fall back to a char-wise scan when it does.
                let lower = out.to_lowercase();
                if lower.len() != out.len() {
                    out = redact_literal_charwise(&out, literal);
                    break;
                }
                match lower.find(literal.as_str()) {
                    Some(start) => out.replace_range(start..start + literal.len(), REDACTED),
                    None => break,
                }
            }
        }
        out
    }
}

fn redact_literal_charwise(text: &str, literal: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let needle: Vec<char> = literal.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    while index < chars.len() {
        let matches = index + needle.len() <= chars.len()
            && chars[index..index + needle.len()]
                .iter()
                .zip(&needle)
                .all(|(a, b)| a.to_lowercase().eq(b.to_lowercase()));
        if matches && !needle.is_empty() {
            out.push_str(REDACTED);
            index += needle.len();
        } else {
            out.push(chars[index]);
            index += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(
            ["acme-widgets", "Acme Widgets Ltd", "shop.acme.test"],
            ["198.51.100.0/24".parse().unwrap()],
        )
    }

    #[test]
    fn pseudonyms_are_stable_within_an_epoch_and_unlinkable_across() {
        let p = Pseudonymiser::new(vec![7; 32], Duration::from_secs(3600));
        let now = Utc::now();
        let epoch = p.epoch_at(now);
        let a = p.pseudonym("participant-1", epoch);
        assert_eq!(a, p.pseudonym("participant-1", epoch));
        assert_ne!(a, p.pseudonym("participant-2", epoch));
        assert_ne!(a, p.pseudonym("participant-1", epoch + 1));
        assert!(apiguard_model::threat::is_pseudonym(&a));
        let other_secret = Pseudonymiser::new(vec![8; 32], Duration::from_secs(3600));
        assert_ne!(a, other_secret.pseudonym("participant-1", epoch));
    }

    #[test]
    fn report_ids_from_a_client_id_are_stable_per_participant() {
        let p = Pseudonymiser::new(vec![7; 32], Duration::from_secs(3600));
        let now = Utc::now();
        let client = Uuid::now_v7();
        let a = p.report_id("p1", Some(client), now);
        assert_eq!(a, p.report_id("p1", Some(client), now));
        assert_ne!(a, p.report_id("p2", Some(client), now));
        assert_ne!(a, client);
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_timestamp(), client.get_timestamp());
        assert_ne!(p.report_id("p1", None, now), p.report_id("p1", None, now));
    }

    #[test]
    fn user_agents_keep_their_shape_and_lose_identifiers() {
        let r = redactor();
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(r.redact(chrome), chrome);
        let ua = "sqlmap/1.7 (https://sqlmap.org) contact admin@acme.test for ACME-WIDGETS via shop.acme.test from 198.51.100.20 token=abc123 eyJhbGciOi.eyJzdWIi.sig ahk_0123abcd";
        let out = r.redact(ua);
        for gone in [
            "sqlmap.org",
            "admin@",
            "acme",
            "ACME",
            "198.51.100.20",
            "abc123",
            "eyJ",
            "ahk_",
        ] {
            assert!(!out.contains(gone), "{gone} left in {out}");
        }
        assert!(out.starts_with("sqlmap/1.7"), "{out}");
    }

    #[test]
    fn file_names_are_not_host_names() {
        let r = redactor();
        assert!(!r.is_sensitive_segment("index.html"));
        assert!(r.is_sensitive_segment("shop.acme.test"));
        assert!(r.is_sensitive_segment("bob@example.com"));
        assert!(!r.is_sensitive_segment("users"));
    }
}
