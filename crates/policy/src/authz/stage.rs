//! The authorisation stage: one Cedar request per HTTP request.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

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
        AuthzStage {
            policies,
            grants,
            reputation,
            mode,
            route: route.to_owned(),
            resource,
            authorizer: Authorizer::new(),
        }
    }

    /// The Cedar request and entities for `request`, or the reason it could not be built.
    fn cedar_request(
        &self,
        request: &RequestView<'_>,
        ctx: &RequestContext,
    ) -> Result<(Request, Entities), String> {
        let policies = &self.policies;
        let (principal, entity) = match &ctx.identity {
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
            .get(request.method.as_str())
            .unwrap_or(&policies.other_action)
            .clone();
        let context = Context::from_pairs(self.context_pairs(request, ctx))
            .map_err(|e| format!("context: {e}"))?;
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

    fn context_pairs(
        &self,
        request: &RequestView<'_>,
        ctx: &RequestContext,
    ) -> Vec<(String, RestrictedExpression)> {
        let ip = request.client.peer.ip().to_canonical();
        let listed = self.reputation.lookup(ip);
        let path = crate::openapi::normalize_path(request.path());
        let mut pairs = vec![
            (
                "method".to_owned(),
                RestrictedExpression::new_string(request.method.as_str().to_owned()),
            ),
            (
                "path".to_owned(),
                RestrictedExpression::new_string(path.into_owned()),
            ),
            (
                "host".to_owned(),
                RestrictedExpression::new_string(host(request)),
            ),
            ("client_ip".to_owned(), ip_expression(ip)),
            (
                "tls".to_owned(),
                RestrictedExpression::new_bool(request.client.tls),
            ),
            ("time".to_owned(), time_expression()),
            (
                "risk_score".to_owned(),
                RestrictedExpression::new_long(i64::from(ctx.score)),
            ),
            (
                "reputation".to_owned(),
                RestrictedExpression::new_record([
                    (
                        "listed".to_owned(),
                        RestrictedExpression::new_bool(listed.is_some()),
                    ),
                    (
                        "source".to_owned(),
                        RestrictedExpression::new_string(
                            listed.map(|l| l.source).unwrap_or_default(),
                        ),
                    ),
                ])
                .expect("distinct keys"),
            ),
        ];
        if let Some(method) = grpc_method(request) {
            pairs.push((
                "grpc_method".to_owned(),
                RestrictedExpression::new_string(method.to_owned()),
            ));
        }
        if self.policies.uses_graphql
            && let Some(ops) = graphql_operations(request)
        {
            let set = |values: std::collections::BTreeSet<String>| {
                RestrictedExpression::new_set(
                    values.into_iter().map(RestrictedExpression::new_string),
                )
            };
            pairs.push((
                "graphql".to_owned(),
                RestrictedExpression::new_record([
                    ("operation_types".to_owned(), set(ops.types)),
                    ("operation_names".to_owned(), set(ops.names)),
                ])
                .expect("distinct keys"),
            ));
        }
        pairs
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
        let (cedar_request, entities) = match self.cedar_request(request, ctx) {
            Ok(built) => built,
            Err(reason) => {
                return self.refuse(
                    "authz.error",
                    format!(
                        "{} {} on route {}: the request could not be evaluated ({reason})",
                        self.principal_text(ctx),
                        request.method,
                        self.route
                    ),
                );
            }
        };
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
        let who = || format!("{} {}", self.principal_text(ctx), request.method);
        if !errored_forbids.is_empty() {
            return self.refuse(
                "authz.forbid_error",
                format!(
                    "{} on route {}: forbid policy could not be evaluated ({}); denied",
                    who(),
                    self.route,
                    errored_forbids.join(", ")
                ),
            );
        }
        match response.decision() {
            Decision::Allow => Outcome::Continue,
            Decision::Deny => {
                let forbids: Vec<String> = diagnostics
                    .reason()
                    .map(|id| self.policies.origin(id))
                    .collect();
                if !forbids.is_empty() {
                    return self.refuse(
                        "authz.forbid",
                        format!(
                            "{} on route {}: forbidden by {}",
                            who(),
                            self.route,
                            forbids.join(", ")
                        ),
                    );
                }
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

/// `datetime("<now, UTC, to the second>")`.
fn time_expression() -> RestrictedExpression {
    let now = chrono::Utc::now();
    let second = now.timestamp();
    TIME_EXPRESSION.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &*cache {
            Some((cached, expression)) if *cached == second => expression.clone(),
            _ => {
                let expression = RestrictedExpression::new_datetime(
                    now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                );
                *cache = Some((second, expression.clone()));
                expression
            }
        }
    })
}

/// The request host without the port, lower case.
fn host(request: &RequestView<'_>) -> String {
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
    without_port.to_ascii_lowercase()
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
}
