//! The GraphQL stage's parsers and limits walker over untrusted bytes: the request body
//! reader (JSON, batches, `application/graphql`, GET query strings), the pre-scan, the parser
//! and the walker (depth, aliases, fragments, cost), and the response suggestion stripper.
//! None may panic, loop, recurse without bound or allocate without bound.
#![no_main]

use apiguard_policy::graphql::{
    GraphqlLimits, GraphqlSettings, GraphqlStage, MAX_NESTING, from_get, from_post,
    scan_document, strip_suggestions,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let stage = GraphqlStage::new(GraphqlSettings {
        limits: GraphqlLimits {
            max_depth: 60,
            max_aliases: u64::MAX,
            max_root_fields: u64::MAX,
            max_tokens: 100_000,
            max_document_bytes: usize::MAX,
            max_cost: None,
            ..GraphqlLimits::default()
        },
        production: true,
        ..GraphqlSettings::default()
    });
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(scan) = scan_document(text, 100_000) {
            assert!(scan.nesting <= MAX_NESTING);
            assert!(scan.tokens <= text.len());
        }
        let _ = stage.measure_document(text, None, None);
        let _ = stage.measure_document(text, Some("Q"), None);
        let _ = from_get(Some(text));
    }
    if let Ok((requests, _)) = from_post(Some("application/json"), data) {
        for request in requests {
            if let Some(query) = &request.query {
                let _ = stage.measure_document(
                    query,
                    request.operation_name.as_deref(),
                    request.variables.as_ref(),
                );
            }
        }
    }
    if let Some(stripped) = strip_suggestions(data) {
        assert!(!String::from_utf8_lossy(&stripped).contains("Did you mean"));
    }
});
