//! Loading Cedar policies: parse every file, name every policy, build the schema from the
//! built-in fragment and the configured one, and validate strictly. Any problem rejects the
//! whole set, with the file, line and column Cedar gives.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use cedar_policy::{
    Effect, Entities, EntityTypeName, EntityUid, PolicyId, PolicySet, Schema, SchemaFragment,
    ValidationMode, Validator,
};
use miette::Diagnostic;

use super::cache::ContextReads;

/// The built-in schema: the entity types, actions and context the gateway provides.
pub const SCHEMA_TEXT: &str = include_str!("apiguard.cedarschema");

/// The id of the principal of requests without an identity: `ApiGuard::Anonymous::"anonymous"`.
pub const ANONYMOUS_ID: &str = "anonymous";

/// Used when the configured schema does not declare `ApiGuard::Claims`: no claim is readable.
const EMPTY_CLAIMS: &str = "namespace ApiGuard { type Claims = {}; }";

/// One problem in a policy or schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The file as configured.
    pub file: String,
    /// 1-based line and column, when Cedar locates the problem.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A validated policy set with what the request path needs precomputed.
pub struct Policies {
    pub(crate) set: PolicySet,
    /// The action entities (`GET` in `read`, ...), for `action in` conditions.
    pub(crate) action_entities: Entities,
    pub(crate) identity_type: EntityTypeName,
    pub(crate) route_type: EntityTypeName,
    pub(crate) anonymous: EntityUid,
    /// Action uids by method name, and `OTHER`.
    pub(crate) actions: HashMap<String, EntityUid>,
    pub(crate) other_action: EntityUid,
    /// Ids of `forbid` policies: one that errors on a request denies it.
    pub(crate) forbids: HashSet<PolicyId>,
    /// Whether some policy reads `context.graphql` (then the body is parsed for it).
    pub(crate) uses_graphql: bool,
    /// The context attributes some policy reads: the others stay out of the decision
    /// cache's key.
    pub(crate) reads: ContextReads,
    /// Where each policy comes from (`file:line`), for findings and logs.
    pub(crate) origins: HashMap<PolicyId, String>,
    /// The claims the schema declares: only these reach policies, so what the validator
    /// checked is what runs.
    pub(crate) claims: ClaimsShape,
}

/// The members a record type declares; a member that is itself a record has its own shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimsShape(pub(crate) HashMap<String, Option<ClaimsShape>>);

impl ClaimsShape {
    /// Reads a record type of the JSON schema format.
    fn from_json(ty: &serde_json::Value, depth: usize) -> ClaimsShape {
        let mut members = HashMap::new();
        if depth > 16 || ty["type"] != "Record" {
            return ClaimsShape(members);
        }
        if let Some(attributes) = ty["attributes"].as_object() {
            for (name, attribute) in attributes {
                let nested = (attribute["type"] == "Record")
                    .then(|| ClaimsShape::from_json(attribute, depth + 1));
                members.insert(name.clone(), nested);
            }
        }
        ClaimsShape(members)
    }
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("policies", &self.set.num_of_policies())
            .field("uses_graphql", &self.uses_graphql)
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.set.num_of_policies()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether the stage needs the request body (some policy reads `context.graphql`).
    pub fn uses_graphql(&self) -> bool {
        self.uses_graphql
    }

    /// Where a policy comes from: `file:line`, or its id.
    pub fn origin(&self, id: &PolicyId) -> String {
        self.origins
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

/// A file's name and content.
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = text
        .get(line_start..offset)
        .map_or(offset - line_start, |s| s.chars().count())
        + 1;
    (line, column)
}

/// The first labelled position of a diagnostic, in `text`.
fn position_of(diagnostic: &dyn Diagnostic, text: &str) -> Option<(usize, usize)> {
    let label = diagnostic.labels()?.next()?;
    Some(line_column(text, label.offset()))
}

/// One line: the error and, when Cedar has one, its help.
fn describe(diagnostic: &dyn Diagnostic, error: &dyn fmt::Display) -> String {
    let mut message = error.to_string();
    if let Some(help) = diagnostic.help() {
        message.push_str(&format!(" ({help})"));
    }
    message.replace('\n', " ")
}

/// Parses and validates policy files against the built-in schema plus `schema` (a Cedar
/// schema in the human syntax, or JSON when the file name ends in `.json`). Every problem is
/// reported; any problem rejects the whole set.
pub fn compile(
    policy_files: &[Source<'_>],
    schema: Option<&Source<'_>>,
) -> Result<Policies, Vec<PolicyProblem>> {
    let mut problems = Vec::new();
    let schema = build_schema(schema, &mut problems);
    let mut set = PolicySet::new();
    let mut origins = HashMap::new();
    // Which file each policy id came from, for locating validation errors.
    let mut texts: HashMap<PolicyId, usize> = HashMap::new();
    for (index, source) in policy_files.iter().enumerate() {
        let parsed = match PolicySet::from_str(source.text) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for error in errors.iter() {
                    problems.push(PolicyProblem {
                        file: source.file.to_owned(),
                        position: position_of(error, source.text),
                        message: describe(error, error),
                    });
                }
                continue;
            }
        };
        if parsed.num_of_templates() > 0 {
            problems.push(PolicyProblem {
                file: source.file.to_owned(),
                position: None,
                message: "policy templates (with ?principal or ?resource) are not supported; \
                          write static policies"
                    .into(),
            });
            continue;
        }
        // Cedar numbers the policies of a text policy0, policy1, ... in file order.
        let mut policies: Vec<_> = parsed.policies().cloned().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let mut search_from = 0;
        for (n, policy) in policies.into_iter().enumerate() {
            let name = policy
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}#{n}", source.file));
            let id = PolicyId::new(&name);
            let line = policy_line(&policy, source.text, &mut search_from);
            let origin = match line {
                Some(line) => format!("{}:{line}", source.file),
                None => source.file.to_owned(),
            };
            if let Some(first) = origins.get(&id) {
                problems.push(PolicyProblem {
                    file: source.file.to_owned(),
                    position: line.map(|l| (l, 1)),
                    message: format!("policy id `{name}` is also used at {first}"),
                });
                continue;
            }
            origins.insert(id.clone(), origin);
            texts.insert(id.clone(), index);
            if let Err(e) = set.add(policy.new_id(id)) {
                problems.push(PolicyProblem {
                    file: source.file.to_owned(),
                    position: line.map(|l| (l, 1)),
                    message: e.to_string(),
                });
            }
        }
    }
    let Some((schema, claims)) = schema else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let validator = Validator::new(schema.clone());
    let result = validator.validate(&set, ValidationMode::Strict);
    let mut push = |problem: PolicyProblem| {
        // The validator reports a problem once per action the policy may apply to.
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    };
    for error in result.validation_errors() {
        let source = texts.get(error.policy_id()).map(|i| &policy_files[*i]);
        push(PolicyProblem {
            file: source.map_or_else(|| error.policy_id().to_string(), |s| s.file.to_owned()),
            position: source.and_then(|s| position_of(error, s.text)),
            message: without_action(&describe(error, error)),
        });
    }
    for warning in result.validation_warnings() {
        let source = texts.get(warning.policy_id()).map(|i| &policy_files[*i]);
        let never_applies = matches!(
            warning,
            cedar_policy::ValidationWarning::ImpossiblePolicy(_)
                | cedar_policy::ValidationWarning::InvalidActionApplication(_)
        );
        if never_applies {
            // Almost always a mistake, such as `has` on a claim the schema does not declare.
            push(PolicyProblem {
                file: source.map_or_else(|| warning.policy_id().to_string(), |s| s.file.to_owned()),
                position: source.and_then(|s| position_of(warning, s.text)),
                message: format!(
                    "{} (a claim that ApiGuard::Claims does not declare is never present)",
                    without_action(&describe(warning, warning))
                ),
            });
        } else {
            tracing::warn!(
                file = source.map_or("", |s| s.file),
                policy = %warning.policy_id(),
                "Cedar policy warning: {warning}"
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let action_entities = schema.action_entities().map_err(|e| {
        vec![PolicyProblem {
            file: "built-in schema".into(),
            position: None,
            message: e.to_string(),
        }]
    })?;
    let forbids = set
        .policies()
        .filter(|p| p.effect() == Effect::Forbid)
        .map(|p| p.id().clone())
        .collect();
    let uses_graphql = set.policies().any(|p| p.to_string().contains("graphql"));
    let mut reads = ContextReads::default();
    for policy in set.policies() {
        match policy.to_json() {
            Ok(json) => reads.add_policy(&json),
            Err(_) => reads = ContextReads::ALL,
        }
    }
    let name = |text: &str| EntityTypeName::from_str(text).expect("a valid built-in type name");
    let uid = |text: &str| EntityUid::from_str(text).expect("a valid built-in entity uid");
    let actions = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .map(|m| (m.to_owned(), uid(&format!("ApiGuard::Action::\"{m}\""))))
        .collect();
    Ok(Policies {
        set,
        action_entities,
        identity_type: name("ApiGuard::Identity"),
        route_type: name("ApiGuard::Route"),
        anonymous: uid(&format!("ApiGuard::Anonymous::\"{ANONYMOUS_ID}\"")),
        actions,
        other_action: uid("ApiGuard::Action::\"OTHER\""),
        forbids,
        uses_graphql,
        reads,
        origins,
        claims,
    })
}

/// Drops the ` for ApiGuard::Action::"GET"` part Cedar puts in per-action messages.
fn without_action(message: &str) -> String {
    const MARK: &str = " for ApiGuard::Action::\"";
    let Some(start) = message.find(MARK) else {
        return message.to_owned();
    };
    let rest = &message[start + MARK.len()..];
    match rest.find('"') {
        Some(end) => format!("{}{}", &message[..start], &rest[end + 1..]),
        None => message.to_owned(),
    }
}

/// The line a policy starts on in its file, searching from `from` (policies come in file
/// order).
fn policy_line(policy: &cedar_policy::Policy, text: &str, from: &mut usize) -> Option<usize> {
    // The policy's source location is not public; its text is. Find the policy's own source
    // text in the file.
    let own = policy.to_string();
    let first = own.lines().find(|l| !l.trim().is_empty())?.trim();
    let offset = *from + text.get(*from..)?.find(first)?;
    *from = offset + first.len();
    Some(line_column(text, offset).0)
}

fn build_schema(
    user: Option<&Source<'_>>,
    problems: &mut Vec<PolicyProblem>,
) -> Option<(Schema, ClaimsShape)> {
    let (builtin, _) = SchemaFragment::from_cedarschema_str(SCHEMA_TEXT)
        .expect("the built-in Cedar schema parses");
    let mut fragments = vec![builtin];
    let mut claims = None;
    if let Some(source) = user {
        let parsed = if source.file.ends_with(".json") {
            SchemaFragment::from_json_str(source.text).map_err(|e| PolicyProblem {
                file: source.file.to_owned(),
                position: position_of(&e, source.text),
                message: describe(&e, &e),
            })
        } else {
            SchemaFragment::from_cedarschema_str(source.text)
                .map(|(fragment, _warnings)| fragment)
                .map_err(|e| PolicyProblem {
                    file: source.file.to_owned(),
                    position: position_of(&e, source.text),
                    message: describe(&e, &e),
                })
        };
        match parsed {
            Ok(fragment) => {
                claims = fragment
                    .clone()
                    .to_json_value()
                    .ok()
                    .map(|json| json["ApiGuard"]["commonTypes"]["Claims"].clone())
                    .filter(|claims| !claims.is_null())
                    .map(|claims| ClaimsShape::from_json(&claims, 0));
                fragments.push(fragment);
            }
            Err(problem) => {
                problems.push(problem);
                return None;
            }
        }
    }
    if claims.is_none() {
        let (empty, _) =
            SchemaFragment::from_cedarschema_str(EMPTY_CLAIMS).expect("the empty claims parse");
        fragments.push(empty);
    }
    match Schema::from_schema_fragments(fragments) {
        Ok(schema) => Some((schema, claims.unwrap_or_default())),
        Err(e) => {
            problems.push(PolicyProblem {
                file: user.map_or("built-in schema", |s| s.file).to_owned(),
                position: user.and_then(|s| position_of(&e, s.text)),
                message: format!(
                    "the schema does not combine with the built-in ApiGuard schema: {}",
                    describe(&e, &e)
                ),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src<'a>(file: &'a str, text: &'a str) -> Source<'a> {
        Source { file, text }
    }

    #[test]
    fn the_builtin_schema_and_a_valid_policy_compile() {
        let policies = compile(
            &[src(
                "p.cedar",
                r#"@id("read-users")
permit(principal, action in ApiGuard::Action::"read", resource == ApiGuard::Route::"users");
forbid(principal, action, resource) when { context.risk_score > 10 };"#,
            )],
            None,
        )
        .unwrap();
        assert_eq!(policies.len(), 2);
        assert_eq!(policies.origin(&PolicyId::new("read-users")), "p.cedar:1");
        assert_eq!(policies.origin(&PolicyId::new("p.cedar#1")), "p.cedar:3");
        assert_eq!(policies.forbids.len(), 1);
        assert!(!policies.uses_graphql());
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let problems = compile(
            &[src(
                "bad.cedar",
                "permit(principal, action, resource);\npermit(principal action, resource);",
            )],
            None,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].file, "bad.cedar");
        assert_eq!(problems[0].position.map(|p| p.0), Some(2), "{problems:?}");
    }

    #[test]
    fn a_policy_that_does_not_type_check_is_refused_with_its_position() {
        let problems = compile(
            &[src(
                "typo.cedar",
                "permit(principal, action, resource)\n  when { context.risk > 3 };",
            )],
            None,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = problems[0].to_string();
        assert!(text.starts_with("typo.cedar:2:"), "{text}");
        assert!(text.contains("risk"), "{text}");
    }

    #[test]
    fn claims_are_readable_only_once_the_schema_declares_them() {
        let policy = r#"permit(principal is ApiGuard::Identity, action, resource)
  when { principal.claims has role && principal.claims.role == "admin" };"#;
        let problems = compile(&[src("p.cedar", policy)], None).unwrap_err();
        assert!(
            problems[0].message.contains("never present"),
            "{problems:?}"
        );
        let unguarded = "permit(principal is ApiGuard::Identity, action, resource)\n  when { principal.claims.role == \"admin\" };";
        let problems = compile(&[src("p.cedar", unguarded)], None).unwrap_err();
        assert!(problems[0].message.contains("role"), "{problems:?}");
        let schema = "namespace ApiGuard { type Claims = { role?: String, scope?: Set<String>, org?: { id: Long } }; }";
        let policies = compile(
            &[src("p.cedar", policy)],
            Some(&src("claims.cedarschema", schema)),
        )
        .unwrap();
        let declared = &policies.claims.0;
        assert_eq!(declared.len(), 3);
        assert_eq!(declared["role"], None);
        assert_eq!(
            declared["org"]
                .as_ref()
                .unwrap()
                .0
                .keys()
                .collect::<Vec<_>>(),
            ["id"]
        );
    }

    #[test]
    fn a_broken_schema_file_is_reported() {
        let problems = compile(
            &[src("p.cedar", "permit(principal, action, resource);")],
            Some(&src(
                "s.cedarschema",
                "namespace ApiGuard {\n type Claims = { role: Strin };\n}",
            )),
        )
        .unwrap_err();
        assert_eq!(problems[0].file, "s.cedarschema", "{problems:?}");
    }

    #[test]
    fn duplicate_ids_and_templates_are_refused() {
        let problems = compile(
            &[
                src("a.cedar", "@id(\"x\") permit(principal, action, resource);"),
                src("b.cedar", "@id(\"x\") permit(principal, action, resource);"),
                src(
                    "c.cedar",
                    "permit(principal == ?principal, action, resource);",
                ),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].message.contains("a.cedar:1"), "{problems:?}");
        assert!(problems[1].message.contains("template"), "{problems:?}");
    }

    #[test]
    fn the_example_policies_validate() {
        let policies = compile(
            &[src(
                "api.cedar",
                include_str!("../../../../examples/policies/api.cedar"),
            )],
            Some(&src(
                "claims.cedarschema",
                include_str!("../../../../examples/policies/claims.cedarschema"),
            )),
        )
        .unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(policies.len(), 7);
        assert!(policies.uses_graphql());
        // What the decision cache keys on: only the context these policies read.
        assert_eq!(
            policies.reads,
            ContextReads {
                client_ip: true,
                time: true,
                risk_score: true,
                reputation: true,
                grpc_method: true,
                graphql: true,
                ..ContextReads::default()
            }
        );
    }

    #[test]
    fn line_columns_count_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("x", 0), (1, 1));
    }
}
