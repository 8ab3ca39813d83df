//! Just-in-time access: an operator grants a principal some methods on some routes for a
//! bounded time. A grant turns a default deny (no policy permits) into an allow; it never
//! overrides a `forbid` policy. Grants outlive configuration reloads, expire by themselves
//! (checked on every request, purged and audited by a periodic sweep), and every grant,
//! revocation and expiry is written to the audit list and the `apiguard::audit` log target.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiguard_model::event::now_ms;
use arc_swap::ArcSwap;
use serde::{Serialize, Serializer};

use super::policies::ANONYMOUS_ID;

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GrantPrincipal {
    /// `ApiGuard::Identity::"<subject>"`.
    Identity(String),
    /// `ApiGuard::Anonymous::"anonymous"`: requests without an identity (narrow it with a
    /// client address).
    Anonymous,
}

impl GrantPrincipal {
    /// Reads the principal as written in the admin API: a Cedar entity uid string
    /// (`ApiGuard::Identity::"alice"`) or its JSON form (`{"type": "ApiGuard::Identity",
    /// "id": "alice"}`).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let (kind, id) = match value {
            serde_json::Value::String(text) => {
                let uid = cedar_policy::EntityUid::from_str(text).map_err(|_| {
                    format!(
                        "`{text}` is not a Cedar entity uid such as ApiGuard::Identity::\"alice\""
                    )
                })?;
                (uid.type_name().to_string(), uid.id().unescaped().to_owned())
            }
            serde_json::Value::Object(map) => {
                let field = |name: &str| {
                    map.get(name)
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                        .ok_or_else(|| format!("the principal object needs a string `{name}`"))
                };
                if map.keys().any(|k| k != "type" && k != "id") {
                    return Err("the principal object has only `type` and `id`".into());
                }
                (field("type")?, field("id")?)
            }
            _ => {
                return Err(
                    "principal must be a Cedar entity uid string or {\"type\", \"id\"}".into(),
                );
            }
        };
        match kind.as_str() {
            "ApiGuard::Identity" if !id.is_empty() => Ok(GrantPrincipal::Identity(id)),
            "ApiGuard::Identity" => Err("an identity's subject cannot be empty".into()),
            "ApiGuard::Anonymous" if id == ANONYMOUS_ID => Ok(GrantPrincipal::Anonymous),
            "ApiGuard::Anonymous" => Err(format!(
                "the anonymous principal is ApiGuard::Anonymous::\"{ANONYMOUS_ID}\""
            )),
            other => Err(format!(
                "a grant is for an ApiGuard::Identity or ApiGuard::Anonymous, not `{other}`"
            )),
        }
    }

    fn matches(&self, subject: Option<&str>) -> bool {
        match (self, subject) {
            (GrantPrincipal::Identity(granted), Some(subject)) => granted == subject,
            (GrantPrincipal::Anonymous, None) => true,
            _ => false,
        }
    }
}

impl fmt::Display for GrantPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantPrincipal::Identity(subject) => {
                let uid = cedar_policy::EntityUid::from_type_name_and_id(
                    "ApiGuard::Identity".parse().expect("a valid type name"),
                    cedar_policy::EntityId::new(subject),
                );
                write!(f, "{uid}")
            }
            GrantPrincipal::Anonymous => write!(f, "ApiGuard::Anonymous::\"{ANONYMOUS_ID}\""),
        }
    }
}

impl Serialize for GrantPrincipal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An address or a prefix (CIDR) a grant is narrowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    network: IpAddr,
    len: u8,
}

fn v6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl IpPrefix {
    fn full_len(&self) -> u8 {
        if self.network.is_ipv4() {
            96 + self.len
        } else {
            self.len
        }
    }

    /// Whether `ip` is in the prefix (IPv4 and IPv4-mapped IPv6 are the same address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        v6_bits(ip.to_canonical()) & mask(self.full_len()) == v6_bits(self.network)
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    /// `203.0.113.7`, `2001:db8::1`, `10.0.0.0/8`; host bits of a prefix must be zero.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (network, len) = match text.split_once('/') {
            None => {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| format!("`{text}` is not an IP address or prefix"))?;
                let ip = ip.to_canonical();
                return Ok(IpPrefix {
                    network: ip,
                    len: if ip.is_ipv4() { 32 } else { 128 },
                });
            }
            Some(parts) => parts,
        };
        let network: IpAddr = network
            .parse::<IpAddr>()
            .map_err(|_| format!("`{text}`: `{network}` is not an IP address"))?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?;
        let prefix = IpPrefix { network, len };
        if v6_bits(network) & !mask(prefix.full_len()) != 0 {
            return Err(format!("`{text}` has host bits set after /{len}"));
        }
        Ok(prefix)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.network.is_ipv4() { 32 } else { 128 };
        if self.len == max {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.len)
        }
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One just-in-time grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub id: String,
    pub principal: GrantPrincipal,
    /// Route ids, or `*` for every route.
    pub routes: Vec<String>,
    /// HTTP methods, or `*` for every method.
    pub actions: Vec<String>,
    /// Only requests from this address or prefix, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<IpPrefix>,
    /// Why (a ticket, an incident): for the audit trail.
    pub reason: String,
    /// Who asked for it, as the operator said.
    pub granted_by: String,
    pub created_ms: u64,
    /// Milliseconds since the Unix epoch after which the grant no longer applies.
    pub until_ms: u64,
}

impl Grant {
    fn covers(
        &self,
        subject: Option<&str>,
        route: &str,
        method: &str,
        client: IpAddr,
        now: u64,
    ) -> bool {
        self.until_ms > now
            && self.principal.matches(subject)
            && self.routes.iter().any(|r| r == "*" || r == route)
            && self.actions.iter().any(|a| a == "*" || a == method)
            && self.client.is_none_or(|c| c.contains(client))
    }
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub principal: GrantPrincipal,
    pub routes: Vec<String>,
    pub actions: Vec<String>,
    pub client: Option<IpPrefix>,
    pub ttl: Duration,
    pub reason: String,
    pub granted_by: String,
}

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} grants are active, the most allowed; revoke some first")]
    TooMany(usize),
}

/// What happened to a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    Granted,
    Revoked,
    Expired,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub event: AuditEvent,
    /// Who revoked it (for `revoked`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub grant: Grant,
}

struct State {
    grants: BTreeMap<String, Arc<Grant>>,
    audit: VecDeque<AuditEntry>,
    next: u64,
}

/// The grants in effect and their audit trail. The request path reads a published list
/// without locking; changes are serialised.
pub struct Grants {
    active: ArcSwap<Vec<Arc<Grant>>>,
    state: Mutex<State>,
    max_active: usize,
    audit_len: usize,
}

impl Default for Grants {
    fn default() -> Self {
        Grants::new(10_000, 1_000)
    }
}

impl Grants {
    /// At most `max_active` grants at once; the audit list keeps the last `audit_len` entries.
    pub fn new(max_active: usize, audit_len: usize) -> Self {
        Grants {
            active: ArcSwap::from_pointee(Vec::new()),
            state: Mutex::new(State {
                grants: BTreeMap::new(),
                audit: VecDeque::new(),
                next: 1,
            }),
            max_active: max_active.max(1),
            audit_len: audit_len.max(1),
        }
    }

    /// The grant that lets `subject` (None: anonymous) call `method` on `route` from
    /// `client` now, if any.
    pub fn covering(
        &self,
        subject: Option<&str>,
        route: &str,
        method: &str,
        client: IpAddr,
    ) -> Option<Arc<Grant>> {
        let active = self.active.load();
        if active.is_empty() {
            return None;
        }
        let now = now_ms();
        let client = client.to_canonical();
        active
            .iter()
            .find(|g| g.covers(subject, route, method, client, now))
            .cloned()
    }

    /// Records a grant. `known_routes` are the route ids of the configuration in effect.
    pub fn grant(
        &self,
        request: GrantRequest,
        known_routes: &[&str],
        max_ttl: Duration,
    ) -> Result<Arc<Grant>, GrantError> {
        let invalid = |m: String| Err(GrantError::Invalid(m));
        if request.routes.is_empty() {
            return invalid("`routes` needs at least one route id (or \"*\")".into());
        }
        for route in &request.routes {
            if route != "*" && !known_routes.contains(&route.as_str()) {
                return invalid(format!(
                    "route `{route}` is not in the configuration (routes: {})",
                    known_routes.join(", ")
                ));
            }
        }
        if request.actions.is_empty() {
            return invalid("`actions` needs at least one HTTP method (or \"*\")".into());
        }
        for action in &request.actions {
            let token = action != "*"
                && (action.is_empty()
                    || action.len() > 32
                    || !action.bytes().all(|b| b.is_ascii_uppercase()));
            if token {
                return invalid(format!(
                    "`{action}` is not an HTTP method in upper case (or \"*\")"
                ));
            }
        }
        if request.ttl.is_zero() || request.ttl > max_ttl {
            return invalid(format!(
                "ttl must be longer than 0 and at most {}s",
                max_ttl.as_secs()
            ));
        }
        if request.reason.len() > 1024 || request.granted_by.len() > 256 {
            return invalid("reason (1024 bytes) or granted_by (256 bytes) is too long".into());
        }
        let now = now_ms();
        let mut state = self.lock();
        state.grants.retain(|_, g| g.until_ms > now);
        if state.grants.len() >= self.max_active {
            return Err(GrantError::TooMany(self.max_active));
        }
        let id = format!("jit-{now}-{}", state.next);
        state.next += 1;
        let grant = Arc::new(Grant {
            id: id.clone(),
            principal: request.principal,
            routes: request.routes,
            actions: request.actions,
            client: request.client,
            reason: request.reason,
            granted_by: request.granted_by,
            created_ms: now,
            until_ms: now
                .saturating_add(u64::try_from(request.ttl.as_millis()).unwrap_or(u64::MAX)),
        });
        state.grants.insert(id, grant.clone());
        self.audit(&mut state, AuditEvent::Granted, None, &grant, now);
        self.publish(&state);
        Ok(grant)
    }

    /// Ends a grant before its time; returns it, or None when there is no such grant.
    pub fn revoke(&self, id: &str, by: &str) -> Option<Arc<Grant>> {
        let mut state = self.lock();
        let grant = state.grants.remove(id)?;
        let now = now_ms();
        if grant.until_ms <= now {
            // It had expired already; the sweep just had not seen it.
            self.audit(
                &mut state,
                AuditEvent::Expired,
                None,
                &grant,
                grant.until_ms,
            );
            self.publish(&state);
            return None;
        }
        self.audit(
            &mut state,
            AuditEvent::Revoked,
            Some(by.to_owned()),
            &grant,
            now,
        );
        self.publish(&state);
        Some(grant)
    }

    /// Drops the grants expired at `now`, auditing each; returns them.
    pub fn purge_expired(&self, now: u64) -> Vec<Arc<Grant>> {
        let mut state = self.lock();
        let expired: Vec<Arc<Grant>> = state
            .grants
            .values()
            .filter(|g| g.until_ms <= now)
            .cloned()
            .collect();
        if expired.is_empty() {
            return expired;
        }
        state.grants.retain(|_, g| g.until_ms > now);
        for grant in &expired {
            self.audit(&mut state, AuditEvent::Expired, None, grant, grant.until_ms);
        }
        self.publish(&state);
        expired
    }

    /// The grants in effect, soonest expiry first.
    pub fn list(&self) -> Vec<Arc<Grant>> {
        let now = now_ms();
        let state = self.lock();
        let mut list: Vec<Arc<Grant>> = state
            .grants
            .values()
            .filter(|g| g.until_ms > now)
            .cloned()
            .collect();
        list.sort_by(|a, b| (a.until_ms, &a.id).cmp(&(b.until_ms, &b.id)));
        list
    }

    /// The audit trail, oldest first (the last `audit_len` entries).
    pub fn audit_trail(&self) -> Vec<AuditEntry> {
        self.lock().audit.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn audit(
        &self,
        state: &mut State,
        event: AuditEvent,
        by: Option<String>,
        grant: &Grant,
        at_ms: u64,
    ) {
        let entry = AuditEntry {
            at_ms,
            event,
            by,
            grant: grant.clone(),
        };
        tracing::info!(
            target: "apiguard::audit",
            entry = %serde_json::to_string(&entry).unwrap_or_default(),
            "just-in-time grant {}",
            match event {
                AuditEvent::Granted => "granted",
                AuditEvent::Revoked => "revoked",
                AuditEvent::Expired => "expired",
            }
        );
        state.audit.push_back(entry);
        while state.audit.len() > self.audit_len {
            state.audit.pop_front();
        }
    }

    fn publish(&self, state: &State) {
        self.active
            .store(Arc::new(state.grants.values().cloned().collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(principal: GrantPrincipal, ttl: Duration) -> GrantRequest {
        GrantRequest {
            principal,
            routes: vec!["admin".into()],
            actions: vec!["GET".into()],
            client: None,
            ttl,
            reason: "INC-42".into(),
            granted_by: "oncall".into(),
        }
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn principals_parse_in_both_cedar_forms() {
        let alice = GrantPrincipal::Identity("alice".into());
        assert_eq!(
            GrantPrincipal::from_json(&serde_json::json!("ApiGuard::Identity::\"alice\"")),
            Ok(alice.clone())
        );
        assert_eq!(
            GrantPrincipal::from_json(
                &serde_json::json!({"type": "ApiGuard::Identity", "id": "alice"})
            ),
            Ok(alice.clone())
        );
        assert_eq!(alice.to_string(), "ApiGuard::Identity::\"alice\"");
        assert_eq!(
            GrantPrincipal::from_json(&serde_json::json!("ApiGuard::Anonymous::\"anonymous\"")),
            Ok(GrantPrincipal::Anonymous)
        );
        for bad in [
            serde_json::json!("alice"),
            serde_json::json!("User::\"alice\""),
            serde_json::json!({"type": "ApiGuard::Identity"}),
            serde_json::json!(7),
        ] {
            assert!(GrantPrincipal::from_json(&bad).is_err(), "{bad}");
        }
        // A subject with a quote round-trips through the uid form.
        let odd = GrantPrincipal::Identity("a\"b".into());
        assert_eq!(
            GrantPrincipal::from_json(&serde_json::json!(odd.to_string())),
            Ok(odd)
        );
    }

    #[test]
    fn a_grant_covers_its_principal_route_method_and_client_only() {
        let grants = Grants::default();
        let mut req = request(
            GrantPrincipal::Identity("alice".into()),
            Duration::from_secs(60),
        );
        req.client = Some("10.0.0.0/8".parse().unwrap());
        grants
            .grant(req, &["admin", "users"], Duration::from_secs(3600))
            .unwrap();
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(
            grants
                .covering(Some("alice"), "admin", "GET", inside)
                .is_some()
        );
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(
            grants
                .covering(Some("alice"), "admin", "GET", mapped)
                .is_some()
        );
        assert!(
            grants
                .covering(Some("bob"), "admin", "GET", inside)
                .is_none()
        );
        assert!(grants.covering(None, "admin", "GET", inside).is_none());
        assert!(
            grants
                .covering(Some("alice"), "users", "GET", inside)
                .is_none()
        );
        assert!(
            grants
                .covering(Some("alice"), "admin", "POST", inside)
                .is_none()
        );
        assert!(
            grants
                .covering(Some("alice"), "admin", "GET", LOCAL)
                .is_none()
        );
    }

    #[test]
    fn grants_expire_by_themselves_and_every_change_is_audited() {
        let grants = Grants::default();
        let g = grants
            .grant(
                request(GrantPrincipal::Anonymous, Duration::from_millis(1)),
                &["admin"],
                Duration::from_secs(60),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            grants.covering(None, "admin", "GET", LOCAL).is_none(),
            "expired"
        );
        assert!(grants.list().is_empty());
        let expired = grants.purge_expired(now_ms());
        assert_eq!(expired.len(), 1);
        assert!(grants.purge_expired(now_ms()).is_empty(), "audited once");
        let long = grants
            .grant(
                request(GrantPrincipal::Anonymous, Duration::from_secs(60)),
                &["admin"],
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(grants.covering(None, "admin", "GET", LOCAL).is_some());
        assert_eq!(grants.revoke(&long.id, "alice").unwrap().id, long.id);
        assert!(grants.revoke(&long.id, "alice").is_none());
        assert!(grants.covering(None, "admin", "GET", LOCAL).is_none());
        let trail: Vec<(AuditEvent, String)> = grants
            .audit_trail()
            .into_iter()
            .map(|e| (e.event, e.grant.id))
            .collect();
        assert_eq!(
            trail,
            [
                (AuditEvent::Granted, g.id.clone()),
                (AuditEvent::Expired, g.id.clone()),
                (AuditEvent::Granted, long.id.clone()),
                (AuditEvent::Revoked, long.id.clone()),
            ]
        );
    }

    #[test]
    fn bad_grants_are_refused_and_the_count_is_bounded() {
        let grants = Grants::new(2, 10);
        let max = Duration::from_secs(60);
        let mut unknown = request(GrantPrincipal::Anonymous, max);
        unknown.routes = vec!["nope".into()];
        assert!(grants.grant(unknown, &["admin"], max).is_err());
        let mut lower = request(GrantPrincipal::Anonymous, max);
        lower.actions = vec!["get".into()];
        assert!(grants.grant(lower, &["admin"], max).is_err());
        let long = request(GrantPrincipal::Anonymous, max * 2);
        assert!(grants.grant(long, &["admin"], max).is_err());
        for _ in 0..2 {
            grants
                .grant(request(GrantPrincipal::Anonymous, max), &["admin"], max)
                .unwrap();
        }
        assert_eq!(
            grants.grant(request(GrantPrincipal::Anonymous, max), &["admin"], max),
            Err(GrantError::TooMany(2))
        );
        assert_eq!(grants.audit_trail().len(), 2);
    }

    #[test]
    fn prefixes_parse_strictly() {
        assert!("10.0.0.1/8".parse::<IpPrefix>().is_err());
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("nope".parse::<IpPrefix>().is_err());
        let p: IpPrefix = "2001:db8::/32".parse().unwrap();
        assert!(p.contains("2001:db8::7".parse().unwrap()));
        assert!(!p.contains("2001:db9::7".parse().unwrap()));
        assert_eq!(
            "192.0.2.1".parse::<IpPrefix>().unwrap().to_string(),
            "192.0.2.1"
        );
        assert!("0.0.0.0/0".parse::<IpPrefix>().unwrap().contains(LOCAL));
    }
}
