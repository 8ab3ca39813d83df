//! Server-side request forgery: URLs (and bare host names) that point inside the network —
//! loopback, private and link-local ranges, cloud metadata endpoints — in any notation an
//! attacker uses to slip past a naive check (decimal `2130706433`, hex `0x7f.1`, octal
//! `0177.0.0.1`, short `127.1`, IPv6 `[::ffff:127.0.0.1]`, `user@host` confusions), and URLs
//! with schemes that reach non-HTTP services (`gopher://`, `dict://`, `file://`, ...).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Match;

/// Schemes that talk to arbitrary TCP services or the local file system.
const DANGEROUS_SCHEMES: &[&str] = &[
    "gopher",
    "dict",
    "file",
    "ldap",
    "ldaps",
    "tftp",
    "jar",
    "netdoc",
    "sftp",
    "ftp",
    "ftps",
    "php",
    "expect",
    "phar",
    "zip",
    "glob",
    "data",
    "local_file",
    "mailto",
    "telnet",
    "ssh2.exec",
    "ogg",
    "rar",
    "compress.zlib",
    "compress.bzip2",
    "zlib",
    "rmi",
    "iiop",
    "corba",
    "nds",
    "nis",
];

/// Host names that resolve inside the network or to a metadata service.
const INTERNAL_HOSTS: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    // The loopback aliases of Red Hat's and Debian's default /etc/hosts.
    "localhost4",
    "localhost4.localdomain4",
    "localhost6",
    "localhost6.localdomain6",
    "ipv6-localhost",
    "ipv6-loopback",
    "metadata",
    "metadata.google.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "host.docker.internal",
    "gateway.docker.internal",
    "kubernetes.docker.internal",
    "metadata.azure.internal",
    // Metadata services addressed by name (Equinix Metal / Packet, Tencent Cloud).
    "metadata.packet.net",
    "metadata.platformequinix.com",
    "metadata.tencentyun.com",
    "169.254.169.254.nip.io",
    "localtest.me",
    "customer1.app.localhost.my.company.127.0.0.1.nip.io",
    "lvh.me",
    "vcap.me",
    "0",
    "burpcollaborator.net",
];

/// Domain suffixes that resolve to internal addresses or to out-of-band callback collectors.
const INTERNAL_SUFFIXES: &[&str] = &[
    ".localhost",
    ".internal",
    ".local",
    ".localdomain",
    ".svc.cluster.local",
    ".nip.io",
    ".xip.io",
    ".sslip.io",
    ".localtest.me",
    ".lvh.me",
    ".burpcollaborator.net",
    ".oastify.com",
    ".oast.me",
    ".oast.pro",
    ".oast.fun",
    ".oast.live",
    ".oast.site",
    ".oast.online",
    ".interact.sh",
    ".dnslog.cn",
    ".requestbin.net",
    ".ceye.io",
];

/// Schemes whose URLs are parsed for their host (browsers and many URL libraries also accept
/// `http:host` and `http:/host` without the two slashes).
const URL_SCHEMES: &[&str] = &["http", "https", "ftp", "ftps", "ws", "wss"];

/// Finds an SSRF target in `input` (decoded).
pub fn find_ssrf(input: &str) -> Option<Match> {
    // Ideographic and full-width full stops separate host labels too.
    let mut lower = input.to_ascii_lowercase();
    if !lower.is_ascii() {
        lower = lower.replace(['\u{3002}', '\u{ff0e}', '\u{ff61}'], ".");
    }
    let mut search = 0;
    while let Some(pos) = lower[search..].find(':') {
        let colon = search + pos;
        search = colon + 1;
        let scheme_start = lower[..colon]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-' | '_')))
            // The scheme starts after that character, which may be several bytes long.
            .map_or(0, |(p, c)| p + c.len_utf8());
        let scheme = &lower[scheme_start..colon];
        let rest = &lower[colon + 1..];
        let slashes = rest.len() - rest.trim_start_matches(['/', '\\']).len();
        if scheme.is_empty() || (slashes < 2 && !URL_SCHEMES.contains(&scheme)) {
            continue;
        }
        let authority_start = colon + 1 + slashes;
        let authority_end = lower[authority_start..]
            .find(['/', '?'])
            .map_or(lower.len(), |p| authority_start + p);
        // Backslashes inside a host (`\l\o\c\a\l\h\o\s\t`) are dropped by lenient parsers.
        let authority = lower[authority_start..authority_end].replace('\\', "");
        let end = (authority_end + 8).min(input.len());
        let start = scheme_start.min(input.len());
        if slashes >= 2 && DANGEROUS_SCHEMES.contains(&scheme) {
            return Some(Match {
                reason: "URL with a dangerous scheme",
                start,
                end,
            });
        }
        if (URL_SCHEMES.contains(&scheme) || slashes >= 2) && authority_is_internal(&authority) {
            return Some(Match {
                reason: "URL to an internal address",
                start,
                end,
            });
        }
    }
    // A bare host the application may turn into a URL (`url=localhost/`, `host=169.254.169.254`).
    let trimmed = lower.trim();
    if let Some(host_end) = bare_host_end(trimmed)
        && authority_is_internal(&trimmed[..host_end])
    {
        return Some(Match {
            reason: "internal host",
            start: 0,
            end: host_end.min(input.len()),
        });
    }
    None
}

/// Where the host ends in `trimmed` (a trimmed value) when the value has the shape of a bare
/// host: one token without `@` (before any `/`, `?`, `#`) that looks like a host rather than
/// a version number or a price (a letter, a `[`, or dotted and followed by a path) and is
/// followed by a path or contains a dot.
fn bare_host_end(trimmed: &str) -> Option<usize> {
    let host_end = trimmed.find(['/', '?', '#']).unwrap_or(trimmed.len());
    let candidate = &trimmed[..host_end];
    let followed = host_end < trimmed.len();
    let dotted = candidate.contains('.');
    let looks_like_host = candidate.contains(|c: char| c.is_ascii_alphabetic())
        || candidate.starts_with('[')
        || dotted && followed;
    (!candidate.is_empty()
        && !candidate.contains(char::is_whitespace)
        && !candidate.contains('@')
        && looks_like_host
        && (followed || dotted))
        .then_some(host_end)
}

/// Whether `input` has the shape the bare-host branch of [`find_ssrf`] needs (see
/// [`bare_host_end`]; ASCII case and the folding of full stops do not change it).
pub(crate) fn bare_host_shape(input: &str) -> bool {
    bare_host_end(input.trim()).is_some()
}

/// Whether any host named in an authority (`user:pass@host:port`, and the confusions a parser
/// may resolve differently: every `@`-separated piece) is internal.
fn authority_is_internal(authority: &str) -> bool {
    authority
        .split('@')
        .flat_map(|piece| piece.split([' ', '#', '&']))
        .filter(|piece| !piece.is_empty())
        .any(|piece| host_is_internal(strip_port(piece)))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// Whether `host` (lowercase, no port) is an internal name or address.
pub(crate) fn host_is_internal(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return false;
    }
    if INTERNAL_HOSTS.contains(&host) || INTERNAL_SUFFIXES.iter().any(|s| host.ends_with(s)) {
        return true;
    }
    if let Some(v4) = parse_ipv4_loose(host) {
        return ipv4_is_internal(v4);
    }
    let v6_text = host.split('%').next().unwrap_or(host);
    if let Ok(v6) = v6_text.parse::<Ipv6Addr>() {
        return ipv6_is_internal(v6);
    }
    false
}

/// Parses the forms `inet_aton` accepts: 1 to 4 parts, each decimal, octal (`0` prefix) or hex
/// (`0x` prefix), the last part filling the remaining bytes.
pub(crate) fn parse_ipv4_loose(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    if parts.len() == 1 {
        // Some resolvers keep only the low 32 bits of an oversized number
        // (`7147006462`, `0x41414141a9fea9fe`).
        let part = parts[0];
        let wide = match part.strip_prefix("0x") {
            Some(hex)
                if !hex.is_empty()
                    && hex.len() <= 32
                    && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                u128::from_str_radix(hex, 16).ok()
            }
            // A leading zero makes the number octal, as in every other part
            // (`017700000001` is 127.0.0.1).
            None if part.len() > 1
                && part.len() <= 43
                && part.starts_with('0')
                && part.bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
            {
                u128::from_str_radix(&part[1..], 8).ok()
            }
            None if !part.is_empty()
                && part.len() <= 38
                && part.bytes().all(|b| b.is_ascii_digit()) =>
            {
                part.parse::<u128>().ok()
            }
            _ => None,
        }?;
        return Some(Ipv4Addr::from((wide & 0xffff_ffff) as u32));
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        values.push(parse_number(part)?);
    }
    let last = *values.last()?;
    let leading = &values[..values.len() - 1];
    if leading.iter().any(|&v| v > 255) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if last_bits < 32 && last >= 1u64 << last_bits {
        return None;
    }
    if last > u64::from(u32::MAX) {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, &v) in leading.iter().enumerate() {
        addr |= (v as u32) << (24 - 8 * i as u32);
    }
    addr |= last as u32;
    Some(Ipv4Addr::from(addr))
}

fn parse_number(part: &str) -> Option<u64> {
    if part.is_empty() || part.len() > 12 {
        return None;
    }
    if let Some(hex) = part.strip_prefix("0x") {
        return if hex.is_empty() {
            Some(0)
        } else {
            u64::from_str_radix(hex, 16).ok()
        };
    }
    if part.len() > 1 && part.starts_with('0') {
        return u64::from_str_radix(&part[1..], 8).ok();
    }
    part.parse().ok()
}

fn ipv4_is_internal(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT, Alibaba metadata 100.100.100.200
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || o[0] == 0
}

fn ipv6_is_internal(ip: Ipv6Addr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let seg = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses.
    if let Some(v4) = ip.to_ipv4()
        && ipv4_is_internal(v4)
    {
        return true;
    }
    // 6to4 (2002:AABB:CCDD::/48) carries the IPv4 address it tunnels to.
    if seg[0] == 0x2002
        && ipv4_is_internal(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ))
    {
        return true;
    }
    (seg[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 is AWS metadata)
        || (seg[0] & 0xffc0) == 0xfe80 // link local
        || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64 of an internal address
        // Outside 2000::/3, the only space allocated for global unicast, an address is
        // reserved, multicast or one of the special forms above: never a public server.
        || ((seg[0] & 0xe000) != 0x2000 && ip.to_ipv4().is_none())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_multi_byte_character_before_a_scheme_does_not_panic() {
        // Found by the `engine` fuzz target.
        assert!(super::find_ssrf("abɢ:x").is_none());
        assert!(super::find_ssrf("ɢhttp://127.0.0.1/").is_some());
    }

    use super::*;

    #[test]
    fn detects_internal_targets() {
        for attack in [
            "http://127.0.0.1/admin",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://169.16689662/",
            "http://[::ffff:127.0.0.1]/",
            "http://[0:0:0:0:0:ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://google.com:80 &@google.com:80# @127.88.23.245:22/",
            "gopher://localhost:6379/_FLUSHALL",
            "file:///etc/passwd",
            "http://2852039166/",
            "localhost.localdomain/",
            "kubernetes.docker.internal/",
            "http://[fd00:ec2::254]/latest/",
            // Reserved IPv6 space (outside 2000::/3) and a 6to4 address of 127.0.0.1.
            "http://[a::]/",
            "http://[a::b]/",
            "http://[dead:beef:dead::beef:dead:beef:dead]/",
            "http://[2002:7f00:1::]/",
            // A single-part octal number is 127.0.0.1 to inet_aton.
            "rtmp://017700000001",
            "http://017700000001/",
            // /etc/hosts loopback aliases and named metadata services.
            "localhost4/",
            "localhost4.localdomain4/",
            "ipv6-localhost/",
            "https://metadata.packet.net/userdata",
        ] {
            assert!(find_ssrf(attack).is_some(), "missed: {attack}");
        }
    }

    #[test]
    fn passes_public_urls() {
        for benign in [
            "https://example.com/callback",
            "see https://docs.rs/regex for details",
            "http://8.8.8.8/",
            "http://[2001:4860:4860::8888]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[2002:808:808::1]/",
            "order 0123456",
            "https://example.com/files/007/",
            "version 1.2.3",
            "10.5",
            "price 127.10",
            "https://shop.example.com/products?version=premium&option=deluxe",
        ] {
            assert!(find_ssrf(benign).is_none(), "false positive: {benign}");
        }
    }
}
