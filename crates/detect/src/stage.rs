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
        let mut findings = self.0.inspect(request).findings;
        if findings.is_empty() {
            return Outcome::Continue;
        }
        count_inspection_bounds_once(&mut findings);
        Outcome::Score(findings)
    }
}

/// Findings of class `limits` (a body or a value longer than the inspection bound, too many
/// arguments, ...) all say one thing: part of the request went uninspected. Only the
/// strongest adds to the score, so that a large ordinary upload (a long body is also a long
/// value) is not refused for that fact stated twice.
fn count_inspection_bounds_once(findings: &mut [apiguard_model::Finding]) {
    let strongest = findings
        .iter()
        .enumerate()
        .filter(|(_, f)| f.class == "limits")
        .max_by_key(|(_, f)| f.score)
        .map(|(i, _)| i);
    for (i, finding) in findings.iter_mut().enumerate() {
        if finding.class == "limits" && Some(i) != strongest {
            finding.score = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use apiguard_model::{Finding, Severity};

    use super::*;

    fn finding(rule: &str, class: &str, severity: Severity) -> Finding {
        Finding {
            rule_id: rule.to_owned().into(),
            class: class.to_owned().into(),
            severity,
            score: severity.score(),
            target: "body".into(),
            evidence: String::new(),
        }
    }

    #[test]
    fn inspection_bounds_count_once() {
        let mut findings = vec![
            finding("limits.body_size", "limits", Severity::Notice),
            finding("limits.json_depth", "limits", Severity::Warning),
            finding("limits.value_length", "limits", Severity::Notice),
            finding("sqli.tokenizer", "sqli", Severity::Critical),
        ];
        count_inspection_bounds_once(&mut findings);
        let scores: Vec<u32> = findings.iter().map(|f| f.score).collect();
        assert_eq!(scores, [0, 3, 0, 5]);
    }
}
