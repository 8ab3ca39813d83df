//! The pipeline stage that runs the engine.

use std::sync::Arc;

use apiguard_model::{Outcome, RequestContext, RequestView, Stage};

use crate::engine::Engine;

/// Attack detection as a pipeline stage: adds the engine's findings to the request's score.
/// The gateway turns the total into a decision against the route's threshold and mode.
#[derive(Debug, Clone)]
pub struct DetectStage(pub Arc<Engine>);

impl Stage for DetectStage {
    fn name(&self) -> &'static str {
        "detect"
    }

    fn needs_body(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, _ctx: &mut RequestContext) -> Outcome {
        let verdict = self.0.inspect(request);
        if verdict.findings.is_empty() {
            Outcome::Continue
        } else {
            Outcome::Score(verdict.findings)
        }
    }
}
