//! Response inspection over untrusted upstream bodies: the pattern scan, the JSON walker and
//! masking. Nothing may panic or grow without bound, and masking a valid JSON document must
//! give a valid JSON document.
#![no_main]

use apiguard_policy::response::{BodyKind, DetectorSet, ResponseScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scanner = ResponseScanner::new(DetectorSet::all());
    let text = scanner.scan(data, BodyKind::Text, true);
    assert_eq!(text.masked.is_some(), !text.is_clean());
    let json = scanner.scan(data, BodyKind::Json, true);
    if let Some(masked) = &json.masked
        && serde_json::from_slice::<serde_json::Value>(data).is_ok()
    {
        serde_json::from_slice::<serde_json::Value>(masked)
            .expect("a masked JSON document is still JSON");
    }
});
