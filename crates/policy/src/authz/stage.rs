//! The authorisation stage: one Cedar request per HTTP request, unless the route's decision
//! cache answers (see [`super::cache`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::cache::{CacheStats, DecisionCache, Evaluated, Facts};
use super::grants::Grants;
use super::graphql::graphql_operations;
use super::policies::{ClaimsShape, Policies};
use apiguard_model::{Finding, Identity, Outcome, RequestContext, RequestView, Severity, Stage};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityUid, Request,
    RestrictedExpression,
};

/// What the gateway knows about a client address from its block table and the hub feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReputationEntry {
    /// Who listed the address: `hub`, `admin`, ...
    pub source: String,
}

/// The reputation source the stage asks about each client address; the gateway implements
/// it over its enforcement state. It must be cheap: it is asked on every request.
pub trait Reputation: Send + Sync + 'static {
    fn lookup(&self, ip: IpAddr) -> Option<ReputationEntry>;
}

/// No reputation source: nothing is listed.
impl Reputation for () {
    fn lookup(&self, _ip: IpAddr) -> Option<ReputationEntry> {
        None
    }
}

/// What the stage does with a denied request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthzMode {
    /// Refuse it with 403.
    #[default]
    Enforce,
    /// Let it through; the decision is logged and published as a finding (score 0).
    Monitor,
    /// Do not evaluate policies.
    Off,
}

/// Decisions a route's stage remembers (per policy set: a reload builds new stages).
pub const DECISION_CACHE_CAPACITY: usize = 4096;

/// Stage 5: authorisation. Built per route.
pub struct AuthzStage {
    pub policies: Arc<Policies>,
    pub grants: Arc<Grants>,
    pub reputation: Arc<dyn Reputation>,
    /// Enforce or monitor (an `off` route has no stage).
    pub mode: AuthzMode,
    route: String,
    resource: EntityUid,
    authorizer: Authorizer,
    cache: DecisionCache,
}

/// Deepest claim nesting turned into Cedar records; deeper values are left out.
const MAX_CLAIM_DEPTH: usize = 8;
/// Most claim values converted (keys and elements all count).
const MAX_CLAIM_VALUES: usize = 512;

impl AuthzStage {
    pub fn new(
        route: &str,
        policies: Arc<Policies>,
        grants: Arc<Grants>,
        reputation: Arc<dyn Reputation>,
        mode: AuthzMode,
    ) -> Self {
        let resource =
            EntityUid::from_type_name_and_id(policies.route_type.clone(), EntityId::new(route));
        let cache = Self::cache(&policies, DECISION_CACHE_CAPACITY);
        AuthzStage {
            policies,
            grants,
            reputation,
            mode,
            route: route.to_owned(),
            resource,
            authorizer: Authorizer::new(),
            cache,
        }
    }

    fn cache(policies: &Policies, capacity: usize) -> DecisionCache {
        DecisionCache::new(
            policies.reads,
            policies.claims.0.keys().cloned().collect(),
            capacity,
        )
    }

    /// Remembers at most `capacity` decisions (0: every request is evaluated).
    pub fn with_decision_cache(mut self, capacity: usize) -> Self {
        self.cache = Self::cache(&self.policies, capacity);
        self
    }

    /// The decision cache's hits, misses and size.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// What the decision may depend on, read once per request.
    fn facts<'a>(&self, request: &'a RequestView<'_>, ctx: &'a RequestContext) -> Facts<'a> {
        let client_ip = request.client.peer.ip().to_canonical();
        Facts {
            identity: ctx.identity.as_ref(),
            method: request.method.as_str(),
            path: crate::openapi::normalize_path(request.path()),
            host: host(request),
            client_ip,
            tls: request.client.tls,
            time: chrono::Utc::now().timestamp(),
            risk_score: ctx.score,
            reputation: self.reputation.lookup(client_ip).map(|l| l.source),
            grpc_method: grpc_method(request),
            graphql: if self.policies.uses_graphql {
                graphql_operations(request)
            } else {
                None
            },
        }
    }

    /// The Cedar request and entities for `facts`, or the reason they could not be built.
    fn cedar_request(&self, facts: &Facts<'_>) -> Result<(Request, Entities), String> {
        let policies = &self.policies;
        let (principal, entity) = match facts.identity {
            Some(identity) => {
                let uid = EntityUid::from_type_name_and_id(
                    policies.identity_type.clone(),
                    EntityId::new(&identity.subject),
                );
                (
                    uid.clone(),
                    Some(identity_entity(uid, identity, &policies.claims)?),
                )
            }
            None => (policies.anonymous.clone(), None),
        };
        let action = policies
            .actions
            .get(facts.method)
            .unwrap_or(&policies.other_action)
            .clone();
        let context =
            Context::from_pairs(context_pairs(facts)).map_err(|e| format!("context: {e}"))?;
        let request = Request::new(principal, action, self.resource.clone(), context, None)
            .map_err(|e| format!("request: {e}"))?;
        let entities = match entity {
            Some(entity) => policies
                .action_entities
                .clone()
                .add_entities([entity], None)
                .map_err(|e| format!("entities: {e}"))?,
            None => policies.action_entities.clone(),
        };
        Ok((request, entities))
    }

    /// Asks Cedar (no cache, no grants).
    fn evaluate(&self, facts: &Facts<'_>) -> Result<Evaluated, String> {
        let (cedar_request, entities) = self.cedar_request(facts)?;
        let response = self
            .authorizer
            .is_authorized(&cedar_request, &self.policies.set, &entities);
        let diagnostics = response.diagnostics();
        let errored_forbids: Vec<String> = diagnostics
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => e.policy_id(),
            })
            .filter(|id| self.policies.forbids.contains(*id))
            .map(|id| self.policies.origin(id))
            .collect();
        if !errored_forbids.is_empty() {
            return Ok(Evaluated::ForbidError(errored_forbids.into()));
        }
        Ok(match response.decision() {
            Decision::Allow => Evaluated::Allow,
            Decision::Deny => {
                let forbids: Vec<String> = diagnostics
                    .reason()
                    .map(|id| self.policies.origin(id))
                    .collect();
                if forbids.is_empty() {
                    Evaluated::Deny
                } else {
                    Evaluated::Forbid(forbids.into())
                }
            }
        })
    }

    fn principal_text(&self, ctx: &RequestContext) -> String {
        match &ctx.identity {
            Some(identity) => EntityUid::from_type_name_and_id(
                self.policies.identity_type.clone(),
                EntityId::new(&identity.subject),
            )
            .to_string(),
            None => self.policies.anonymous.to_string(),
        }
    }

    fn refuse(&self, rule: &'static str, evidence: String) -> Outcome {
        let finding = |score| Finding {
            rule_id: rule.into(),
            class: "authz".into(),
            severity: Severity::Critical,
            score,
            target: format!("route:{}", self.route),
            evidence,
        };
        match self.mode {
            AuthzMode::Enforce => Outcome::Block {
                status: 403,
                finding: finding(Severity::Critical.score()),
            },
            _ => Outcome::Score(vec![finding(0)]),
        }
    }
}

impl Stage for AuthzStage {
    fn name(&self) -> &'static str {
        "authz"
    }

    fn needs_body(&self) -> bool {
        self.policies.uses_graphql
    }

    fn enforced_in_detect_only(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        if self.mode == AuthzMode::Off {
            return Outcome::Continue;
        }
        let evaluated = {
            let facts = self.facts(request, ctx);
            let hash = self.cache.enabled().then(|| self.cache.hash(&facts));
            match hash.and_then(|hash| self.cache.get(hash, &facts)) {
                Some(cached) => Ok(cached),
                None => {
                    let evaluated = self.evaluate(&facts);
                    if let (Some(hash), Ok(evaluated)) = (hash, &evaluated) {
                        self.cache.put(hash, &facts, evaluated.clone());
                    }
                    evaluated
                }
            }
        };
        let who = || format!("{} {}", self.principal_text(ctx), request.method);
        match evaluated {
            Err(reason) => self.refuse(
                "authz.error",
                format!(
                    "{} on route {}: the request could not be evaluated ({reason})",
                    who(),
                    self.route
                ),
            ),
            Ok(Evaluated::Allow) => Outcome::Continue,
            Ok(Evaluated::ForbidError(forbids)) => self.refuse(
                "authz.forbid_error",
                format!(
                    "{} on route {}: forbid policy could not be evaluated ({}); denied",
                    who(),
                    self.route,
                    forbids.join(", ")
                ),
            ),
            Ok(Evaluated::Forbid(forbids)) => self.refuse(
                "authz.forbid",
                format!(
                    "{} on route {}: forbidden by {}",
                    who(),
                    self.route,
                    forbids.join(", ")
                ),
            ),
            Ok(Evaluated::Deny) => {
                // Grants are looked up on every request, never cached: a grant and its
                // expiry take effect at once.
                let subject = ctx.identity.as_ref().map(|i| i.subject.as_str());
                if self
                    .grants
                    .covering(
                        subject,
                        &self.route,
                        request.method.as_str(),
                        request.client.peer.ip(),
                    )
                    .is_some()
                {
                    return Outcome::Continue;
                }
                self.refuse(
                    "authz.deny",
                    format!(
                        "{} on route {}: no policy or grant permits it",
                        who(),
                        self.route
                    ),
                )
            }
        }
    }
}

/// The context record of `facts`.
fn context_pairs(facts: &Facts<'_>) -> Vec<(String, RestrictedExpression)> {
    let mut pairs = vec![
        (
            "method".to_owned(),
            RestrictedExpression::new_string(facts.method.to_owned()),
        ),
        (
            "path".to_owned(),
            RestrictedExpression::new_string(facts.path.clone().into_owned()),
        ),
        (
            "host".to_owned(),
            RestrictedExpression::new_string(facts.host.clone().into_owned()),
        ),
        ("client_ip".to_owned(), ip_expression(facts.client_ip)),
        ("tls".to_owned(), RestrictedExpression::new_bool(facts.tls)),
        ("time".to_owned(), time_expression(facts.time)),
        (
            "risk_score".to_owned(),
            RestrictedExpression::new_long(i64::from(facts.risk_score)),
        ),
        (
            "reputation".to_owned(),
            RestrictedExpression::new_record([
                (
                    "listed".to_owned(),
                    RestrictedExpression::new_bool(facts.reputation.is_some()),
                ),
                (
                    "source".to_owned(),
                    RestrictedExpression::new_string(facts.reputation.clone().unwrap_or_default()),
                ),
            ])
            .expect("distinct keys"),
        ),
    ];
    if let Some(method) = facts.grpc_method {
        pairs.push((
            "grpc_method".to_owned(),
            RestrictedExpression::new_string(method.to_owned()),
        ));
    }
    if let Some(ops) = &facts.graphql {
        let set = |values: &std::collections::BTreeSet<String>| {
            RestrictedExpression::new_set(
                values
                    .iter()
                    .map(|v| RestrictedExpression::new_string(v.clone())),
            )
        };
        pairs.push((
            "graphql".to_owned(),
            RestrictedExpression::new_record([
                ("operation_types".to_owned(), set(&ops.types)),
                ("operation_names".to_owned(), set(&ops.names)),
            ])
            .expect("distinct keys"),
        ));
    }
    pairs
}

// Cedar's `RestrictedExpression::new_ip` and `new_datetime` parse the extension function's
// name with the policy parser on every call, which was a third of a decision's cost. The
// expressions are kept per thread: the last few client addresses, and the current second.
thread_local! {
    static IP_EXPRESSIONS: std::cell::RefCell<Vec<(IpAddr, RestrictedExpression)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static TIME_EXPRESSION: std::cell::RefCell<Option<(i64, RestrictedExpression)>> =
        const { std::cell::RefCell::new(None) };
}

/// Client addresses remembered per thread.
const IP_CACHE: usize = 64;

/// `ip("<address>")`.
fn ip_expression(ip: IpAddr) -> RestrictedExpression {
    IP_EXPRESSIONS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((_, expression)) = cache.iter().find(|(cached, _)| *cached == ip) {
            return expression.clone();
        }
        let expression = RestrictedExpression::new_ip(ip.to_string());
        if cache.len() >= IP_CACHE {
            cache.remove(0);
        }
        cache.push((ip, expression.clone()));
        expression
    })
}

/// `datetime("<second, UTC>")` for `second` since the epoch.
fn time_expression(second: i64) -> RestrictedExpression {
    TIME_EXPRESSION.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &*cache {
            Some((cached, expression)) if *cached == second => expression.clone(),
            _ => {
                let at = chrono::DateTime::from_timestamp(second, 0).unwrap_or_default();
                let expression =
                    RestrictedExpression::new_datetime(at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                *cache = Some((second, expression.clone()));
                expression
            }
        }
    })
}

/// The request host without the port, lower case.
fn host<'a>(request: &'a RequestView<'_>) -> Cow<'a, str> {
    let raw = request
        .uri
        .host()
        .or_else(|| {
            request
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let without_port = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_port)
    }
}

/// `package.Service/Method` for a gRPC request.
fn grpc_method<'a>(request: &'a RequestView<'_>) -> Option<&'a str> {
    let grpc = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return None;
    }
    request.path().strip_prefix('/').filter(|p| p.contains('/'))
}

/// The principal entity of an identity: subject, method and the claims the schema declares
/// (an undeclared claim is absent, as the validator assumed).
fn identity_entity(
    uid: EntityUid,
    identity: &Identity,
    declared: &ClaimsShape,
) -> Result<Entity, String> {
    let method = match identity.method {
        apiguard_model::AuthMethod::Jwt => "jwt",
        apiguard_model::AuthMethod::ApiKey => "api_key",
        apiguard_model::AuthMethod::Mtls => "mtls",
        apiguard_model::AuthMethod::Signature => "signature",
    };
    let mut budget = MAX_CLAIM_VALUES;
    let claims = record(&identity.claims, Some(declared), 0, &mut budget);
    let attrs = HashMap::from([
        (
            "subject".to_owned(),
            RestrictedExpression::new_string(identity.subject.clone()),
        ),
        (
            "auth_method".to_owned(),
            RestrictedExpression::new_string(method.to_owned()),
        ),
        ("claims".to_owned(), claims),
    ]);
    Entity::new(uid, attrs, HashSet::new()).map_err(|e| e.to_string())
}

/// A JSON object as a record; with a `shape`, only the members it declares.
fn record(
    map: &serde_json::Map<String, serde_json::Value>,
    shape: Option<&ClaimsShape>,
    depth: usize,
    budget: &mut usize,
) -> RestrictedExpression {
    let fields: Vec<(String, RestrictedExpression)> = map
        .iter()
        .filter_map(|(k, v)| {
            let nested = match shape {
                Some(shape) => shape.0.get(k)?.as_ref(),
                None => None,
            };
            let value = match (v, nested) {
                (serde_json::Value::Object(inner), Some(nested)) => {
                    if depth + 1 > MAX_CLAIM_DEPTH || *budget == 0 {
                        return None;
                    }
                    *budget -= 1;
                    record(inner, Some(nested), depth + 1, budget)
                }
                _ => claim_value(v, depth + 1, budget)?,
            };
            Some((k.clone(), value))
        })
        .collect();
    RestrictedExpression::new_record(fields).expect("JSON object keys are distinct")
}

/// A claim as a Cedar value: strings, booleans, integers, sets and records. Floats and nulls
/// have no Cedar form and are left out (so `has` is false for them).
fn claim_value(
    value: &serde_json::Value,
    depth: usize,
    budget: &mut usize,
) -> Option<RestrictedExpression> {
    if depth > MAX_CLAIM_DEPTH || *budget == 0 {
        return None;
    }
    *budget -= 1;
    Some(match value {
        serde_json::Value::String(s) => RestrictedExpression::new_string(s.clone()),
        serde_json::Value::Bool(b) => RestrictedExpression::new_bool(*b),
        serde_json::Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
        serde_json::Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .filter_map(|v| claim_value(v, depth + 1, budget))
                .collect::<Vec<_>>(),
        ),
        serde_json::Value::Object(map) => record(map, None, depth, budget),
        serde_json::Value::Null => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::policies::{Source, compile};
    use apiguard_model::{AuthMethod, ClientInfo};
    use std::time::Duration;

    struct Listed;
    impl Reputation for Listed {
        fn lookup(&self, ip: IpAddr) -> Option<ReputationEntry> {
            (ip == IpAddr::from([203, 0, 113, 9])).then(|| ReputationEntry {
                source: "hub".into(),
            })
        }
    }

    const CLAIMS: &str = "namespace ApiGuard { type Claims = { role?: String, groups?: Set<String>, level?: Long }; }";

    fn stage(policy: &str, route: &str, grants: Arc<Grants>) -> AuthzStage {
        let policies = compile(
            &[Source {
                file: "t.cedar",
                text: policy,
            }],
            Some(&Source {
                file: "claims.cedarschema",
                text: CLAIMS,
            }),
        )
        .unwrap_or_else(|p| panic!("{p:?}"));
        AuthzStage::new(
            route,
            Arc::new(policies),
            grants,
            Arc::new(Listed),
            AuthzMode::Enforce,
        )
    }

    struct Req {
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        client: ClientInfo,
        body: Option<bytes::Bytes>,
    }

    fn req(method: &str, uri: &str, peer: &str) -> Req {
        Req {
            method: method.parse().unwrap(),
            uri: uri.parse().unwrap(),
            headers: http::HeaderMap::new(),
            client: ClientInfo {
                peer: format!("{peer}:40000").parse().unwrap(),
                tls: false,
                client_cert_subject: None,
                client_cert_sans: Vec::new(),
            },
            body: None,
        }
    }

    fn run(stage: &AuthzStage, r: &Req, identity: Option<Identity>, score: u32) -> Outcome {
        let view = RequestView {
            method: &r.method,
            uri: &r.uri,
            version: http::Version::HTTP_11,
            headers: &r.headers,
            client: &r.client,
            route: "r",
            request_id: "id",
            body: r.body.as_ref(),
        };
        let mut ctx = RequestContext {
            score,
            identity,
            ..RequestContext::default()
        };
        stage.inspect(&view, &mut ctx)
    }

    fn alice(claims: serde_json::Value) -> Option<Identity> {
        Some(Identity {
            subject: "alice".into(),
            method: AuthMethod::Jwt,
            claims: claims.as_object().unwrap().clone(),
        })
    }

    fn rule(outcome: &Outcome) -> Option<&str> {
        match outcome {
            Outcome::Block {
                status: 403,
                finding,
            } => Some(&finding.rule_id),
            Outcome::Continue => None,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_permitting_policy_means_deny() {
        let s = stage(
            r#"permit(principal, action, resource == ApiGuard::Route::"other");"#,
            "users",
            Arc::default(),
        );
        let out = run(&s, &req("GET", "/users", "127.0.0.1"), None, 0);
        assert_eq!(rule(&out), Some("authz.deny"));
    }

    #[test]
    fn claims_method_and_action_groups_decide() {
        let s = stage(
            r#"
            permit(principal is ApiGuard::Identity, action in ApiGuard::Action::"read", resource)
              when { principal.claims has role && principal.claims.role == "reader" };
            permit(principal == ApiGuard::Identity::"alice", action == ApiGuard::Action::"DELETE", resource)
              when { principal.auth_method == "jwt" && principal.claims has groups
                     && principal.claims.groups.contains("admins") };
            "#,
            "users",
            Arc::default(),
        );
        let get = req("GET", "/users/1", "127.0.0.1");
        let delete = req("DELETE", "/users/1", "127.0.0.1");
        let reader = alice(serde_json::json!({"role": "reader", "exp": 1.5, "x": null}));
        assert_eq!(rule(&run(&s, &get, reader.clone(), 0)), None);
        assert_eq!(rule(&run(&s, &delete, reader, 0)), Some("authz.deny"));
        let admin = alice(serde_json::json!({"groups": ["admins", "staff"]}));
        assert_eq!(rule(&run(&s, &delete, admin.clone(), 0)), None);
        assert_eq!(rule(&run(&s, &get, admin, 0)), Some("authz.deny"));
        assert_eq!(rule(&run(&s, &get, None, 0)), Some("authz.deny"));
    }

    #[test]
    fn context_address_path_risk_and_reputation_decide() {
        let s = stage(
            r#"
            permit(principal, action, resource)
              when { context.client_ip.isInRange(ip("10.0.0.0/8")) && context.path like "/users/*" };
            forbid(principal, action, resource) when { context.risk_score >= 4 };
            forbid(principal, action, resource) when { context.reputation.listed };
            permit(principal, action, resource) when { context.client_ip == ip("203.0.113.9") };
            "#,
            "users",
            Arc::default(),
        );
        assert_eq!(
            rule(&run(&s, &req("GET", "/users/7", "10.1.1.1"), None, 0)),
            None
        );
        // Dot segments are resolved before the path condition.
        assert_eq!(
            rule(&run(
                &s,
                &req("GET", "/admin/../users/7", "10.1.1.1"),
                None,
                0
            )),
            None
        );
        assert_eq!(
            rule(&run(&s, &req("GET", "/orders", "10.1.1.1"), None, 0)),
            Some("authz.deny")
        );
        assert_eq!(
            rule(&run(&s, &req("GET", "/users/7", "192.0.2.1"), None, 0)),
            Some("authz.deny")
        );
        assert_eq!(
            rule(&run(&s, &req("GET", "/users/7", "10.1.1.1"), None, 4)),
            Some("authz.forbid")
        );
        let listed = run(&s, &req("GET", "/users/7", "203.0.113.9"), None, 0);
        assert_eq!(rule(&listed), Some("authz.forbid"));
        if let Outcome::Block { finding, .. } = listed {
            assert!(
                finding.evidence.contains("t.cedar:5"),
                "{}",
                finding.evidence
            );
        }
    }

    #[test]
    fn time_is_a_cedar_datetime() {
        let s = stage(
            r#"permit(principal, action, resource)
                 when { context.time > datetime("2020-01-01") && context.time.toDate() < datetime("2300-01-01") };"#,
            "users",
            Arc::default(),
        );
        assert_eq!(rule(&run(&s, &req("GET", "/", "127.0.0.1"), None, 0)), None);
    }

    #[test]
    fn a_forbid_that_cannot_be_evaluated_denies() {
        // The schema declares `level` a Long; a token saying "level": "high" makes the
        // forbid policy fail at run time, which must deny rather than skip the policy.
        let s = stage(
            r#"
            permit(principal, action, resource);
            forbid(principal is ApiGuard::Identity, action, resource)
              when { principal.claims has level && principal.claims.level < 3 };
            "#,
            "users",
            Arc::default(),
        );
        let get = req("GET", "/", "127.0.0.1");
        assert_eq!(
            rule(&run(&s, &get, alice(serde_json::json!({"level": 5})), 0)),
            None
        );
        assert_eq!(
            rule(&run(&s, &get, alice(serde_json::json!({"level": 1})), 0)),
            Some("authz.forbid")
        );
        assert_eq!(
            rule(&run(
                &s,
                &get,
                alice(serde_json::json!({"level": "high"})),
                0
            )),
            Some("authz.forbid_error")
        );
    }

    #[test]
    fn a_grant_lifts_a_default_deny_but_not_a_forbid() {
        let grants = Arc::new(Grants::default());
        let s = stage(
            r#"forbid(principal, action, resource) when { context.risk_score > 10 };"#,
            "admin",
            grants.clone(),
        );
        let get = req("GET", "/admin", "127.0.0.1");
        assert_eq!(
            rule(&run(&s, &get, alice(serde_json::json!({})), 0)),
            Some("authz.deny")
        );
        grants
            .grant(
                crate::authz::GrantRequest {
                    principal: crate::authz::GrantPrincipal::Identity("alice".into()),
                    routes: vec!["admin".into()],
                    actions: vec!["GET".into()],
                    client: None,
                    ttl: Duration::from_secs(60),
                    reason: "test".into(),
                    granted_by: "test".into(),
                },
                &["admin"],
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(rule(&run(&s, &get, alice(serde_json::json!({})), 0)), None);
        assert_eq!(
            rule(&run(&s, &get, alice(serde_json::json!({})), 11)),
            Some("authz.forbid")
        );
        assert_eq!(rule(&run(&s, &get, None, 0)), Some("authz.deny"));
    }

    #[test]
    fn graphql_and_grpc_reach_the_context() {
        let s = stage(
            r#"
            permit(principal, action, resource)
              when { context has graphql && context.graphql.operation_types == ["query"] };
            permit(principal, action, resource)
              when { context has grpc_method && context.grpc_method == "shop.Orders/List" };
            "#,
            "api",
            Arc::default(),
        );
        assert!(s.needs_body());
        let mut query = req("POST", "/graphql", "127.0.0.1");
        query.headers.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        query.body = Some(bytes::Bytes::from_static(br#"{"query":"query Q { a }"}"#));
        assert_eq!(rule(&run(&s, &query, None, 0)), None);
        let mut mutation = req("POST", "/graphql", "127.0.0.1");
        mutation.headers = query.headers.clone();
        mutation.body = Some(bytes::Bytes::from_static(
            br#"[{"query":"query Q { a }"},{"query":"mutation { b }"}]"#,
        ));
        assert_eq!(rule(&run(&s, &mutation, None, 0)), Some("authz.deny"));
        let get = req("GET", "/graphql?query=%7B%20a%20%7D", "127.0.0.1");
        assert_eq!(rule(&run(&s, &get, None, 0)), None);
        let mut grpc = req("POST", "/shop.Orders/List", "127.0.0.1");
        grpc.headers.insert(
            http::header::CONTENT_TYPE,
            "application/grpc".parse().unwrap(),
        );
        assert_eq!(rule(&run(&s, &grpc, None, 0)), None);
        let mut other = req("POST", "/shop.Orders/Delete", "127.0.0.1");
        other.headers = grpc.headers.clone();
        assert_eq!(rule(&run(&s, &other, None, 0)), Some("authz.deny"));
    }

    #[test]
    fn monitor_mode_scores_nothing_and_lets_through() {
        let mut s = stage(
            r#"permit(principal, action, resource == ApiGuard::Route::"other");"#,
            "a",
            Arc::default(),
        );
        s.mode = AuthzMode::Monitor;
        match run(&s, &req("GET", "/", "127.0.0.1"), None, 0) {
            Outcome::Score(findings) => {
                assert_eq!(findings.len(), 1);
                assert_eq!(findings[0].score, 0);
                assert_eq!(findings[0].rule_id, "authz.deny");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_declared_claims_reach_policies() {
        let s = stage(
            r#"permit(principal, action, resource);"#,
            "a",
            Arc::default(),
        );
        let identity = alice(serde_json::json!({
            "role": "reader", "groups": ["a", 7, null], "secret": "x", "level": 2.5
        }))
        .unwrap();
        let uid = EntityUid::from_type_name_and_id(
            s.policies.identity_type.clone(),
            EntityId::new("alice"),
        );
        let entity = identity_entity(uid, &identity, &s.policies.claims).unwrap();
        let Some(Ok(cedar_policy::EvalResult::Record(claims))) = entity.attr("claims") else {
            panic!("claims is a record");
        };
        let mut names: Vec<&String> = claims.iter().map(|(k, _)| k).collect();
        names.sort();
        assert_eq!(
            names,
            ["groups", "role"],
            "undeclared and float claims are left out"
        );
    }

    #[test]
    fn hosts_lose_their_port() {
        let mut r = req("GET", "/", "127.0.0.1");
        r.headers
            .insert(http::header::HOST, "API.example.com:8443".parse().unwrap());
        let view = RequestView {
            method: &r.method,
            uri: &r.uri,
            version: http::Version::HTTP_11,
            headers: &r.headers,
            client: &r.client,
            route: "r",
            request_id: "id",
            body: None,
        };
        assert_eq!(host(&view), "api.example.com");
    }

    fn grant_alice(grants: &Grants, ttl: Duration) -> Arc<crate::authz::Grant> {
        grants
            .grant(
                crate::authz::GrantRequest {
                    principal: crate::authz::GrantPrincipal::Identity("alice".into()),
                    routes: vec!["admin".into()],
                    actions: vec!["GET".into()],
                    client: None,
                    ttl,
                    reason: "test".into(),
                    granted_by: "test".into(),
                },
                &["admin"],
                Duration::from_secs(60),
            )
            .unwrap()
    }

    #[test]
    fn a_repeated_request_is_answered_from_the_cache_and_new_claims_are_evaluated() {
        let s = stage(
            r#"permit(principal is ApiGuard::Identity, action, resource)
                 when { principal.claims has role && principal.claims.role == "reader" };"#,
            "users",
            Arc::default(),
        );
        let get = req("GET", "/users/1", "127.0.0.1");
        let reader = alice(serde_json::json!({"role": "reader", "jti": "1"}));
        assert_eq!(rule(&run(&s, &get, reader.clone(), 0)), None);
        assert_eq!(rule(&run(&s, &get, reader, 0)), None);
        assert_eq!((s.cache_stats().hits, s.cache_stats().misses), (1, 1));
        // An undeclared claim (a new token's `jti`) does not change the decision: a hit.
        let next_token = alice(serde_json::json!({"role": "reader", "jti": "2"}));
        assert_eq!(rule(&run(&s, &get, next_token, 0)), None);
        assert_eq!(s.cache_stats().hits, 2);
        // A declared claim that changes is another question.
        let writer = alice(serde_json::json!({"role": "writer"}));
        assert_eq!(rule(&run(&s, &get, writer.clone(), 0)), Some("authz.deny"));
        assert_eq!(rule(&run(&s, &get, writer, 0)), Some("authz.deny"));
        let mut bob = alice(serde_json::json!({"role": "reader"})).unwrap();
        bob.subject = "bob".into();
        assert_eq!(rule(&run(&s, &get, Some(bob), 0)), None);
        assert_eq!(rule(&run(&s, &get, None, 0)), Some("authz.deny"));
        assert_eq!(
            rule(&run(&s, &req("DELETE", "/users/1", "127.0.0.1"), None, 0)),
            Some("authz.deny")
        );
        assert_eq!(s.cache_stats().misses, 5);
    }

    #[test]
    fn context_the_policies_read_is_in_the_key_and_the_rest_is_not() {
        let s = stage(
            r#"permit(principal, action, resource);
               forbid(principal, action, resource) when { context.risk_score >= 4 };
               forbid(principal, action, resource) when { context.reputation.listed };"#,
            "users",
            Arc::default(),
        );
        let get = req("GET", "/users/1", "10.0.0.1");
        assert_eq!(rule(&run(&s, &get, None, 0)), None);
        assert_eq!(rule(&run(&s, &get, None, 4)), Some("authz.forbid"));
        assert_eq!(rule(&run(&s, &get, None, 0)), None);
        let listed = req("GET", "/users/1", "203.0.113.9");
        assert_eq!(rule(&run(&s, &listed, None, 0)), Some("authz.forbid"));
        assert_eq!(rule(&run(&s, &listed, None, 0)), Some("authz.forbid"));
        // No policy reads the address or the path: another client or path is a hit.
        let hits = s.cache_stats().hits;
        assert_eq!(
            rule(&run(&s, &req("GET", "/users/2", "10.9.9.9"), None, 0)),
            None
        );
        assert_eq!(s.cache_stats().hits, hits + 1);

        let by_address = stage(
            r#"permit(principal, action, resource)
                 when { context.client_ip.isInRange(ip("10.0.0.0/8")) };"#,
            "users",
            Arc::default(),
        );
        assert_eq!(rule(&run(&by_address, &get, None, 0)), None);
        assert_eq!(
            rule(&run(&by_address, &req("GET", "/", "192.0.2.1"), None, 0)),
            Some("authz.deny")
        );
    }

    #[test]
    fn grants_and_their_end_apply_to_a_cached_denial() {
        let grants = Arc::new(Grants::default());
        let s = stage(
            r#"forbid(principal, action, resource) when { context.risk_score > 10 };"#,
            "admin",
            grants.clone(),
        );
        let get = req("GET", "/admin", "127.0.0.1");
        let who = || alice(serde_json::json!({}));
        assert_eq!(rule(&run(&s, &get, who(), 0)), Some("authz.deny"));
        assert_eq!(rule(&run(&s, &get, who(), 0)), Some("authz.deny"));
        let grant = grant_alice(&grants, Duration::from_secs(60));
        assert_eq!(rule(&run(&s, &get, who(), 0)), None);
        grants.revoke(&grant.id, "test");
        assert_eq!(rule(&run(&s, &get, who(), 0)), Some("authz.deny"));
        grant_alice(&grants, Duration::from_millis(300));
        assert_eq!(rule(&run(&s, &get, who(), 0)), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(
            rule(&run(&s, &get, who(), 0)),
            Some("authz.deny"),
            "the grant expired"
        );
        assert!(s.cache_stats().hits >= 4, "{:?}", s.cache_stats());
    }

    #[test]
    fn a_new_policy_set_is_asked_afresh() {
        // A reload compiles new policies into new stages: nothing carries over.
        let get = req("GET", "/users/1", "127.0.0.1");
        let old = stage(
            r#"permit(principal, action, resource);"#,
            "users",
            Arc::default(),
        );
        assert_eq!(rule(&run(&old, &get, None, 0)), None);
        assert_eq!(rule(&run(&old, &get, None, 0)), None);
        let new = stage(
            r#"permit(principal, action, resource == ApiGuard::Route::"other");"#,
            "users",
            Arc::default(),
        );
        assert_eq!(rule(&run(&new, &get, None, 0)), Some("authz.deny"));
        assert_eq!(new.cache_stats().hits, 0);
    }

    #[test]
    fn the_cache_is_bounded_and_can_be_turned_off() {
        let s = stage(
            r#"permit(principal is ApiGuard::Identity, action, resource);"#,
            "users",
            Arc::default(),
        )
        .with_decision_cache(64);
        let get = req("GET", "/users/1", "127.0.0.1");
        for i in 0..1000 {
            let mut who = alice(serde_json::json!({})).unwrap();
            who.subject = format!("user-{i}");
            assert_eq!(rule(&run(&s, &get, Some(who), 0)), None);
        }
        let stats = s.cache_stats();
        assert!(stats.entries <= 64, "{stats:?}");
        assert_eq!(stats.misses, 1000);

        let off = stage(
            r#"permit(principal, action, resource);"#,
            "users",
            Arc::default(),
        )
        .with_decision_cache(0);
        assert_eq!(rule(&run(&off, &get, None, 0)), None);
        assert_eq!(rule(&run(&off, &get, None, 0)), None);
        assert_eq!(off.cache_stats(), CacheStats::default());
    }

    #[test]
    fn a_forbid_that_cannot_be_evaluated_denies_from_the_cache_too() {
        let s = stage(
            r#"permit(principal, action, resource);
               forbid(principal is ApiGuard::Identity, action, resource)
                 when { principal.claims has level && principal.claims.level < 3 };"#,
            "users",
            Arc::default(),
        );
        let get = req("GET", "/", "127.0.0.1");
        for _ in 0..2 {
            assert_eq!(
                rule(&run(
                    &s,
                    &get,
                    alice(serde_json::json!({"level": "high"})),
                    0
                )),
                Some("authz.forbid_error")
            );
        }
        assert_eq!(s.cache_stats().hits, 1);
    }
}
