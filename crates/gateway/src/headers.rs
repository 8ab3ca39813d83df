//! Header rewriting between client and upstream: hop-by-hop removal, forwarding headers,
//! request ids and W3C trace context.

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
    // One pass to see whether there is anything to do: most requests carry at most
    // `Connection`, and each removal is a hash lookup.
    let mut found = false;
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            found = true;
            break;
        }
    }
    if !found {
        return;
    }
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
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if let Some(te) = headers.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
}

/// The forwarding header parts that depend only on the client connection, computed once per
/// connection instead of once per request.
pub struct ClientForwarding {
    ip: String,
    ip_value: HeaderValue,
    /// `for=<node>;proto=<proto>`
    forwarded_for: String,
    proto: HeaderValue,
}

impl ClientForwarding {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let ip = peer.ip().to_canonical();
        let proto = if tls { "https" } else { "http" };
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        let ip = ip.to_string();
        ClientForwarding {
            ip_value: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
            ip,
            forwarded_for: format!("for={node};proto={proto}"),
            proto: HeaderValue::from_static(proto),
        }
    }
}

/// Adds X-Forwarded-For (appending the client), X-Forwarded-Proto, X-Forwarded-Host and an
/// RFC 7239 Forwarded element for this hop.
pub fn add_forwarding(headers: &mut HeaderMap, client: &ClientForwarding, host: &str) {
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) => {
            let chain = [previous, client.ip.as_str()].join(", ");
            if let Ok(v) = HeaderValue::from_str(&chain) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, client.ip_value.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO, client.proto.clone());
    // The client's own X-Forwarded-Host is replaced: upstreams build links from it.
    match HeaderValue::from_str(host) {
        Ok(v) if !host.is_empty() => {
            headers.insert(X_FORWARDED_HOST, v);
        }
        _ => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    let safe_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',');
    let mut forwarded = String::with_capacity(client.forwarded_for.len() + host.len() + 6);
    forwarded.push_str(&client.forwarded_for);
    if safe_host {
        forwarded.push_str(";host=");
        forwarded.push_str(host);
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
    let mut traceparent = String::with_capacity(55);
    traceparent.push_str("00-");
    let flags = match incoming {
        Some((trace, flags)) => {
            traceparent.push_str(trace);
            flags
        }
        None => {
            push_random_hex(&mut traceparent, 16);
            "01"
        }
    };
    let trace_id = traceparent[3..35].to_owned();
    traceparent.push('-');
    push_random_hex(&mut traceparent, 8);
    traceparent.push('-');
    traceparent.push_str(flags);
    let traceparent = HeaderValue::from_str(&traceparent)
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

/// Appends `bytes` random bytes as lower-case hex, never all zero (W3C ids must not be).
fn push_random_hex(out: &mut String, bytes: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut remaining = bytes;
    while remaining > 0 {
        let chunk = remaining.min(8);
        let value = fastrand::u64(1..);
        for i in (0..chunk * 2).rev() {
            out.push(HEX[((value >> (i * 4)) & 0xf) as usize] as char);
        }
        remaining -= chunk;
    }
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
        let client = ClientForwarding::new("[::ffff:10.0.0.7]:5555".parse().unwrap(), true);
        add_forwarding(&mut h, &client, "api.example.com");
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
