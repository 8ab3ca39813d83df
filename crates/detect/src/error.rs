//! The crate's one error type: a rule file or a configuration that cannot be compiled. Always
//! the operator's to fix, so it names the file, the rule and the reason.

/// Why an [`crate::Engine`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The file is not valid YAML/JSON for the rule format.
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// One rule is invalid (bad regex, unknown class/target/transform, duplicate id, ...).
    #[error("{file}: rule {rule}: {message}")]
    Rule {
        file: String,
        rule: String,
        message: String,
    },
    /// The configuration itself is invalid (paranoia out of range, empty exclusion, ...).
    #[error("invalid detection config: {0}")]
    Config(String),
}
