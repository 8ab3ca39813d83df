//! Detectors: tokenizers whose verdict a rule can use as its operator (`operator: {detector:
//! sqli}`), for the languages where a regex cannot tell an attack from prose.

use crate::gate::Features;

pub mod cmdi;
pub mod ldap;
pub mod protocol;
pub mod sqli;
pub mod ssrf;
pub mod xss;

/// Where and why a detector matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// A short explanation, such as `union select` or `event handler attribute`.
    pub reason: &'static str,
    /// Byte range of the evidence in the inspected text.
    pub start: usize,
    pub end: usize,
}

/// The built-in detectors a rule can name.
/// What must surround a prefilter literal for it to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Boundary {
    /// Anywhere.
    None,
    /// A SQL word: no letter, `_`, `$` or non-ASCII byte on either side, nor a digit after
    /// (a digit before may end a number token).
    Sql,
    /// A SQL word (as [`Boundary::Sql`]) in a value that contains `(` (function names).
    SqlCall,
    /// A command name: no ASCII letter or digit before, no letter after (a version may
    /// follow: `gcc10.1`, `python3.10`).
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Detector {
    Sqli,
    Xss,
    Cmdi,
    Ssrf,
    Ldap,
}

impl Detector {
    pub(crate) fn parse(name: &str) -> Option<Detector> {
        Some(match name {
            "sqli" => Detector::Sqli,
            "xss" => Detector::Xss,
            "cmdi" => Detector::Cmdi,
            "ssrf" => Detector::Ssrf,
            "ldap" => Detector::Ldap,
            _ => return None,
        })
    }

    /// Literals (any ASCII case) whose presence arms the detector in the prefilter, each with
    /// its boundary condition. Together with [`Detector::may_match`] this is a necessary
    /// condition for [`Detector::run`] to find anything: keep both in step with the detectors
    /// (the engine's equivalence test checks it on the dev corpus).
    pub(crate) fn gate_literals(self) -> Vec<(&'static str, Boundary)> {
        match self {
            Detector::Xss => xss::GATE_WORDS
                .iter()
                .map(|w| (*w, Boundary::None))
                .collect(),
            Detector::Cmdi => cmdi::gate_words()
                .map(|w| (w, Boundary::Command))
                .chain([("/dev/", Boundary::None)])
                .collect(),
            Detector::Sqli => sqli::gate_words().collect(),
            Detector::Ssrf | Detector::Ldap => Vec::new(),
        }
    }

    /// The byte-level half of the prefilter (see [`Detector::gate_literals`]).
    pub(crate) fn may_match(self, text: &str, f: &Features) -> bool {
        // The only non-ASCII characters that case-insensitive matching folds onto ASCII.
        let folds = || f.non_ascii && text.contains(['\u{212a}', '\u{17f}']);
        match self {
            Detector::Sqli => {
                f.any(b"'\"`@=<>!")
                    || (f.has(b'&') && text.contains("&&"))
                    || (f.has(b'|') && text.contains("||"))
                    || (f.has(b':') && text.contains("::"))
                    || (f.has(b')') && text.trim_start().starts_with(')'))
                    || folds()
                    || (f.non_ascii && text.contains(sqli::TYPOGRAPHIC_QUOTES))
            }
            Detector::Xss => {
                f.any(b"<:=[`") || folds() || (f.non_ascii && text.contains(xss::SEVEN_BIT_MARKERS))
            }
            Detector::Cmdi => f.non_ascii || f.any(b"'\"\\^$`{") || (f.has(b'/') && f.any(b"?*[")),
            Detector::Ssrf => {
                f.has(b':') || f.non_ascii || (f.any(b"./?#") && ssrf::bare_host_shape(text))
            }
            Detector::Ldap => f.any(b"()"),
        }
    }

    pub(crate) fn run(self, text: &str) -> Option<Match> {
        match self {
            Detector::Sqli => sqli::is_sql_injection(text),
            Detector::Xss => xss::is_xss(text),
            Detector::Cmdi => cmdi::is_command_injection(text),
            Detector::Ssrf => ssrf::find_ssrf(text),
            Detector::Ldap => ldap::is_ldap_injection(text),
        }
    }
}
