//! Addresses and prefixes as one type: what a block or a throttle covers, and what the
//! allowlist protects. IPv4 is held as IPv4-mapped IPv6 so one comparison serves both families.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One address (a prefix of full length) or a network prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    /// The network, IPv4 as IPv4-mapped IPv6, host bits zero.
    bits: u128,
    /// The prefix length in IPv6 terms (an IPv4 /24 is 120).
    len: u8,
}

const V4_MAPPED: u128 = 0xffff_0000_0000;

fn bits_of(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
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

impl Net {
    /// The single address `ip`.
    pub fn address(ip: IpAddr) -> Net {
        Net {
            bits: bits_of(ip),
            len: 128,
        }
    }

    /// The prefix of `ip` with `v4_len` bits for IPv4 and `v6_len` for IPv6.
    pub fn prefix_of(ip: IpAddr, v4_len: u8, v6_len: u8) -> Net {
        let ip = ip.to_canonical();
        let len = match ip {
            IpAddr::V4(_) => 96 + v4_len.min(32),
            IpAddr::V6(_) => v6_len.min(128),
        };
        Net {
            bits: bits_of(ip) & mask(len),
            len,
        }
    }

    fn is_v4(&self) -> bool {
        self.len >= 96 && self.bits & mask(96) == V4_MAPPED
    }

    /// Whether this is one address rather than a wider prefix.
    pub fn is_address(&self) -> bool {
        self.len == 128
    }

    /// The address, when this is one.
    pub fn as_address(&self) -> Option<IpAddr> {
        self.is_address().then(|| self.network())
    }

    /// The first address of the network.
    pub fn network(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from((self.bits & u128::from(u32::MAX)) as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        }
    }

    /// The prefix length as written (`/24` for IPv4, not 120).
    pub fn written_len(&self) -> u8 {
        if self.is_v4() {
            self.len - 96
        } else {
            self.len
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        bits_of(ip) & mask(self.len) == self.bits
    }

    /// Whether the two share at least one address (one contains the other).
    pub fn overlaps(&self, other: &Net) -> bool {
        let len = self.len.min(other.len);
        self.bits & mask(len) == other.bits & mask(len)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_address() {
            write!(f, "{}", self.network())
        } else {
            write!(f, "{}/{}", self.network(), self.written_len())
        }
    }
}

impl FromStr for Net {
    type Err = String;

    /// `203.0.113.7`, `2001:db8::1`, `10.0.0.0/8`, `2001:db8::/48`; host bits must be zero.
    fn from_str(text: &str) -> Result<Net, String> {
        let text = text.trim();
        let Some((network, len)) = text.split_once('/') else {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| format!("`{text}` is not an IP address or prefix"))?;
            return Ok(Net::address(ip));
        };
        let ip: IpAddr = network
            .parse()
            .map_err(|_| format!("`{text}`: `{network}` is not an IP address"))?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?;
        let net = Net::prefix_of(ip, len, len);
        if net.bits != bits_of(ip) {
            return Err(format!("`{text}` has host bits set after /{len}"));
        }
        Ok(net)
    }
}

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Net, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_contain_and_print_as_written() {
        let net: Net = "127.0.0.0/24".parse().unwrap();
        assert!(net.contains(ip("127.0.0.9")));
        assert!(net.contains(ip("::ffff:127.0.0.9")));
        assert!(!net.contains(ip("127.0.1.9")));
        assert_eq!(net.to_string(), "127.0.0.0/24");
        assert_eq!(Net::prefix_of(ip("127.0.0.77"), 24, 64), net);
        let v6 = Net::prefix_of(ip("2001:db8:1:2::9"), 24, 64);
        assert_eq!(v6.to_string(), "2001:db8:1:2::/64");
        assert_eq!(Net::address(ip("10.1.2.3")).to_string(), "10.1.2.3");
        assert!("10.0.0.1/8".parse::<Net>().is_err());
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("nonsense".parse::<Net>().is_err());
    }

    #[test]
    fn overlap_is_containment_either_way() {
        let wide: Net = "10.0.0.0/8".parse().unwrap();
        let narrow: Net = "10.1.2.3".parse().unwrap();
        let other: Net = "192.168.0.0/16".parse().unwrap();
        assert!(wide.overlaps(&narrow) && narrow.overlaps(&wide));
        assert!(!wide.overlaps(&other));
        let json = serde_json::to_string(&wide).unwrap();
        assert_eq!(json, "\"10.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Net>(&json).unwrap(), wide);
    }
}
