//! The gateway's parsers of untrusted bytes: trace context and request ids from headers, path
//! normalisation and host extraction (client input), and the configuration parser (operator
//! input, reloaded while serving). None may panic, loop or allocate without bound.
#![no_main]

use apiguard_gateway::{headers, load, router};
use http::{HeaderMap, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut map = HeaderMap::new();
        map.insert(headers::TRACEPARENT, value.clone());
        map.insert(headers::X_REQUEST_ID, value.clone());
        map.insert(http::header::HOST, value);
        let context = headers::trace_context(&map);
        assert!(context.request_id.len() <= 128);
        let _ = router::request_host(&Uri::from_static("/"), &map);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let normalized = router::normalize_path(text);
        assert!(normalized.len() <= text.len() + 1);
        assert!(!normalized.contains("/../") && !normalized.contains("//") || !text.starts_with('/'));
        let _ = load::parse_config(text);
    }
});
