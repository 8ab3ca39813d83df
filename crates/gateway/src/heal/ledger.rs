//! The client ledger: for each client address and each authenticated identity, how many of
//! its requests were answered cleanly (authenticated or not) and how many had findings, and
//! how many it made in the last decision window; for each address, the client fingerprint of
//! its last request. Self-healing reads it to tell a legitimate client (a good history) from
//! an offender, and to size the traffic a rule would cover (the guardrail).
//!
//! Bounded: at most `max_clients` addresses and identities, in shards each behind its own
//! lock; past the bound new clients are not tracked until idle ones are pruned. The request
//! path reads no clock: the heal task publishes a coarse time and the window number.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use apiguard_heal::{ClientKey, Target, Traffic};

const SHARDS: usize = 16;

#[derive(Debug, Clone, Default)]
struct Entry {
    first_ms: u64,
    last_ms: u64,
    /// Answered below 400 without a scoring finding.
    clean: u64,
    /// Of those, authenticated.
    authenticated: u64,
    /// Requests with a scoring finding (answered, or refused as the event stream tells).
    flagged: u64,
    /// Clean answers before the client was first flagged: its history.
    clean_before_flagged: Option<u64>,
    /// The window `current` counts in; `previous` is the one before it.
    window: u64,
    current: u32,
    previous: u32,
    clean_current: u32,
    clean_previous: u32,
    /// The client fingerprint of the last request (addresses only; 0 when not computed).
    fingerprint: u64,
}

impl Entry {
    /// Moves the counters to `window`.
    fn roll(&mut self, window: u64) {
        if self.window == window {
            return;
        }
        if self.window + 1 == window {
            self.previous = self.current;
            self.clean_previous = self.clean_current;
        } else {
            self.previous = 0;
            self.clean_previous = 0;
        }
        self.current = 0;
        self.clean_current = 0;
        self.window = window;
    }

    /// (requests, clean) in window `w`, which has ended.
    fn in_window(&self, w: u64) -> (u32, u32) {
        if self.window == w {
            (self.current, self.clean_current)
        } else if self.window == w + 1 {
            (self.previous, self.clean_previous)
        } else {
            (0, 0)
        }
    }
}

/// A client in the ledger: an address, or an identity by a 64-bit hash of its subject (no
/// string is stored or allocated per request; a collision would only merge two histories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(u128),
    Identity(u64),
}

/// The ledger; cheap to share.
pub struct Ledger {
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
    per_shard: AtomicUsize,
    enabled: AtomicBool,
    /// The window requests count in now.
    window: AtomicU64,
    /// Coarse time (ms since the epoch), set each window by the heal task.
    now_ms: AtomicU64,
    /// How many clean answers make a good history.
    good_history: AtomicU64,
    /// Hashes identities (keyed per process: an identity chosen to collide with another
    /// cannot be predicted).
    identity_hasher: std::collections::hash_map::RandomState,
}

fn address_bits(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn key(ip: IpAddr) -> Key {
    Key::Address(address_bits(ip))
}

fn shard_of(key: Key) -> usize {
    let folded = match key {
        Key::Address(bits) => (bits as u64) ^ ((bits >> 64) as u64),
        Key::Identity(hash) => hash,
    };
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS
}

impl Ledger {
    pub fn new(max_clients: usize) -> Ledger {
        Ledger {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: AtomicUsize::new(max_clients.div_ceil(SHARDS).max(1)),
            enabled: AtomicBool::new(false),
            window: AtomicU64::new(1),
            now_ms: AtomicU64::new(apiguard_model::event::now_ms()),
            good_history: AtomicU64::new(10),
            identity_hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn identity_key(&self, subject: &str) -> Key {
        Key::Identity(self.identity_hasher.hash_one(subject))
    }

    fn client_key(&self, client: &ClientKey) -> Key {
        match client {
            ClientKey::Address(ip) => key(*ip),
            ClientKey::Identity(subject) => self.identity_key(subject),
        }
    }

    /// Turns recording on or off (off when self-healing is off: the request path then only
    /// reads one flag).
    pub fn set_enabled(&self, enabled: bool, good_history: u64) {
        self.enabled.store(enabled, Ordering::Relaxed);
        self.good_history
            .store(good_history.max(1), Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records one answered request (called on the request path): under its address, and
    /// under its identity when authenticated.
    pub fn observe(
        &self,
        client: IpAddr,
        identity: Option<&str>,
        fingerprint: Option<u64>,
        status: u16,
        flagged: bool,
    ) {
        if !self.is_enabled() {
            return;
        }
        let authenticated = identity.is_some();
        self.record(key(client), fingerprint, status, authenticated, flagged);
        if let Some(subject) = identity {
            self.record(self.identity_key(subject), None, status, true, flagged);
        }
    }

    fn record(
        &self,
        k: Key,
        fingerprint: Option<u64>,
        status: u16,
        authenticated: bool,
        flagged: bool,
    ) {
        let window = self.window.load(Ordering::Relaxed);
        let now = self.now_ms.load(Ordering::Relaxed);
        let mut shard = self.shard(k);
        if !shard.contains_key(&k) && shard.len() >= self.per_shard.load(Ordering::Relaxed) {
            return;
        }
        let entry = shard.entry(k).or_insert_with(|| Entry {
            first_ms: now,
            window,
            ..Entry::default()
        });
        entry.roll(window);
        entry.last_ms = now;
        entry.current = entry.current.saturating_add(1);
        if let Some(fingerprint) = fingerprint {
            entry.fingerprint = fingerprint;
        }
        if flagged {
            entry.flagged += 1;
        } else if status < 400 {
            entry.clean += 1;
            entry.clean_current = entry.clean_current.saturating_add(1);
            if authenticated {
                entry.authenticated += 1;
            }
        }
    }

    /// Notes that `client` had `flagged` requests with findings in window `ended` (from the
    /// event stream, which also sees requests refused before reaching an upstream). Its
    /// history stops at the start of the first window it was flagged in.
    pub fn mark_flagged(&self, client: &ClientKey, ended: u64, flagged: u32) {
        let k = self.client_key(client);
        let mut shard = self.shard(k);
        let Some(e) = shard.get_mut(&k) else {
            return;
        };
        e.flagged += u64::from(flagged);
        if e.clean_before_flagged.is_none() {
            let since = u64::from(e.in_window(ended).1)
                + if e.window > ended {
                    u64::from(e.clean_current)
                } else {
                    0
                };
            e.clean_before_flagged = Some(e.clean.saturating_sub(since));
        }
    }

    /// Ends the current window (the heal task calls it once per tick); returns the window
    /// that ended.
    pub fn advance(&self, now_ms: u64) -> u64 {
        self.now_ms.store(now_ms, Ordering::Relaxed);
        self.window.fetch_add(1, Ordering::Relaxed)
    }

    /// Drops clients not seen for `idle_ms`.
    pub fn prune(&self, now_ms: u64, idle_ms: u64) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, e| now_ms.saturating_sub(e.last_ms) <= idle_ms);
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The client fingerprint of the last request from `ip`, when one was recorded.
    pub fn fingerprint_of(&self, ip: IpAddr) -> Option<u64> {
        let k = key(ip);
        self.shard(k)
            .get(&k)
            .map(|e| e.fingerprint)
            .filter(|f| *f != 0)
    }

    /// Clean answers of `client` in the window that ended.
    pub fn clean_in(&self, client: &ClientKey, window: u64) -> u32 {
        let k = self.client_key(client);
        self.shard(k).get(&k).map_or(0, |e| e.in_window(window).1)
    }

    /// The ledger as the engine's traffic view for window `window`.
    pub fn view(&self, window: u64) -> LedgerView<'_> {
        LedgerView {
            ledger: self,
            window,
        }
    }
}

/// The ledger as seen by one tick of the engine.
pub struct LedgerView<'a> {
    ledger: &'a Ledger,
    window: u64,
}

impl LedgerView<'_> {
    fn requests_of(&self, k: Key) -> u64 {
        self.ledger
            .shard(k)
            .get(&k)
            .map_or(0, |e| u64::from(e.in_window(self.window).0))
    }

    /// Sums the requests of the addresses `covered` accepts (a scan: heal asks once per
    /// planned group rule, never on the request path).
    fn scan(&self, except: &[Key], covered: impl Fn(u128, &Entry) -> bool) -> u64 {
        let mut total = 0u64;
        for shard in &self.ledger.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (k, e) in shard.iter() {
                if let Key::Address(bits) = k
                    && !except.contains(k)
                    && covered(*bits, e)
                {
                    total += u64::from(e.in_window(self.window).0);
                }
            }
        }
        total
    }
}

impl Traffic for LedgerView<'_> {
    /// An identity's requests are counted under it; addresses and fingerprints count every
    /// request from the addresses they cover (an identity among the offenders is not taken
    /// out of a fingerprint's count: the guardrail errs on the side of refusing).
    fn requests_from(&self, target: &Target, except: &[ClientKey]) -> u64 {
        let except: Vec<Key> = except.iter().map(|c| self.ledger.client_key(c)).collect();
        match target {
            Target::Net(net) => {
                if let Some(ip) = net.as_address() {
                    let k = key(ip);
                    return if except.contains(&k) {
                        0
                    } else {
                        self.requests_of(k)
                    };
                }
                self.scan(&except, |bits, _| {
                    net.contains(IpAddr::from(std::net::Ipv6Addr::from(bits)).to_canonical())
                })
            }
            Target::Identity(subject) => {
                let k = self.ledger.identity_key(subject);
                if except.contains(&k) {
                    0
                } else {
                    self.requests_of(k)
                }
            }
            Target::Fingerprint(fingerprint) => {
                self.scan(&except, |_, e| e.fingerprint == *fingerprint)
            }
        }
    }

    fn good_history(&self, client: &ClientKey, before_ms: u64) -> Option<String> {
        let k = self.ledger.client_key(client);
        let needed = self.ledger.good_history.load(Ordering::Relaxed);
        let shard = self.ledger.shard(k);
        let e = shard.get(&k)?;
        let clean = e.clean_before_flagged.unwrap_or(e.clean);
        let enough = clean >= needed || e.authenticated >= needed.div_ceil(5);
        let mostly_clean = e.flagged.saturating_mul(10) <= clean;
        (e.first_ms < before_ms && enough && mostly_clean).then(|| {
            format!(
                "history: {} clean answers ({} authenticated), {} flagged, since {} ms",
                e.clean, e.authenticated, e.flagged, e.first_ms
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiguard_heal::Net;

    #[test]
    fn history_windows_and_bounds() {
        let ledger = Ledger::new(16);
        let alice: IpAddr = "192.0.2.10".parse().unwrap();
        ledger.observe(alice, None, None, 200, false);
        assert!(ledger.is_empty(), "disabled: nothing recorded");
        ledger.set_enabled(true, 5);
        let start = ledger.advance(1_000);
        for _ in 0..10 {
            ledger.observe(alice, None, None, 200, false);
        }
        ledger.observe(alice, None, None, 403, true);
        let ended = ledger.advance(2_000);
        assert_eq!(ended, start + 1);
        let view = ledger.view(ended);
        assert_eq!(
            view.requests_from(&Target::Net(Net::address(alice)), &[]),
            11
        );
        assert_eq!(
            view.requests_from(&"192.0.2.0/24".parse().unwrap(), &[]),
            11
        );
        assert_eq!(
            view.requests_from(&"192.0.2.0/24".parse().unwrap(), &[ClientKey::from(alice)]),
            0
        );
        assert_eq!(ledger.clean_in(&alice.into(), ended), 10);
        assert!(view.good_history(&alice.into(), 5_000).is_some());
        assert!(
            view.good_history(&alice.into(), 500).is_none(),
            "not before it was first seen"
        );
        // A request in the new window does not change the ended one.
        ledger.observe(alice, None, None, 200, false);
        assert_eq!(
            ledger
                .view(ended)
                .requests_from(&Target::Net(Net::address(alice)), &[]),
            11
        );
        // Bounded: one address per shard at most.
        for i in 0..=255u8 {
            ledger.observe(IpAddr::from([10, 0, 0, i]), None, None, 200, false);
        }
        assert!(ledger.len() <= 16, "{}", ledger.len());
        ledger.prune(10_000_000, 1_000);
        assert!(ledger.is_empty());
    }

    #[test]
    fn a_history_ends_where_the_client_first_misbehaved() {
        let ledger = Ledger::new(100);
        ledger.set_enabled(true, 5);
        ledger.advance(1_000);
        let mallory: IpAddr = "192.0.2.66".parse().unwrap();
        ledger.observe(mallory, None, None, 200, false);
        let first = ledger.advance(2_000);
        // The window it attacks in, it also sends clean requests between attacks.
        for _ in 0..20 {
            ledger.observe(mallory, None, None, 200, false);
        }
        let attacked = ledger.advance(3_000);
        assert!(attacked > first);
        ledger.mark_flagged(&mallory.into(), attacked, 10);
        assert!(
            ledger
                .view(attacked)
                .good_history(&mallory.into(), 10_000)
                .is_none(),
            "one clean request before the attack is no history"
        );
    }

    #[test]
    fn authenticated_traffic_counts_for_more() {
        let ledger = Ledger::new(100);
        ledger.set_enabled(true, 10);
        ledger.advance(1_000);
        let bob: IpAddr = "2001:db8::7".parse().unwrap();
        ledger.observe(bob, Some("bob"), None, 200, false);
        ledger.observe(bob, Some("bob"), None, 200, false);
        let w = ledger.advance(5_000);
        assert!(ledger.view(w).good_history(&bob.into(), 10_000).is_some());
    }

    #[test]
    fn identities_have_their_own_history_and_fingerprints_count_across_addresses() {
        let ledger = Ledger::new(100);
        ledger.set_enabled(true, 10);
        ledger.advance(1_000);
        let nat: IpAddr = "198.51.100.20".parse().unwrap();
        let elsewhere: IpAddr = "203.0.113.20".parse().unwrap();
        for _ in 0..10 {
            ledger.observe(nat, Some("bob"), Some(7), 200, false);
        }
        for _ in 0..3 {
            ledger.observe(nat, Some("mallory"), Some(9), 403, true);
        }
        ledger.observe(elsewhere, None, Some(9), 200, false);
        let w = ledger.advance(5_000);
        let view = ledger.view(w);
        let bob = ClientKey::Identity("bob".into());
        let mallory = ClientKey::Identity("mallory".into());
        assert!(view.good_history(&bob, 10_000).is_some());
        assert!(view.good_history(&mallory, 10_000).is_none());
        assert_eq!(view.requests_from(&Target::Identity("bob".into()), &[]), 10);
        assert_eq!(
            view.requests_from(
                &Target::Identity("mallory".into()),
                std::slice::from_ref(&mallory)
            ),
            0,
            "an identity rule covers nobody besides the offender"
        );
        // The NAT's last request carried fingerprint 9, as did the other address.
        assert_eq!(view.requests_from(&Target::Fingerprint(9), &[]), 14);
        assert_eq!(
            view.requests_from(&Target::Fingerprint(9), &[ClientKey::from(nat)]),
            1
        );
        assert_eq!(view.requests_from(&Target::Fingerprint(8), &[]), 0);
    }
}
