//! The policy crate's parsers of untrusted bytes, on requests validated against the sample
//! API's OpenAPI specification: path normalisation (which must agree with the gateway's
//! router: what is validated is what is forwarded), percent-decoding, parameter and body
//! coercion, and the GraphQL operation scanner authorisation uses. The specification
//! parser (operator input, reloaded while serving) gets the raw bytes too. None may panic,
//! loop or allocate without bound.
#![no_main]

use std::sync::{Arc, OnceLock};

use apiguard_model::{ClientInfo, RequestContext, RequestView, Stage};
use apiguard_policy::authz::graphql_operations;
use apiguard_policy::openapi::{
    OpenApiMode, OpenApiStage, Spec, UnknownEndpoints, normalize_path, percent_decode,
};
use libfuzzer_sys::fuzz_target;

fn stage() -> &'static OpenApiStage {
    static STAGE: OnceLock<OpenApiStage> = OnceLock::new();
    STAGE.get_or_init(|| OpenApiStage {
        spec: Arc::new(
            Spec::parse(include_str!("../../examples/sampleapi.openapi.yaml"), None).unwrap(),
        ),
        mode: OpenApiMode::Enforce,
        unknown: UnknownEndpoints::Block,
        body_limit: 4096,
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Spec::parse(&text, None);
    let _ = percent_decode(&text, true);
    if text.starts_with('/') {
        assert_eq!(
            normalize_path(&text),
            apiguard_gateway::router::normalize_path(&text)
        );
    }
    // method \n target \n content-type \n body
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or("GET");
    let target = parts.next().unwrap_or("/");
    let content_type = parts.next().unwrap_or("application/json");
    let body = bytes::Bytes::from(parts.next().unwrap_or("").to_owned());
    let (Ok(method), Ok(uri)) = (method.parse::<http::Method>(), target.parse::<http::Uri>())
    else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, value.clone());
        headers.insert(http::header::COOKIE, value);
    }
    let client = ClientInfo {
        peer: "127.0.0.1:1".parse().unwrap(),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    };
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: http::Version::HTTP_11,
        headers: &headers,
        client: &client,
        route: "api",
        request_id: "fuzz",
        body: Some(&body),
    };
    let _ = stage().inspect(&view, &mut RequestContext::default());
    let _ = graphql_operations(&view);
});
