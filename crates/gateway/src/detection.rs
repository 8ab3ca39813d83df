//! Turns the `detect:` settings (top level, then each route's changes) into compiled detection
//! engines. Routes with the same effective settings share one engine: compiling the rules is
//! the expensive part of a reload.

use std::collections::HashMap;
use std::sync::Arc;

use apiguard_detect::{Engine, EngineConfig, Exclusion, Mode};

use crate::config::{Config, DetectConfig, DetectMode, ExclusionConfig, RouteConfig, Spanned};
use crate::load::Problem;

/// A route's effective detection settings.
pub struct RouteDetection {
    /// `None` when detection is off for the route.
    pub engine: Option<Arc<Engine>>,
    pub threshold: u32,
    /// False in detect-only mode.
    pub enforce: bool,
    /// Body bytes buffered for inspection.
    pub max_body_inspect: usize,
}

/// Compiles every route's detection settings, in route order. Problems (an unreadable rule
/// file, an invalid rule, a paranoia level out of range) are collected with their positions.
pub fn compile_detection(config: &Config, problems: &mut Vec<Problem>) -> Vec<RouteDetection> {
    // Failures are kept too, so that one bad top-level setting is reported once, not per route.
    let mut compiled: Vec<(EngineConfig, Vec<String>, Option<Arc<Engine>>)> = Vec::new();
    let mut out = Vec::with_capacity(config.routes.len());
    let mut files_read = RuleFiles::default();
    for route in &config.routes {
        let (engine_config, files) = effective(&config.detect, route);
        let detection = |engine| RouteDetection {
            engine,
            threshold: engine_config.threshold,
            enforce: engine_config.mode == Mode::Block,
            max_body_inspect: engine_config.max_body_inspect,
        };
        if engine_config.mode == Mode::Off {
            out.push(detection(None));
            continue;
        }
        let paths: Vec<String> = files.iter().map(|f| f.value.clone()).collect();
        if let Some((_, _, engine)) = compiled
            .iter()
            .find(|(c, p, _)| *c == engine_config && *p == paths)
        {
            out.push(detection(engine.clone()));
            continue;
        }
        let problems_before = problems.len();
        check_settings(route, &engine_config, problems);
        if problems.len() > problems_before {
            out.push(detection(None));
            continue;
        }
        let engine = build(route, &engine_config, &files, &mut files_read)
            .map(Arc::new)
            .map_err(|mut p| problems.append(&mut p))
            .ok();
        compiled.push((engine_config.clone(), paths, engine.clone()));
        out.push(detection(engine));
    }
    out
}

/// Settings the engine would refuse, reported in the gateway's words and position (so a
/// missing rule file does not hide them).
fn check_settings(route: &RouteConfig, config: &EngineConfig, problems: &mut Vec<Problem>) {
    let at = |message: String| {
        Problem::at(
            &route.id,
            format!("route `{}`: detect: {message}", route.id.value),
        )
    };
    if !(1..=4).contains(&config.paranoia) {
        problems.push(at(format!(
            "paranoia must be 1 to 4, not {}",
            config.paranoia
        )));
    }
    if config.threshold == 0 {
        problems.push(at("threshold must be at least 1".into()));
    }
    if config.max_body_inspect == 0 {
        problems.push(at("max_body_inspect must be at least 1".into()));
    }
    if config
        .exclusions
        .iter()
        .any(|e| e.rule.is_none() && e.class.is_none())
    {
        problems.push(at(
            "every exclusion needs a `rule` or a `class` (and optionally a `target`)".into(),
        ));
    }
}

/// The top-level settings with the route's changes applied.
fn effective<'a>(
    global: &'a DetectConfig,
    route: &'a RouteConfig,
) -> (EngineConfig, Vec<&'a Spanned<String>>) {
    let local = &route.detect;
    let mode = match local.mode.unwrap_or(global.mode) {
        DetectMode::Block => Mode::Block,
        DetectMode::DetectOnly => Mode::DetectOnly,
        DetectMode::Off => Mode::Off,
    };
    let mut config = EngineConfig {
        paranoia: local.paranoia.unwrap_or(global.paranoia),
        threshold: local.threshold.unwrap_or(global.threshold),
        mode,
        exclusions: global
            .exclusions
            .iter()
            .chain(&local.exclusions)
            .map(exclusion)
            .collect(),
        max_body_inspect: local.max_body_inspect.unwrap_or(global.max_body_inspect),
        ..EngineConfig::default()
    };
    let limits = &global.limits;
    config.limits.max_depth = limits.max_depth;
    config.limits.max_targets = limits.max_targets;
    config.limits.max_parts = limits.max_parts;
    config.limits.max_value_len = limits.max_value_len;
    config.limits.max_name_len = limits.max_name_len;
    config.limits.max_args = limits.max_args;
    let files = global.rule_files.iter().chain(&local.rule_files).collect();
    (config, files)
}

fn exclusion(config: &ExclusionConfig) -> Exclusion {
    Exclusion {
        rule: config.rule.clone(),
        class: config.class.clone(),
        target: config.target.clone(),
    }
}

/// Rule files read so far: each is read (and an unreadable one reported) once per compile.
#[derive(Default)]
struct RuleFiles(HashMap<String, Option<String>>);

impl RuleFiles {
    fn read(&mut self, file: &Spanned<String>, problems: &mut Vec<Problem>) -> Option<String> {
        self.0
            .entry(file.value.clone())
            .or_insert_with(|| {
                std::fs::read_to_string(&file.value)
                    .map_err(|e| {
                        problems.push(Problem::at(
                            file,
                            format!("cannot read rule file `{}`: {e}", file.value),
                        ))
                    })
                    .ok()
            })
            .clone()
    }
}

fn build(
    route: &RouteConfig,
    config: &EngineConfig,
    files: &[&Spanned<String>],
    read: &mut RuleFiles,
) -> Result<Engine, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    let mut unreadable = false;
    for file in files {
        match read.read(file, &mut problems) {
            Some(text) => rules.push((file.value.clone(), text)),
            None => unreadable = true,
        }
    }
    if unreadable {
        return Err(problems);
    }
    Engine::new(config.clone(), &rules).map_err(|e| {
        vec![Problem::at(
            &route.id,
            format!("route `{}`: detection: {e}", route.id.value),
        )]
    })
}
