//! The whole engine on a request assembled from the input: method, target, headers, body.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use apiguard_detect::{Engine, EngineConfig};
use apiguard_model::{ClientInfo, RequestView};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use libfuzzer_sys::fuzz_target;

static ENGINE: OnceLock<Engine> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let engine = ENGINE.get_or_init(|| {
        Engine::new(
            EngineConfig {
                paranoia: 4,
                ..EngineConfig::default()
            },
            &[],
        )
        .unwrap()
    });
    // Layout: method \n uri \n (name: value \n)* \n body
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let (Some(method), Some(uri), rest) = (lines.next(), lines.next(), lines.next().unwrap_or(&[]))
    else {
        return;
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(uri) else { return };
    let split = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(rest.len());
    let mut headers = HeaderMap::new();
    for line in rest[..split].split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    let body = Bytes::copy_from_slice(rest.get(split + 2..).unwrap_or(&[]));
    let client = ClientInfo {
        peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: vec![],
    };
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &headers,
        client: &client,
        route: "fuzz",
        request_id: "fuzz",
        body: Some(&body),
    };
    let verdict = engine.inspect(&view);
    assert_eq!(
        verdict.score,
        verdict.findings.iter().map(|f| f.score).sum::<u32>()
    );
});
