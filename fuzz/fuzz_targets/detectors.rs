//! Every tokenizer-based detector: no panic, evidence ranges inside the input.
#![no_main]

use apiguard_detect::internals::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for found in [
        is_sql_injection(&text),
        is_xss(&text),
        is_command_injection(&text),
        find_ssrf(&text),
        is_ldap_injection(&text),
    ]
    .into_iter()
    .flatten()
    {
        assert!(found.start <= found.end && found.end <= text.len());
    }
});
