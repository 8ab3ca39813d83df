//! The IP database of continuous verification: which country an address is in. A CSV file of
//! `network,country` lines (`203.0.113.0/24,FR`, `2001:db8::/32,DE`; `#` starts a comment; a
//! first line `network,country` is a header), loaded into sorted ranges.

use std::net::IpAddr;

#[derive(Debug)]
pub struct IpDatabase {
    /// (first, last, country) over IPv6 space (IPv4 as IPv4-mapped), sorted, disjoint.
    ranges: Vec<(u128, u128, [u8; 2])>,
}

fn bits(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn parse_network(text: &str) -> Result<(u128, u128), String> {
    let (address, len) = match text.split_once('/') {
        Some((address, len)) => (address, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = address
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address or network"))?;
    let max: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len {
        Some(len) => len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        None => max,
    };
    let len = if ip.is_ipv4() { len + 96 } else { len };
    let start = bits(ip);
    let host = if len == 128 { 0 } else { u128::MAX >> len };
    if start & host != 0 {
        return Err(format!("`{text}` has host bits set"));
    }
    Ok((start, start | host))
}

impl IpDatabase {
    /// Parses the CSV text; an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split(',').map(str::trim);
            let (Some(network), Some(country)) = (fields.next(), fields.next()) else {
                return Err(format!("line {}: expected `network,country`", number + 1));
            };
            if number == 0 && network.eq_ignore_ascii_case("network") {
                continue;
            }
            let (first, last) =
                parse_network(network).map_err(|e| format!("line {}: {e}", number + 1))?;
            let code = country.as_bytes();
            if code.len() != 2 || !code.iter().all(u8::is_ascii_alphabetic) {
                return Err(format!(
                    "line {}: `{country}` is not a two-letter country code",
                    number + 1
                ));
            }
            ranges.push((
                first,
                last,
                [code[0].to_ascii_uppercase(), code[1].to_ascii_uppercase()],
                number + 1,
            ));
        }
        ranges.sort_by_key(|r| r.0);
        for pair in ranges.windows(2) {
            if pair[1].0 <= pair[0].1 {
                return Err(format!(
                    "line {} overlaps line {}: networks must not overlap",
                    pair[1].3, pair[0].3
                ));
            }
        }
        Ok(IpDatabase {
            ranges: ranges.into_iter().map(|(a, b, c, _)| (a, b, c)).collect(),
        })
    }

    /// The country of `ip` (two upper-case letters), when the database has it.
    pub fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let ip = bits(ip);
        let i = self.ranges.partition_point(|r| r.0 <= ip);
        let (_, last, country) = self.ranges.get(i.checked_sub(1)?)?;
        (ip <= *last).then_some(*country)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}
