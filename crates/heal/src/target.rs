//! Who a client is to heal, and what a block rule covers.
//!
//! A client is its authenticated identity when authentication proved one (blocking the
//! address of a user behind a NAT or a corporate proxy would refuse everyone sharing it), else
//! its address. A block covers an address or prefix, an identity, or a client fingerprint (a
//! hash of the headers a client's software sends, which stays the same when an attacker
//! rotates addresses). Both are written as one string so they read the same in the admin API,
//! the audit trail and the persisted state: `203.0.113.7`, `10.0.0.0/8`, `identity:alice`,
//! `fingerprint:9f2c61d0a4be3371`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::net::Net;

const IDENTITY: &str = "identity:";
const FINGERPRINT: &str = "fingerprint:";
/// Longest identity accepted (token subjects and key names are far shorter).
pub const MAX_IDENTITY_BYTES: usize = 256;

/// How one client is told apart in a window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    Address(IpAddr),
    /// The authenticated subject.
    Identity(String),
}

impl ClientKey {
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            ClientKey::Address(ip) => Some(*ip),
            ClientKey::Identity(_) => None,
        }
    }

    pub fn is_identity(&self) -> bool {
        matches!(self, ClientKey::Identity(_))
    }

    /// The block rule that covers exactly this client.
    pub fn target(&self) -> Target {
        match self {
            ClientKey::Address(ip) => Target::Net(Net::address(*ip)),
            ClientKey::Identity(subject) => Target::Identity(subject.clone()),
        }
    }
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        ClientKey::Address(ip.to_canonical())
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Address(ip) => write!(f, "{ip}"),
            ClientKey::Identity(subject) => write!(f, "{IDENTITY}{subject}"),
        }
    }
}

impl FromStr for ClientKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(subject) = text.strip_prefix(IDENTITY) {
            return identity(subject).map(ClientKey::Identity);
        }
        text.trim()
            .parse::<IpAddr>()
            .map(ClientKey::from)
            .map_err(|_| format!("`{text}` is neither an address nor `identity:<subject>`"))
    }
}

fn identity(subject: &str) -> Result<String, String> {
    if subject.is_empty() || subject.len() > MAX_IDENTITY_BYTES {
        return Err(format!(
            "an identity must have 1 to {MAX_IDENTITY_BYTES} bytes"
        ));
    }
    if subject.chars().any(char::is_control) {
        return Err("an identity must not contain control characters".into());
    }
    Ok(subject.to_owned())
}

/// What a block rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An address (a prefix of full length) or a network prefix.
    Net(Net),
    /// An authenticated identity, wherever it connects from.
    Identity(String),
    /// A client fingerprint (16 hex digits), whatever its address.
    Fingerprint(u64),
}

impl Target {
    pub fn as_net(&self) -> Option<&Net> {
        match self {
            Target::Net(net) => Some(net),
            _ => None,
        }
    }

    /// Whether the rule reaches exactly one client (an address or an identity), so its reach
    /// does not exceed its evidence.
    pub fn is_single_client(&self) -> bool {
        match self {
            Target::Net(net) => net.is_address(),
            Target::Identity(_) => true,
            Target::Fingerprint(_) => false,
        }
    }

    /// Whether the rule covers a client seen as `key` from `addresses` with `fingerprint`.
    pub fn covers(&self, key: &ClientKey, addresses: &[IpAddr], fingerprint: Option<u64>) -> bool {
        match self {
            Target::Net(net) => {
                key.address().is_some_and(|ip| net.contains(ip))
                    || addresses.iter().any(|ip| net.contains(*ip))
            }
            Target::Identity(subject) => {
                matches!(key, ClientKey::Identity(s) if s == subject)
            }
            Target::Fingerprint(f) => fingerprint == Some(*f),
        }
    }

    /// Whether the two rules can refuse the same request for the same reason (an address
    /// inside a prefix, the same identity or fingerprint).
    pub fn overlaps(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Net(a), Target::Net(b)) => a.overlaps(b),
            (a, b) => a == b,
        }
    }
}

impl From<Net> for Target {
    fn from(net: Net) -> Self {
        Target::Net(net)
    }
}

/// A fingerprint as written: 16 lower-case hex digits.
pub fn fingerprint_text(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Net(net) => write!(f, "{net}"),
            Target::Identity(subject) => write!(f, "{IDENTITY}{subject}"),
            Target::Fingerprint(fp) => write!(f, "{FINGERPRINT}{fp:016x}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    /// `203.0.113.7`, `10.0.0.0/8`, `identity:<subject>` or `fingerprint:<16 hex digits>`.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(subject) = text.strip_prefix(IDENTITY) {
            return identity(subject).map(Target::Identity);
        }
        if let Some(hex) = text.strip_prefix(FINGERPRINT) {
            if hex.len() != 16 {
                return Err(format!(
                    "`{text}`: a fingerprint is 16 hex digits (as `GET /behavior/clients/...` shows it)"
                ));
            }
            return u64::from_str_radix(hex, 16)
                .map(Target::Fingerprint)
                .map_err(|_| format!("`{text}`: a fingerprint is 16 hex digits"));
        }
        text.parse().map(Target::Net)
    }
}

macro_rules! string_serde {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(Target);
string_serde!(ClientKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_and_print_the_same_way_and_stay_compatible_with_addresses() {
        for text in [
            "203.0.113.7",
            "10.0.0.0/8",
            "identity:alice@example.com",
            "fingerprint:09f2c61d0a4be337",
        ] {
            let target: Target = text.parse().unwrap();
            assert_eq!(target.to_string(), text);
            let json = serde_json::to_string(&target).unwrap();
            assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), target);
        }
        // A state file written when targets were only addresses still reads.
        let old: Target = serde_json::from_str("\"192.0.2.1\"").unwrap();
        assert_eq!(old, Target::Net("192.0.2.1".parse().unwrap()));
        assert!("identity:".parse::<Target>().is_err());
        assert!("identity:a\nb".parse::<Target>().is_err());
        assert!("fingerprint:xyz".parse::<Target>().is_err());
        assert!("fingerprint:0123456789abcdefg".parse::<Target>().is_err());
        assert!("mallory".parse::<Target>().is_err());
        let key: ClientKey = serde_json::from_str("\"::ffff:192.0.2.1\"").unwrap();
        assert_eq!(key.to_string(), "192.0.2.1");
    }

    #[test]
    fn a_rule_covers_clients_by_address_identity_or_fingerprint() {
        let nat: IpAddr = "198.51.100.7".parse().unwrap();
        let alice = ClientKey::Identity("alice".into());
        let bob = ClientKey::Identity("bob".into());
        let alice_rule = alice.target();
        assert!(alice_rule.covers(&alice, &[nat], None));
        assert!(
            !alice_rule.covers(&bob, &[nat], None),
            "another identity behind the same address is not covered"
        );
        let address_rule = ClientKey::from(nat).target();
        assert!(
            address_rule.covers(&bob, &[nat], None),
            "an address rule covers every identity seen from it"
        );
        let fp = Target::Fingerprint(7);
        assert!(fp.covers(&bob, &[], Some(7)) && !fp.covers(&bob, &[], Some(8)));
        assert!(alice_rule.is_single_client() && !fp.is_single_client());
        assert!(!alice_rule.overlaps(&address_rule));
    }
}
