//! The rule file format (YAML or JSON; JSON is YAML). See `docs/detection.md` for the reference.

use apiguard_model::Severity;
use serde::Deserialize;

/// A rule file: a list of rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    pub rules: Vec<RuleSpec>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    /// Stable id, `<class>.<name>` by convention.
    pub id: String,
    /// Attack class reported in findings (`sqli`, `xss`, ...).
    pub class: String,
    pub severity: Severity,
    /// Lowest paranoia level at which the rule runs (1 to 4).
    #[serde(default = "one")]
    pub paranoia: u8,
    /// What the rule detects, for people (and the docs); not part of findings.
    #[serde(default)]
    #[allow(dead_code)]
    pub message: String,
    /// Target groups (`args`, `headers`, ...) or exact targets (`header:user-agent`); empty
    /// means the default set.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Exact targets (or prefixes ending in `*`) the rule never inspects.
    #[serde(default)]
    pub exclude_targets: Vec<String>,
    /// Transformation chain applied before matching; absent means `[decode]`.
    #[serde(default)]
    pub transforms: Option<Vec<String>>,
    /// Whether the rule also inspects values that are base64 of text (default true).
    #[serde(default = "yes")]
    pub base64: bool,
    /// Whether the rule inspects only values that are base64 of text (markers that are
    /// innocent in clear but betray a serialized payload when encoded).
    #[serde(default)]
    pub only_base64: bool,
    pub operator: OperatorSpec,
}

/// How a rule matches.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum OperatorSpec {
    /// A regular expression (Rust `regex` syntax; add `(?i)` for case-insensitivity).
    Regex(String),
    /// Literal substrings, matched case-insensitively.
    Phrases(Vec<String>),
    /// Literal words or phrases, matched case-insensitively at word boundaries.
    Words(Vec<String>),
    /// The verdict of a built-in tokenizer: `sqli`, `xss`, `cmdi`, `ssrf`, `ldap`.
    Detector(String),
}

fn one() -> u8 {
    1
}

fn yes() -> bool {
    true
}
