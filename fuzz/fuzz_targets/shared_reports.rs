//! What a gateway reads from the hub and the enforcement state parses: canonical threat
//! reports (from a feed that another organisation's input went into), IP prefixes and block
//! targets. None may panic, loop or allocate without bound.
#![no_main]

use apiguard_gateway::enforcement::BlockTarget;
use apiguard_model::threat::{IpPrefix, ThreatReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = ThreatReport::from_json(data) {
        // A report that passed validation serialises and parses back to itself.
        let again = ThreatReport::from_json(&report.to_json()).expect("a valid report round-trips");
        assert_eq!(again, report);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(prefix) = text.parse::<IpPrefix>() {
            let _ = prefix.contains(prefix.addr());
        }
        if let Ok(target) = text.parse::<BlockTarget>() {
            assert_eq!(target.to_string().parse::<BlockTarget>(), Ok(target));
        }
    }
});
