//! Every body and header parser: no panic, no unbounded output.
#![no_main]

use apiguard_detect::internals::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match selector % 6 {
        0 => {
            let (pairs, _) = parse_urlencoded(&text, 64);
            assert!(pairs.len() <= 64);
        }
        1 => {
            let _ = parse_cookies(&text);
        }
        2 => {
            let mut items = 0usize;
            let walked = walk_json(&text, 16, 256, &mut |_, path, _| {
                assert!(path.starts_with('$'));
                items += 1;
            });
            assert!(items <= 256);
            // The scanner accepts exactly the JSON serde_json accepts, but for serde_json's
            // own limits (nesting, number range) and lone surrogates (kept as U+FFFD).
            let serde = serde_json::from_str::<serde_json::Value>(&text);
            match (walked, serde) {
                (Err(JsonIssue::Invalid), Ok(_)) => panic!("valid JSON refused: {text:?}"),
                (Ok(()) | Err(JsonIssue::TooDeep | JsonIssue::TooMany), Err(e)) => {
                    let why = e.to_string();
                    assert!(
                        why.contains("recursion limit")
                            || why.contains("number out of range")
                            || why.contains("surrogate")
                            || why.contains("hex escape"),
                        "invalid JSON accepted ({why}): {text:?}"
                    );
                }
                _ => {}
            }
        }
        3 => {
            // First line is the boundary, the rest the body.
            let (boundary, body) =
                rest.split_at(rest.iter().position(|&b| b == b'\n').unwrap_or(0));
            let (parts, _) = parse_multipart(body, &String::from_utf8_lossy(boundary), 32);
            assert!(parts.len() <= 32);
        }
        4 => {
            let (items, _) = parse_xml(&text, 16, 256);
            assert!(items.len() <= 256 + 8);
        }
        _ => {
            let info = parse_graphql_document(&text, 1024);
            assert!(info.arguments.len() <= 1024);
        }
    }
});
