//! Feed answers awaiting their confirmation (`GET /v1/feed`): the items of an answer stay
//! unacknowledged on the bus, held by a *lease*, until the participant confirms the answer
//! by its token. A lease not confirmed in time (the answer was lost, the client crashed
//! before it was done) is released and its items are delivered again. The registry is the
//! same for both buses; what a lease holds (a broker channel with unacknowledged
//! deliveries, or the items themselves) is the bus's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Most unconfirmed answers one participant may hold; past it the oldest is released.
pub const MAX_LEASES_PER_PARTICIPANT: usize = 16;
/// Most unconfirmed answers in all (a broker lease holds a channel).
pub const MAX_LEASES: usize = 1024;

/// How a feed call confirms earlier answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// The call names no `ack`: it confirms every answer the participant received from
    /// earlier calls without `ack` (a client reading one answer at a time asks again only
    /// when it is done), and its own answer is confirmed the same way.
    Implicit,
    /// The call takes part in the protocol: it confirms the answer with this token, if any,
    /// and its own answer waits for its token.
    Explicit(Option<String>),
}

struct Lease<H> {
    participant: String,
    implicit: bool,
    expires: Instant,
    created: Instant,
    handle: H,
}

/// Outstanding leases by token.
pub struct Leases<H> {
    leases: Mutex<HashMap<String, Lease<H>>>,
    ttl: Duration,
}

impl<H> Leases<H> {
    /// A registry whose leases last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            leases: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease<H>>> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether another lease may be taken now (the global bound).
    pub fn has_room(&self) -> bool {
        self.lock().len() < MAX_LEASES
    }

    /// Registers a lease; answers its token and the leases it pushed out (the
    /// participant's oldest past [`MAX_LEASES_PER_PARTICIPANT`]), to release.
    pub fn insert(&self, participant: &str, implicit: bool, handle: H) -> (String, Vec<H>) {
        let token = Uuid::now_v7().simple().to_string();
        let now = Instant::now();
        let mut leases = self.lock();
        let mut own: Vec<(Instant, String)> = leases
            .iter()
            .filter(|(_, l)| l.participant == participant)
            .map(|(t, l)| (l.created, t.clone()))
            .collect();
        let mut evicted = Vec::new();
        if own.len() >= MAX_LEASES_PER_PARTICIPANT {
            own.sort();
            for (_, old) in own.iter().take(own.len() + 1 - MAX_LEASES_PER_PARTICIPANT) {
                if let Some(lease) = leases.remove(old) {
                    evicted.push(lease.handle);
                }
            }
        }
        leases.insert(
            token.clone(),
            Lease {
                participant: participant.to_owned(),
                implicit,
                expires: now + self.ttl,
                created: now,
                handle,
            },
        );
        (token, evicted)
    }

    /// Takes the lease `token` if it is the participant's.
    pub fn take(&self, participant: &str, token: &str) -> Option<H> {
        let mut leases = self.lock();
        if leases.get(token)?.participant != participant {
            return None;
        }
        leases.remove(token).map(|l| l.handle)
    }

    /// Takes the participant's leases of calls without `ack`, oldest first.
    pub fn take_implicit(&self, participant: &str) -> Vec<H> {
        self.take_where(|l| l.implicit && l.participant == participant)
    }

    /// Takes the leases whose time is up, oldest first.
    pub fn take_expired(&self) -> Vec<H> {
        let now = Instant::now();
        self.take_where(|l| l.expires <= now)
    }

    /// Takes every lease.
    pub fn take_all(&self) -> Vec<H> {
        self.take_where(|_| true)
    }

    fn take_where(&self, keep: impl Fn(&Lease<H>) -> bool) -> Vec<H> {
        let mut leases = self.lock();
        let mut tokens: Vec<(Instant, String)> = leases
            .iter()
            .filter(|(_, l)| keep(l))
            .map(|(t, l)| (l.created, t.clone()))
            .collect();
        tokens.sort();
        tokens
            .into_iter()
            .filter_map(|(_, t)| leases.remove(&t).map(|l| l.handle))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_only_by_its_participant_and_only_once() {
        let leases = Leases::new(Duration::from_secs(30));
        let (token, evicted) = leases.insert("alpha", false, 1);
        assert!(evicted.is_empty());
        assert_eq!(leases.take("beta", &token), None);
        assert_eq!(leases.take("alpha", &token), Some(1));
        assert_eq!(leases.take("alpha", &token), None);
        assert_eq!(leases.take("alpha", "nonsense"), None);
    }

    #[test]
    fn implicit_leases_are_confirmed_by_the_next_implicit_call_only() {
        let leases = Leases::new(Duration::from_secs(30));
        leases.insert("alpha", true, 1);
        let (explicit, _) = leases.insert("alpha", false, 2);
        leases.insert("beta", true, 3);
        assert_eq!(leases.take_implicit("alpha"), vec![1]);
        assert_eq!(leases.take_implicit("alpha"), Vec::<i32>::new());
        assert_eq!(leases.take("alpha", &explicit), Some(2));
        assert_eq!(leases.take_all(), vec![3]);
    }

    #[test]
    fn leases_expire_and_a_participant_holds_a_bounded_number() {
        let leases = Leases::new(Duration::ZERO);
        leases.insert("alpha", false, 1);
        assert_eq!(leases.take_expired(), vec![1]);
        let leases = Leases::new(Duration::from_secs(30));
        let mut evicted = Vec::new();
        for n in 0..MAX_LEASES_PER_PARTICIPANT + 2 {
            evicted.extend(leases.insert("alpha", false, n).1);
        }
        assert_eq!(evicted, vec![0, 1], "the oldest are pushed out");
        assert!(leases.take_expired().is_empty());
    }
}
