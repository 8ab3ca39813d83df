//! The engine's configuration: what the gateway reads from a route's `detect:` section.

use std::path::PathBuf;

use serde::Deserialize;

/// What the engine does with a request whose score reaches the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Findings are reported and the request is blocked when the score reaches the threshold.
    #[default]
    Block,
    /// Findings are reported, nothing is blocked (for tuning a new route).
    DetectOnly,
    /// The engine does not inspect at all.
    Off,
}

/// Turns a rule or a whole class off for one target, so a false positive is tuned away without
/// disabling the rule everywhere.
///
/// `rule` and `class` may end in `*` (a prefix); `target` uses the finding's target syntax
/// (`json:$.comment`, `header:x-foo`, `cookie:session`, `query:q`, `path`, ...) and may end in
/// `*` too. An exclusion without `target` applies to every target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// A rule id (`sqli.tokenizer`) or a prefix (`sqli.*`).
    #[serde(default)]
    pub rule: Option<String>,
    /// A class (`sqli`, `xss`, ...).
    #[serde(default)]
    pub class: Option<String>,
    /// The target the exclusion is limited to; `None` means every target.
    #[serde(default)]
    pub target: Option<String>,
}

impl Exclusion {
    /// Whether this exclusion silences a finding of `rule_id`/`class` on `target`.
    pub(crate) fn covers(&self, rule_id: &str, class: &str, target: &str) -> bool {
        let rule_ok = self.rule.as_deref().is_none_or(|p| glob_match(p, rule_id));
        let class_ok = self.class.as_deref().is_none_or(|p| glob_match(p, class));
        let target_ok = self
            .target
            .as_deref()
            .is_none_or(|p| target_matches(p, target));
        rule_ok && class_ok && target_ok
    }
}

/// `pattern` equals `value`, or `pattern` ends in `*` and is a prefix of it.
fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Targets compare with a case-insensitive kind and header name (HTTP header names are
/// case-insensitive) but a case-sensitive argument name or JSON path.
fn target_matches(pattern: &str, target: &str) -> bool {
    let (p_kind, p_name) = pattern.split_once(':').unwrap_or((pattern, ""));
    let (t_kind, t_name) = target.split_once(':').unwrap_or((target, ""));
    if !p_kind.eq_ignore_ascii_case(t_kind) {
        return false;
    }
    if p_kind.eq_ignore_ascii_case("header") {
        glob_match(&p_name.to_ascii_lowercase(), &t_name.to_ascii_lowercase())
    } else {
        glob_match(p_name, t_name)
    }
}

/// Bounds on request parsing; reaching one is itself a finding (class `limits`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParseLimits {
    /// Deepest JSON/XML nesting inspected.
    pub max_depth: usize,
    /// Most targets (arguments, keys, values, headers, ...) inspected per request.
    pub max_targets: usize,
    /// Most multipart parts parsed.
    pub max_parts: usize,
    /// Longest single value inspected; longer values are inspected up to this length.
    pub max_value_len: usize,
    /// Longest argument (query, form, JSON key) name; longer names are a finding.
    pub max_name_len: usize,
    /// Most query plus form arguments; more is a finding.
    pub max_args: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_depth: 64,
            max_targets: 2048,
            max_parts: 128,
            max_value_len: 256 * 1024,
            max_name_len: 100,
            max_args: 255,
        }
    }
}

/// Configuration of one [`crate::Engine`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// 1 (fewest false positives) to 4 (most detections): rules above it do not run.
    pub paranoia: u8,
    /// The anomaly score at which a request is blocked (a critical finding scores 5).
    pub threshold: u32,
    /// Block, detect only, or off.
    pub mode: Mode,
    /// Precise per-rule/per-class/per-target exceptions.
    pub exclusions: Vec<Exclusion>,
    /// Extra rule files; the caller reads them and passes their text to [`crate::Engine::new`]
    /// (the engine does no I/O).
    pub extra_rule_files: Vec<PathBuf>,
    /// Bodies longer than this are inspected up to this many bytes (and scored as truncated).
    pub max_body_inspect: usize,
    /// Parser bounds.
    pub limits: ParseLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            paranoia: 1,
            threshold: 5,
            mode: Mode::Block,
            exclusions: Vec::new(),
            extra_rule_files: Vec::new(),
            max_body_inspect: 1024 * 1024,
            limits: ParseLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_reads_snake_case() {
        let cfg: EngineConfig =
            serde_json::from_str(r#"{"mode":"detect_only","paranoia":2}"#).unwrap();
        assert_eq!(cfg.mode, Mode::DetectOnly);
        assert_eq!(cfg.paranoia, 2);
        assert_eq!(cfg.threshold, 5);
        assert!(serde_json::from_str::<EngineConfig>(r#"{"bogus":1}"#).is_err());
    }

    #[test]
    fn exclusion_is_precise() {
        let ex = Exclusion {
            rule: None,
            class: Some("sqli".into()),
            target: Some("json:$.comment".into()),
        };
        assert!(ex.covers("sqli.tokenizer", "sqli", "json:$.comment"));
        assert!(!ex.covers("sqli.tokenizer", "sqli", "json:$.title"));
        assert!(!ex.covers("xss.tokenizer", "xss", "json:$.comment"));
        let hdr = Exclusion {
            rule: Some("xss.*".into()),
            class: None,
            target: Some("header:X-Foo".into()),
        };
        assert!(hdr.covers("xss.tokenizer", "xss", "header:x-foo"));
    }
}
