//! apiguard's attack-detection engine.
//!
//! A request is broken into [`Target`]s (method, path, query arguments, headers, cookies and the
//! body parsed by its content type), every target is normalised (URL, HTML and Unicode
//! decoding, base64 of text, ...), and rules run over the normalised values. Rules are data
//! (see `docs/detection.md`): a regex, a phrase list or the verdict of one of the built-in
//! tokenizers (SQL, HTML/JavaScript, shell, URL/SSRF, ...). Findings add to an anomaly score,
//! and the configured threshold, paranoia level and mode decide.
//!
//! The crate is pure: no I/O, no async, no global mutable state. Build one [`Engine`] per
//! configuration and share it behind an `Arc`.

#![forbid(unsafe_code)]

mod collect;
mod config;
mod detectors;
mod engine;
mod error;
mod evidence;
mod gate;
mod normalize;
mod rules;
mod stage;
mod target;

pub use config::{EngineConfig, Exclusion, Mode};
pub use engine::{Engine, Verdict};
pub use error::RuleError;
pub use stage::DetectStage;
pub use target::{Target, TargetKind};

/// Parsers, decoders and tokenizers, exposed for the fuzz targets and benchmarks. Not a
/// stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::collect::cookie::parse_cookies;
    pub use crate::collect::graphql::parse_graphql_document;
    pub use crate::collect::json::{JsonIssue, JsonItem, walk_json};
    pub use crate::collect::multipart::parse_multipart;
    pub use crate::collect::urlencoded::parse_urlencoded;
    pub use crate::collect::xml::parse_xml;
    pub use crate::detectors::cmdi::is_command_injection;
    pub use crate::detectors::ldap::is_ldap_injection;
    pub use crate::detectors::sqli::is_sql_injection;
    pub use crate::detectors::ssrf::find_ssrf;
    pub use crate::detectors::xss::is_xss;
    pub use crate::normalize::base64::decode_base64_text;
    pub use crate::normalize::escapes::decode_js_escapes;
    pub use crate::normalize::html::decode_entities;
    pub use crate::normalize::log4j::resolve_lookups;
    pub use crate::normalize::path::normalize_path;
    pub use crate::normalize::shell::normalize_shell;
    pub use crate::normalize::unicode::fold_unicode;
    pub use crate::normalize::url::percent_decode;

    /// The full canonical decoding (URL, HTML, JS escapes, Unicode, nulls), bounded.
    pub fn decode(input: &str) -> String {
        crate::normalize::decode(input).into_owned()
    }
}
