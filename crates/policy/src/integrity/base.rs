//! The signature base of RFC 9421 section 2.5: one line per covered component, then the
//! `@signature-params` line. The values are derived from the request as the client sent it
//! (before the gateway normalises the path or adds forwarding headers).

use apiguard_model::RequestView;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::headers::{ComponentId, SignatureEntry};

/// Why a covered component has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentError {
    /// A derived component or parameter this verifier does not implement (`@query-param`,
    /// `;sf`, `;key`, `;req`, `;tr`), or one that does not apply to requests (`@status`).
    Unsupported(String),
    /// The component is not in the request (a covered header field that is absent).
    Absent(String),
    /// A field name with upper-case letters (RFC 9421 wants them lower case).
    Malformed(String),
}

/// The derived components this verifier implements.
pub const DERIVED: [&str; 6] = [
    "@method",
    "@target-uri",
    "@authority",
    "@scheme",
    "@request-target",
    "@path",
];

/// Also derived, listed apart because `DERIVED` is used for config checks too.
pub const QUERY: &str = "@query";

/// Whether `name` is a derived component this verifier can build.
pub fn is_supported_derived(name: &str) -> bool {
    DERIVED.contains(&name) || name == QUERY
}

/// The signature base of `entry` for `request`.
pub fn signature_base(
    entry: &SignatureEntry,
    request: &RequestView<'_>,
) -> Result<Vec<u8>, ComponentError> {
    let mut base = Vec::with_capacity(256);
    for component in &entry.components {
        base.extend_from_slice(component.serialized.as_bytes());
        base.extend_from_slice(b": ");
        component_value(component, request, &mut base)?;
        base.push(b'\n');
    }
    base.extend_from_slice(b"\"@signature-params\": ");
    base.extend_from_slice(entry.params_line.as_bytes());
    Ok(base)
}

fn scheme(request: &RequestView<'_>) -> &'static str {
    if request.client.tls { "https" } else { "http" }
}

/// `@authority`: the host and port the request was sent to, lower case, without the
/// scheme's default port (RFC 9421 section 2.2.3).
fn authority(request: &RequestView<'_>) -> String {
    let raw = request
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            request
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let mut authority = raw.trim().to_ascii_lowercase();
    let default_port = if request.client.tls { ":443" } else { ":80" };
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    authority
}

fn path<'a>(request: &RequestView<'a>) -> &'a str {
    match request.uri.path() {
        "" => "/",
        path => path,
    }
}

fn component_value(
    component: &ComponentId,
    request: &RequestView<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ComponentError> {
    let name = component.name.as_str();
    if name.starts_with('@') {
        if !component.params.is_empty() || !is_supported_derived(name) {
            return Err(ComponentError::Unsupported(component.serialized.clone()));
        }
        match name {
            "@method" => out.extend_from_slice(request.method.as_str().as_bytes()),
            "@scheme" => out.extend_from_slice(scheme(request).as_bytes()),
            "@authority" => out.extend_from_slice(authority(request).as_bytes()),
            "@path" => out.extend_from_slice(path(request).as_bytes()),
            "@query" => {
                out.push(b'?');
                if let Some(query) = request.uri.query() {
                    out.extend_from_slice(query.as_bytes());
                }
            }
            "@request-target" => {
                out.extend_from_slice(path(request).as_bytes());
                if let Some(query) = request.uri.query() {
                    out.push(b'?');
                    out.extend_from_slice(query.as_bytes());
                }
            }
            "@target-uri" => {
                out.extend_from_slice(scheme(request).as_bytes());
                out.extend_from_slice(b"://");
                out.extend_from_slice(authority(request).as_bytes());
                out.extend_from_slice(path(request).as_bytes());
                if let Some(query) = request.uri.query() {
                    out.push(b'?');
                    out.extend_from_slice(query.as_bytes());
                }
            }
            _ => return Err(ComponentError::Unsupported(component.serialized.clone())),
        }
        return Ok(());
    }
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ComponentError::Malformed(component.serialized.clone()));
    }
    let byte_sequences = match component.params.as_slice() {
        [] => false,
        [(key, value)] if key == "bs" && value.as_boolean() == Some(true) => true,
        _ => return Err(ComponentError::Unsupported(component.serialized.clone())),
    };
    let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
        return Err(ComponentError::Absent(component.serialized.clone()));
    };
    let mut lines = request.headers.get_all(&header).iter().peekable();
    if lines.peek().is_none() {
        return Err(ComponentError::Absent(component.serialized.clone()));
    }
    // Section 2.1: each field line's value trimmed, joined with ", " (or, with `bs`, each
    // line wrapped as a byte sequence).
    let mut first = true;
    for line in lines {
        if !first {
            out.extend_from_slice(b", ");
        }
        first = false;
        let value = line.as_bytes().trim_ascii();
        if byte_sequences {
            out.push(b':');
            out.extend_from_slice(STANDARD.encode(value).as_bytes());
            out.push(b':');
        } else {
            out.extend_from_slice(value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::headers::parse_signatures;
    use super::*;
    use apiguard_model::ClientInfo;
    use http::{HeaderMap, HeaderValue, Method, Uri, Version};

    fn client(tls: bool) -> ClientInfo {
        ClientInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            tls,
            client_cert_subject: None,
            client_cert_sans: Vec::new(),
        }
    }

    /// RFC 9421 appendix B.2.6 builds this base from the test request of B.2.
    #[test]
    fn builds_the_rfc_9421_ed25519_example_base() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.insert(
            "date",
            HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from_static("18"));
        let method = Method::POST;
        let uri = Uri::from_static("/foo?param=Value&Pet=dog");
        let client = client(true);
        let view = RequestView {
            method: &method,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            client: &client,
            route: "r",
            request_id: "t",
            body: None,
        };
        let entries = parse_signatures(
            br#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
            b"sig-b26=:AAAA:",
        )
        .unwrap();
        let base = signature_base(&entries[0], &view).unwrap();
        let expected = concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@method\": POST\n",
            "\"@path\": /foo\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"content-length\": 18\n",
            "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\""
        );
        assert_eq!(String::from_utf8(base).unwrap(), expected);
    }

    #[test]
    fn derived_components_and_field_lines() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("API.Example.com:80"));
        headers.append("x-list", HeaderValue::from_static(" a "));
        headers.append("x-list", HeaderValue::from_static("b"));
        let method = Method::GET;
        let uri = Uri::from_static("/p/q?x=1");
        let client = client(false);
        let view = RequestView {
            method: &method,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            client: &client,
            route: "r",
            request_id: "t",
            body: None,
        };
        let entries = parse_signatures(
            br#"s=("@target-uri" "@scheme" "@request-target" "@query" "x-list" "x-list";bs)"#,
            b"s=:AAAA:",
        )
        .unwrap();
        let base = String::from_utf8(signature_base(&entries[0], &view).unwrap()).unwrap();
        let lines: Vec<&str> = base.lines().collect();
        assert_eq!(lines[0], "\"@target-uri\": http://api.example.com/p/q?x=1");
        assert_eq!(lines[1], "\"@scheme\": http");
        assert_eq!(lines[2], "\"@request-target\": /p/q?x=1");
        assert_eq!(lines[3], "\"@query\": ?x=1");
        assert_eq!(lines[4], "\"x-list\": a, b");
        assert_eq!(lines[5], "\"x-list\";bs: :YQ==:, :Yg==:");

        for (input, expected) in [
            (&br#"s=("@query-param";name="x")"#[..], "unsupported"),
            (&br#"s=("@status")"#[..], "unsupported"),
            (&br#"s=("x-list";sf)"#[..], "unsupported"),
            (&br#"s=("x-missing")"#[..], "absent"),
            (&br#"s=("X-List")"#[..], "malformed"),
        ] {
            let entries = parse_signatures(input, b"s=:AAAA:").unwrap();
            let error = signature_base(&entries[0], &view).unwrap_err();
            let kind = match error {
                ComponentError::Unsupported(_) => "unsupported",
                ComponentError::Absent(_) => "absent",
                ComponentError::Malformed(_) => "malformed",
            };
            assert_eq!(kind, expected, "{}", String::from_utf8_lossy(input));
        }
    }
}
