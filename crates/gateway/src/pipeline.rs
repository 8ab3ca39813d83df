//! Runs a route's ordered stages and turns their outcomes into one decision.

use std::sync::Arc;

use apiguard_model::{
    Action, Finding, Identity, Outcome, RequestContext, RequestView, Severity, Stage,
};
use http::HeaderMap;

use crate::config::LimitsConfig;

/// A route's stages, cheapest first, and how their score is judged.
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
    needs_body: bool,
    /// Body bytes buffered for the stages that need the body.
    body_limit: usize,
    /// A request whose score reaches this is blocked (or only logged in detect-only mode).
    pub threshold: u32,
    /// False in detect-only mode: findings are logged, nothing is refused for its score.
    pub enforce: bool,
}

/// The pipeline's answer.
#[derive(Debug)]
pub struct Decision {
    pub action: Action,
    /// The status to answer with when the action is not `Allow`/`LogOnly`.
    pub status: u16,
    pub score: u32,
    pub findings: Vec<Finding>,
    /// Headers the stages want on the answer, whatever it is (`WWW-Authenticate`,
    /// `Retry-After`, `RateLimit`, ...).
    pub headers: HeaderMap,
    /// Who the request is from, when authentication proved it.
    pub identity: Option<Identity>,
    /// The refusing stage's words for the problem+json `detail`, when it has some.
    pub problem_detail: Option<String>,
}

impl Decision {
    fn new(action: Action, status: u16, ctx: RequestContext) -> Self {
        Decision {
            action,
            status,
            score: ctx.score,
            findings: ctx.findings,
            headers: ctx.response_headers,
            identity: ctx.identity,
            problem_detail: ctx.problem_detail,
        }
    }
}

impl Pipeline {
    pub fn new(stages: Vec<Arc<dyn Stage>>, threshold: u32, enforce: bool) -> Self {
        let needs_body = stages.iter().any(|s| s.needs_body());
        Pipeline {
            stages,
            needs_body,
            body_limit: 1024 * 1024,
            threshold,
            enforce,
        }
    }

    /// Sets how many body bytes are buffered for inspection.
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit.max(1);
        self
    }

    /// Body bytes buffered for inspection; a longer body is inspected up to here and the
    /// rest streams through.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Whether some stage inspects requests for attacks (its score is worth a histogram).
    pub fn has_stage(&self, name: &str) -> bool {
        self.stages.iter().any(|s| s.name() == name)
    }

    /// Whether some stage wants the body buffered before it runs.
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }

    pub fn stage_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stages.iter().map(|s| s.name())
    }

    pub fn run(&self, request: &RequestView<'_>) -> Decision {
        let mut ctx = RequestContext::default();
        for stage in &self.stages {
            match stage.inspect(request, &mut ctx) {
                Outcome::Continue => {}
                Outcome::Score(findings) => findings.into_iter().for_each(|f| ctx.add(f)),
                Outcome::Challenge(finding) => {
                    ctx.add(finding);
                    return self.refuse(ctx, Action::Challenge, 401, stage.as_ref());
                }
                Outcome::Block { status, finding } => {
                    ctx.add(finding);
                    return self.refuse(ctx, Action::Block, status, stage.as_ref());
                }
            }
        }
        if ctx.score >= self.threshold && ctx.score > 0 {
            if self.enforce {
                return Decision::new(Action::Block, 403, ctx);
            }
            return Decision::new(Action::LogOnly, 0, ctx);
        }
        Decision::new(Action::Allow, 0, ctx)
    }

    /// A stage refused: in detect-only mode only stages that are not detection (such as
    /// authentication and rate limiting) still refuse.
    fn refuse(
        &self,
        ctx: RequestContext,
        action: Action,
        status: u16,
        stage: &dyn Stage,
    ) -> Decision {
        if self.enforce || stage.enforced_in_detect_only() {
            Decision::new(action, status, ctx)
        } else {
            Decision::new(Action::LogOnly, 0, ctx)
        }
    }
}

/// Stage 2 of the architecture: request size limits that need no parsing.
pub struct LimitsStage {
    pub limits: LimitsConfig,
}

impl LimitsStage {
    fn finding(rule: &'static str, target: &str, evidence: String) -> Finding {
        Finding {
            rule_id: rule.into(),
            class: "limits".into(),
            severity: Severity::Critical,
            score: Severity::Critical.score(),
            target: target.to_owned(),
            evidence,
        }
    }
}

impl Stage for LimitsStage {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn inspect(&self, request: &RequestView<'_>, _ctx: &mut RequestContext) -> Outcome {
        let headers = request.headers;
        if headers.len() > self.limits.max_header_count {
            return Outcome::Block {
                status: 431,
                finding: Self::finding(
                    "limits.header_count",
                    "headers",
                    format!(
                        "{} headers, limit {}",
                        headers.len(),
                        self.limits.max_header_count
                    ),
                ),
            };
        }
        let bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        if bytes > self.limits.max_header_bytes {
            return Outcome::Block {
                status: 431,
                finding: Self::finding(
                    "limits.header_bytes",
                    "headers",
                    format!(
                        "{bytes} header bytes, limit {}",
                        self.limits.max_header_bytes
                    ),
                ),
            };
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(length) = declared
            && length > self.limits.max_body_bytes
        {
            return Outcome::Block {
                status: 413,
                finding: Self::finding(
                    "limits.body_bytes",
                    "body",
                    format!(
                        "Content-Length {length}, limit {}",
                        self.limits.max_body_bytes
                    ),
                ),
            };
        }
        Outcome::Continue
    }
}
