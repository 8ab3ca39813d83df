//! Header rewriting between client and upstream: hop-by-hop removal, forwarding headers,
//! request ids and W3C trace context.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1): `Connection` and every header it
/// names, plus the fixed list. `TE: trailers` survives because gRPC needs it end to end;
/// `Upgrade` survives when `keep_upgrade` (a WebSocket handshake being forwarded).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !(keep_upgrade && name == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::TRANSFER_ENCODING);
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if let Some(te) = headers.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// Adds X-Forwarded-For (appending the client), X-Forwarded-Proto, X-Forwarded-Host and an
/// RFC 7239 Forwarded element for this hop.
pub fn add_forwarding(headers: &mut HeaderMap, peer: SocketAddr, tls: bool, host: &str) {
    let ip = peer.ip().to_canonical();
    let proto = if tls { "https" } else { "http" };
    let mut xff = String::with_capacity(64);
    if let Some(previous) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        xff.push_str(previous);
        xff.push_str(", ");
    }
    let _ = write!(xff, "{ip}");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // The client's own X-Forwarded-Host is replaced: upstreams build links from it.
    match HeaderValue::from_str(host) {
        Ok(v) if !host.is_empty() => {
            headers.insert(X_FORWARDED_HOST, v);
        }
        _ => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    let node = if ip.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    };
    let mut forwarded = format!("for={node};proto={proto}");
    if !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',')
    {
        let _ = write!(forwarded, ";host={host}");
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.append(header::FORWARDED, v);
    }
}

/// The request's identity across hops.
pub struct TraceContext {
    /// The id returned to the client, logged, and sent upstream as X-Request-Id.
    pub request_id: String,
    /// The traceparent to send upstream: the client's trace with this hop as parent.
    pub traceparent: HeaderValue,
}

/// Takes the client's X-Request-Id (if sane) or the trace id of a valid traceparent, else a
/// new random id; continues the client's trace or starts one.
pub fn trace_context(headers: &HeaderMap) -> TraceContext {
    let incoming = headers
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let (trace_id, flags) = match incoming {
        Some((trace, flags)) => (trace.to_owned(), flags.to_owned()),
        None => (random_hex(16), "01".to_owned()),
    };
    let span_id = random_hex(8);
    let traceparent = HeaderValue::from_str(&format!("00-{trace_id}-{span_id}-{flags}"))
        .expect("hex digits and dashes are a valid header value");
    let request_id = headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or(trace_id);
    TraceContext {
        request_id,
        traceparent,
    }
}

fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Validates `00-<32 hex>-<16 hex>-<2 hex>` (W3C Trace Context) and returns the trace id and
/// flags. All-zero ids are invalid.
fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then_some((trace, flags))
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    let mut remaining = bytes;
    while remaining > 0 {
        let chunk = remaining.min(8);
        let value = fastrand::u64(1..);
        let _ = write!(
            out,
            "{:0width$x}",
            value & (u64::MAX >> (64 - chunk * 8)),
            width = chunk * 2
        );
        remaining -= chunk;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_those_named_by_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("300"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-secret") && !h.contains_key("keep-alive"));
        assert!(!h.contains_key(header::CONNECTION) && !h.contains_key(header::UPGRADE));
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarding_appends_the_client_to_an_existing_chain() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        add_forwarding(
            &mut h,
            "[::ffff:10.0.0.7]:5555".parse().unwrap(),
            true,
            "api.example.com",
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 10.0.0.7");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(
            h.get(header::FORWARDED).unwrap(),
            "for=10.0.0.7;proto=https;host=api.example.com"
        );
    }

    #[test]
    fn a_valid_traceparent_keeps_its_trace_and_gets_a_new_parent() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let ctx = trace_context(&h);
        assert_eq!(ctx.request_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let tp = ctx.traceparent.to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        assert!(tp.ends_with("-01"));
    }

    #[test]
    fn invalid_traceparents_and_request_ids_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        h.insert(X_REQUEST_ID, HeaderValue::from_static("<script>"));
        let ctx = trace_context(&h);
        assert_eq!(ctx.request_id.len(), 32);
        assert!(ctx.request_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(parse_traceparent(ctx.traceparent.to_str().unwrap()).is_some());
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(trace_context(&h).request_id, "abc-123");
    }
}
