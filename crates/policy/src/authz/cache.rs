//! Cedar decisions remembered by a route's authorisation stage.
//!
//! Building a Cedar request (the identity as an entity with its claims, the context record)
//! and evaluating the policies costs tens of microseconds; the requests of one client mostly
//! ask the same question again. A decision is a function of the policy set, the route, the
//! principal (subject, method, declared claims), the action (the HTTP method) and the context
//! attributes the policies read: the stage keeps one cache per route, built with the stage,
//! so a reload (a new policy set, new stages) starts empty, and the key holds exactly the
//! inputs the decision depends on.
//!
//! - The key stores every input in full and an entry is used only when all of them are equal
//!   to the request's: the hash picks the slot, equality decides, so a collision can only
//!   cost a miss, never return another request's decision.
//! - Context attributes no policy reads are left out of the key (see [`ContextReads`]), so a
//!   policy set that never reads `context.time` or `context.client_ip` shares one entry
//!   across seconds and addresses. One that reads the time keys by the second, which is the
//!   resolution of `context.time` itself: still exact.
//! - Just-in-time grants are not part of what is cached: the stage consults them after a
//!   cached default deny, on every request, so a grant and its expiry take effect at once.
//! - Requests whose Cedar request could not be built are not cached.
//! - Bounded: `SHARDS` shards of two generations of at most `per_generation` entries. When a
//!   shard's current generation is full it becomes the previous one (the older previous is
//!   dropped); an entry found in the previous generation moves back to the current one. That
//!   keeps the recently used entries, like an LRU, with O(1) work per request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use apiguard_model::{AuthMethod, Identity};
use serde_json::Value;

use super::graphql::GraphQlOperations;

/// The context attributes some policy reads. An attribute no policy reads cannot change a
/// decision, so it is left out of the cache key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextReads {
    pub method: bool,
    pub path: bool,
    pub host: bool,
    pub client_ip: bool,
    pub tls: bool,
    pub time: bool,
    pub risk_score: bool,
    pub reputation: bool,
    pub grpc_method: bool,
    pub graphql: bool,
}

impl ContextReads {
    /// Every attribute: what is assumed when a policy uses `context` other than by reading
    /// a named attribute of it.
    pub(crate) const ALL: ContextReads = ContextReads {
        method: true,
        path: true,
        host: true,
        client_ip: true,
        tls: true,
        time: true,
        risk_score: true,
        reputation: true,
        grpc_method: true,
        graphql: true,
    };

    /// Adds what one policy reads, from its JSON form (Cedar's EST): `context.<attr>` is
    /// `{".": {"left": {"Var": "context"}, "attr": ...}}` and `context has <attr>` the same
    /// under `"has"`. Any other use of `context` counts as reading everything.
    pub(crate) fn add_policy(&mut self, policy: &Value) {
        self.walk(policy);
    }

    fn walk(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for operator in [".", "has"] {
                    if let Some(Value::Object(operands)) = map.get(operator)
                        && is_context(operands.get("left"))
                    {
                        match operands.get("attr") {
                            Some(Value::String(attr)) => self.mark(attr),
                            // `context has a.b`: the first name is the context attribute.
                            Some(Value::Array(path)) => match path.first() {
                                Some(Value::String(attr)) => self.mark(attr),
                                _ => *self = Self::ALL,
                            },
                            _ => *self = Self::ALL,
                        }
                        return;
                    }
                }
                if is_context(Some(value)) {
                    *self = Self::ALL;
                    return;
                }
                map.values().for_each(|v| self.walk(v));
            }
            Value::Array(items) => items.iter().for_each(|v| self.walk(v)),
            _ => {}
        }
    }

    fn mark(&mut self, attr: &str) {
        match attr {
            "method" => self.method = true,
            "path" => self.path = true,
            "host" => self.host = true,
            "client_ip" => self.client_ip = true,
            "tls" => self.tls = true,
            "time" => self.time = true,
            "risk_score" => self.risk_score = true,
            "reputation" => self.reputation = true,
            "grpc_method" => self.grpc_method = true,
            "graphql" => self.graphql = true,
            // The validator refuses attributes the schema does not declare; should one get
            // here anyway, key on everything.
            _ => *self = Self::ALL,
        }
    }
}

fn is_context(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Object(map))
        if map.len() == 1 && map.get("Var").and_then(Value::as_str) == Some("context"))
}

/// What one request's decision may depend on: the stage computes it once and builds the
/// Cedar request from it on a miss, so the key and the evaluated request always agree.
#[derive(Debug)]
pub(crate) struct Facts<'a> {
    pub identity: Option<&'a Identity>,
    pub method: &'a str,
    pub path: Cow<'a, str>,
    pub host: Cow<'a, str>,
    pub client_ip: IpAddr,
    pub tls: bool,
    /// Seconds since the epoch (UTC): `context.time` has this resolution.
    pub time: i64,
    pub risk_score: u32,
    /// Who listed the client address, when it is listed.
    pub reputation: Option<String>,
    pub grpc_method: Option<&'a str>,
    pub graphql: Option<GraphQlOperations>,
}

/// A cached Cedar answer (grants are applied after it, never cached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Evaluated {
    Allow,
    /// No policy permits it, none forbids it: a grant may still let it through.
    Deny,
    /// Denied by these `forbid` policies (their origins).
    Forbid(Arc<[String]>),
    /// These `forbid` policies could not be evaluated: denied (fail closed).
    ForbidError(Arc<[String]>),
}

/// The principal a cached decision was made for.
struct Principal {
    subject: Box<str>,
    method: AuthMethod,
    /// The declared claims' values, in `DecisionCache::declared` order.
    claims: Box<[Option<Value>]>,
}

/// The inputs a cached decision was made for, in full.
struct Key {
    principal: Option<Principal>,
    method: Box<str>,
    path: Option<Box<str>>,
    host: Option<Box<str>>,
    client_ip: Option<IpAddr>,
    tls: Option<bool>,
    time: Option<i64>,
    risk_score: Option<u32>,
    reputation: Option<Option<String>>,
    grpc_method: Option<Option<Box<str>>>,
    graphql: Option<Option<GraphQlOperations>>,
}

struct Entry {
    key: Key,
    evaluated: Evaluated,
}

#[derive(Default)]
struct Shard {
    current: HashMap<u64, Entry>,
    previous: HashMap<u64, Entry>,
}

/// Hits and misses since the stage was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
}

pub(crate) struct DecisionCache {
    reads: ContextReads,
    /// The claims the schema declares, in a fixed order: only they reach policies.
    declared: Box<[String]>,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    per_generation: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Shards: requests of different principals rarely wait for each other.
const SHARDS: usize = 8;

impl DecisionCache {
    /// A cache of at most `capacity` decisions (0: none are cached).
    pub(crate) fn new(reads: ContextReads, mut declared: Vec<String>, capacity: usize) -> Self {
        declared.sort();
        let per_generation = capacity / (2 * SHARDS);
        DecisionCache {
            reads,
            declared: declared.into_boxed_slice(),
            hasher: RandomState::new(),
            shards: (0..if per_generation == 0 { 0 } else { SHARDS })
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            per_generation,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        self.shards[(hash >> 32) as usize % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of `facts`: a hash of the inputs the policies read.
    pub(crate) fn hash(&self, facts: &Facts<'_>) -> u64 {
        let reads = &self.reads;
        let mut h = self.hasher.build_hasher();
        match facts.identity {
            Some(identity) => {
                1u8.hash(&mut h);
                identity.subject.hash(&mut h);
                identity.method.hash(&mut h);
                for name in &self.declared {
                    match identity.claims.get(name) {
                        Some(value) => hash_json(value, &mut h),
                        None => 0xffu8.hash(&mut h),
                    }
                }
            }
            None => 0u8.hash(&mut h),
        }
        facts.method.hash(&mut h);
        if reads.path {
            facts.path.hash(&mut h);
        }
        if reads.host {
            facts.host.hash(&mut h);
        }
        if reads.client_ip {
            facts.client_ip.hash(&mut h);
        }
        if reads.tls {
            facts.tls.hash(&mut h);
        }
        if reads.time {
            facts.time.hash(&mut h);
        }
        if reads.risk_score {
            facts.risk_score.hash(&mut h);
        }
        if reads.reputation {
            facts.reputation.hash(&mut h);
        }
        if reads.grpc_method {
            facts.grpc_method.hash(&mut h);
        }
        if reads.graphql {
            facts.graphql.hash(&mut h);
        }
        h.finish()
    }

    fn matches(&self, key: &Key, facts: &Facts<'_>) -> bool {
        let reads = &self.reads;
        let principal = match (&key.principal, facts.identity) {
            (None, None) => true,
            (Some(cached), Some(identity)) => {
                *cached.subject == identity.subject
                    && cached.method == identity.method
                    && self
                        .declared
                        .iter()
                        .zip(cached.claims.iter())
                        .all(|(name, cached)| identity.claims.get(name) == cached.as_ref())
            }
            _ => false,
        };
        principal
            && *key.method == *facts.method
            && (!reads.path || key.path.as_deref() == Some(&*facts.path))
            && (!reads.host || key.host.as_deref() == Some(&*facts.host))
            && (!reads.client_ip || key.client_ip == Some(facts.client_ip))
            && (!reads.tls || key.tls == Some(facts.tls))
            && (!reads.time || key.time == Some(facts.time))
            && (!reads.risk_score || key.risk_score == Some(facts.risk_score))
            && (!reads.reputation || key.reputation.as_ref() == Some(&facts.reputation))
            && (!reads.grpc_method
                || key.grpc_method.as_ref().map(|m| m.as_deref()) == Some(facts.grpc_method))
            && (!reads.graphql || key.graphql.as_ref() == Some(&facts.graphql))
    }

    fn key(&self, facts: &Facts<'_>) -> Key {
        let reads = &self.reads;
        Key {
            principal: facts.identity.map(|identity| Principal {
                subject: identity.subject.as_str().into(),
                method: identity.method,
                claims: self
                    .declared
                    .iter()
                    .map(|name| identity.claims.get(name).cloned())
                    .collect(),
            }),
            method: facts.method.into(),
            path: reads.path.then(|| facts.path.as_ref().into()),
            host: reads.host.then(|| facts.host.as_ref().into()),
            client_ip: reads.client_ip.then_some(facts.client_ip),
            tls: reads.tls.then_some(facts.tls),
            time: reads.time.then_some(facts.time),
            risk_score: reads.risk_score.then_some(facts.risk_score),
            reputation: reads.reputation.then(|| facts.reputation.clone()),
            grpc_method: reads.grpc_method.then(|| facts.grpc_method.map(Into::into)),
            graphql: reads.graphql.then(|| facts.graphql.clone()),
        }
    }

    /// The decision made earlier for the same inputs.
    pub(crate) fn get(&self, hash: u64, facts: &Facts<'_>) -> Option<Evaluated> {
        if !self.enabled() {
            return None;
        }
        let mut shard = self.shard(hash);
        let found = match shard.current.get(&hash) {
            Some(entry) if self.matches(&entry.key, facts) => Some(entry.evaluated.clone()),
            Some(_) => None,
            None => match shard.previous.remove(&hash) {
                Some(entry) if self.matches(&entry.key, facts) => {
                    let evaluated = entry.evaluated.clone();
                    Self::insert(&mut shard, self.per_generation, hash, entry);
                    Some(evaluated)
                }
                Some(other) => {
                    shard.previous.insert(hash, other);
                    None
                }
                None => None,
            },
        };
        drop(shard);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers the decision made for `facts` (replacing whatever held its slot).
    pub(crate) fn put(&self, hash: u64, facts: &Facts<'_>, evaluated: Evaluated) {
        if !self.enabled() {
            return;
        }
        let entry = Entry {
            key: self.key(facts),
            evaluated,
        };
        let mut shard = self.shard(hash);
        shard.previous.remove(&hash);
        Self::insert(&mut shard, self.per_generation, hash, entry);
    }

    fn insert(shard: &mut Shard, per_generation: usize, hash: u64, entry: Entry) {
        if shard.current.len() >= per_generation && !shard.current.contains_key(&hash) {
            shard.previous = std::mem::take(&mut shard.current);
        }
        shard.current.insert(hash, entry);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self
                .shards
                .iter()
                .map(|s| {
                    let s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.current.len() + s.previous.len()
                })
                .sum(),
        }
    }
}

/// Hashes a JSON value consistently with its equality (equal values hash alike).
fn hash_json(value: &Value, h: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => {
            1u8.hash(h);
            b.hash(h);
        }
        Value::Number(n) => {
            2u8.hash(h);
            n.as_u64().hash(h);
            n.as_i64().hash(h);
            n.as_f64().map(f64::to_bits).hash(h);
        }
        Value::String(s) => {
            3u8.hash(h);
            s.hash(h);
        }
        Value::Array(items) => {
            4u8.hash(h);
            items.len().hash(h);
            items.iter().for_each(|v| hash_json(v, h));
        }
        Value::Object(map) => {
            // Keys in sorted order: maps that are equal hash alike whatever their order.
            5u8.hash(h);
            map.len().hash(h);
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in members {
                k.hash(h);
                hash_json(v, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reads_of(policy: Value) -> ContextReads {
        let mut reads = ContextReads::default();
        reads.add_policy(&policy);
        reads
    }

    #[test]
    fn named_context_attributes_are_read_and_any_other_use_reads_all() {
        let get = |attr: &str| json!({".": {"left": {"Var": "context"}, "attr": attr}});
        let reads = reads_of(json!({"conditions": [{"kind": "when", "body":
            {"&&": {"left": {">=": {"left": get("risk_score"), "right": {"Value": 4}}},
                    "right": {"has": {"left": {"Var": "context"}, "attr": ["graphql", "x"]}}}}}]}));
        assert_eq!(
            reads,
            ContextReads {
                risk_score: true,
                graphql: true,
                ..ContextReads::default()
            }
        );
        let whole = reads_of(json!({"conditions": [{"kind": "when", "body":
            {"==": {"left": {"Var": "context"}, "right": {"Record": {}}}}}]}));
        assert_eq!(whole, ContextReads::ALL);
        let principal_only = reads_of(json!({"conditions": [{"kind": "when", "body":
            {".": {"left": {"Var": "principal"}, "attr": "claims"}}}]}));
        assert_eq!(principal_only, ContextReads::default());
    }

    #[test]
    fn equal_json_hashes_alike_whatever_the_member_order() {
        let hash = |v: &Value| {
            let mut h = std::hash::DefaultHasher::new();
            hash_json(v, &mut h);
            h.finish()
        };
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": [true, "x"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b": [true, "x"], "a": 1}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&json!(1)), hash(&json!("1")));
    }
}
