//! The OpenAPI validation stage (pipeline stage 6) and the response check the gateway runs
//! after the upstream answered.

use std::sync::Arc;

use apiguard_model::{Finding, Outcome, RequestContext, RequestView, Severity, Stage};

use super::path::{normalize_path, split_path};
use super::response::validate_response;
use super::spec::{Lookup, Operation, Spec};
use super::validate::{Violation, validate_request};

/// What a violation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OpenApiMode {
    /// Refuse the request (400, 413 or 415; 404/405 for unknown endpoints in block mode).
    #[default]
    Enforce,
    /// Let it through; violations are logged and published as findings (score 0).
    Monitor,
}

/// What happens to a request for a path or method the specification does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownEndpoints {
    /// Passed on without a finding.
    #[default]
    Allow,
    /// Passed on with a finding (score 0).
    Log,
    /// Refused: 404 for an unknown path, 405 for an undeclared method (monitor mode only
    /// logs).
    Block,
}

/// Stage 6: validation against the upstream's OpenAPI specification.
pub struct OpenApiStage {
    pub spec: Arc<Spec>,
    pub mode: OpenApiMode,
    pub unknown: UnknownEndpoints,
    /// Body bytes the gateway buffers for inspection (a longer body is cut).
    pub body_limit: usize,
}

/// A finding of class `openapi`: `target` is the field and `evidence` the reason, both safe
/// to show the client (they never repeat its values).
pub fn finding(violation: &Violation, score: u32) -> Finding {
    Finding {
        rule_id: violation.rule.into(),
        class: "openapi".into(),
        severity: Severity::Warning,
        score,
        target: violation.field.clone(),
        evidence: violation.reason.clone(),
    }
}

impl OpenApiStage {
    fn unknown(&self, status: u16, rule: &'static str, reason: String) -> Outcome {
        let violation = Violation {
            rule,
            field: if status == 405 { "method" } else { "path" }.into(),
            reason,
            status,
        };
        match (self.unknown, self.mode) {
            (UnknownEndpoints::Allow, _) => Outcome::Continue,
            (UnknownEndpoints::Block, OpenApiMode::Enforce) => Outcome::Block {
                status,
                finding: finding(&violation, Severity::Warning.score()),
            },
            _ => Outcome::Score(vec![finding(&violation, 0)]),
        }
    }
}

impl Stage for OpenApiStage {
    fn name(&self) -> &'static str {
        "openapi"
    }

    fn needs_body(&self) -> bool {
        self.spec.validates_bodies()
    }

    fn enforced_in_detect_only(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        let path = normalize_path(request.path());
        let Some(relative) = self.spec.relative(&path) else {
            return self.unknown(
                404,
                "openapi.unknown_endpoint",
                format!("is outside the API's base path {}", self.spec.base_path),
            );
        };
        let segments = split_path(relative);
        let method = request.method.as_str();
        let preflight = method == "OPTIONS"
            && request
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        let (op, captures) = match self.spec.lookup(method, &segments) {
            Lookup::Operation(op, captures) => (op, captures),
            Lookup::MethodNotAllowed(_) if preflight => return Outcome::Continue,
            Lookup::MethodNotAllowed(item) => {
                let allowed: Vec<&str> = item.operations.iter().map(|(m, _)| m.as_str()).collect();
                return self.unknown(
                    405,
                    "openapi.method_not_allowed",
                    format!(
                        "is not declared for {} (declared: {})",
                        item.template.text,
                        allowed.join(", ")
                    ),
                );
            }
            Lookup::NotFound => {
                return self.unknown(
                    404,
                    "openapi.unknown_endpoint",
                    "is not in the API specification".into(),
                );
            }
        };
        let violations = validate_request(op, request, &captures, self.body_limit);
        if violations.is_empty() {
            return Outcome::Continue;
        }
        if self.mode == OpenApiMode::Monitor {
            return Outcome::Score(violations.iter().map(|v| finding(v, 0)).collect());
        }
        // 415 before 413 before 400: the first thing the client must fix.
        let status = [415, 413]
            .into_iter()
            .find(|s| violations.iter().any(|v| v.status == *s))
            .unwrap_or(400);
        let (last, earlier) = violations.split_last().expect("not empty");
        for violation in earlier {
            ctx.add(finding(violation, 0));
        }
        Outcome::Block {
            status,
            finding: finding(last, Severity::Warning.score()),
        }
    }
}

/// Response checks for one route: what the gateway asks once the upstream answered.
pub struct ResponseValidation {
    pub spec: Arc<Spec>,
    pub mode: OpenApiMode,
    /// Report fields the specification does not declare (excessive data exposure).
    pub undeclared_fields: bool,
    /// Largest response body buffered for validation; a longer one is passed on unchecked.
    pub max_body_bytes: usize,
}

impl ResponseValidation {
    /// The operation a request was for, when the specification declares it.
    pub fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let path = normalize_path(path);
        let relative = self.spec.relative(&path)?;
        match self.spec.lookup(method, &split_path(relative)) {
            Lookup::Operation(op, _) => Some(op),
            _ => None,
        }
    }

    /// Whether the body of a response with this content type is worth buffering.
    pub fn wants_body(&self, content_type: Option<&str>) -> bool {
        content_type.is_some_and(|ct| {
            let essence = super::spec::media_essence(ct);
            essence == "application/json" || essence.ends_with("+json")
        })
    }

    /// Checks a response (body: the whole body when it was buffered).
    pub fn check(
        &self,
        op: &Operation,
        status: u16,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Vec<Violation> {
        validate_response(
            &self.spec,
            op,
            status,
            content_type,
            body,
            self.undeclared_fields,
        )
    }
}
