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
            let _ = walk_json(&text, 16, 256, &mut |_, _, _| items += 1);
            assert!(items <= 256);
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
