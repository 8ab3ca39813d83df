//! Every normalisation step: no panic, bounded growth.
#![no_main]

use apiguard_detect::internals::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let limit = text.len() * 4 + 16;
    assert!(percent_decode(&text, true).len() <= limit);
    assert!(decode_entities(&text).len() <= limit);
    assert!(decode_js_escapes(&text).len() <= limit);
    let _ = fold_unicode(&text);
    let _ = decode_base64_text(&text);
    assert!(normalize_shell(&text).len() <= limit);
    assert!(normalize_path(&text).len() <= limit);
    assert!(resolve_lookups(&text).len() <= limit);
    let _ = decode(&text);
});
