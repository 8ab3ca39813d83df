//! Detectors: tokenizers whose verdict a rule can use as its operator (`operator: {detector:
//! sqli}`), for the languages where a regex cannot tell an attack from prose.

use crate::gate::{Features, exact_mask, has_pair};

pub mod cmdi;
pub mod ldap;
pub mod protocol;
pub mod sqli;
pub mod ssrf;
pub mod xss;

/// Bytes that arm a detector's byte condition on their own (see [`Detector::may_match`]).
const SQLI_ALWAYS: [u64; 2] = exact_mask(b"'\"`@=<>!");
const XSS_ALWAYS: [u64; 2] = exact_mask(b"<:=[`");
const CMDI_ALWAYS: [u64; 2] = exact_mask(b"'\"\\^$`{");
/// With a `/`, any of these arms the shell detector (`/???/??t`, `/bin/[c]at`).
const CMDI_WITH_SLASH: [u64; 2] = exact_mask(b"?*[");
/// With one of these, a value shaped like a bare host arms the SSRF detector.
const SSRF_HOST: [u64; 2] = exact_mask(b"./?#");
/// ASCII letters and `[`: one of them is in every bare host that is not a dotted number.
const LETTERS_OR_BRACKET: [u64; 2] =
    exact_mask(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz[");
/// What may follow a bare host (see `ssrf::bare_host_end`).
const HOST_FOLLOWERS: [u64; 2] = exact_mask(b"/?#");
const LDAP_ALWAYS: [u64; 2] = exact_mask(b"()");

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
    /// follow: `gcc10.1`, `python3.10`). In a value without shell syntax (see
    /// [`cmdi::SHELL_SYNTAX`]) the only command position is the first word, so it must start
    /// there.
    Command,
    /// A command name (as [`Boundary::Command`]) that counts only with an argument or a
    /// wrapped command: without shell syntax, the first word of a value of two words or more.
    CommandWord,
    /// A word that matters only with shell syntax around it (`alias a=b`, `;.shell`).
    ShellSyntax,
    /// Anywhere, in a value that contains `(` (a regex every match of which has one).
    Paren,
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
                f.intersects(&SQLI_ALWAYS)
                    || (f.has(b'&') && has_pair(text, b'&', b'&'))
                    || (f.has(b'|') && has_pair(text, b'|', b'|'))
                    || (f.has(b':') && has_pair(text, b':', b':'))
                    || (f.has(b')') && text.trim_start().starts_with(')'))
                    || folds()
                    || (f.non_ascii && text.contains(sqli::TYPOGRAPHIC_QUOTES))
            }
            Detector::Xss => {
                f.intersects(&XSS_ALWAYS)
                    || folds()
                    || (f.non_ascii && text.contains(xss::SEVEN_BIT_MARKERS))
            }
            Detector::Cmdi => {
                f.non_ascii
                    || f.intersects(&CMDI_ALWAYS)
                    || (f.has(b'/') && f.intersects(&CMDI_WITH_SLASH))
            }
            Detector::Ssrf => {
                f.has(b':')
                    || f.non_ascii
                    || (f.intersects(&SSRF_HOST)
                        // A bare host has a letter, starts with `[`, or is dotted and
                        // followed by a path, query or fragment (see `bare_host_end`).
                        && (f.intersects(&LETTERS_OR_BRACKET)
                            || (f.has(b'.') && f.intersects(&HOST_FOLLOWERS)))
                        && ssrf::bare_host_shape(text))
            }
            Detector::Ldap => f.intersects(&LDAP_ALWAYS),
        }
    }

    /// The ASCII bytes without one of which [`Detector::may_match`] is false on ASCII text.
    pub(crate) fn trigger_bytes(self) -> [u64; 2] {
        match self {
            Detector::Sqli => exact_mask(b"'\"`@=<>!&|:)"),
            Detector::Xss => XSS_ALWAYS,
            Detector::Cmdi => exact_mask(b"'\"\\^$`{?*["),
            Detector::Ssrf => exact_mask(b":./?#"),
            Detector::Ldap => LDAP_ALWAYS,
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

#[cfg(test)]
mod prefilter_tests {
    use super::*;

    /// [`Detector::trigger_bytes`] is a necessary condition of [`Detector::may_match`] on
    /// ASCII text: without one of those bytes the byte condition never holds.
    #[test]
    fn trigger_bytes_cover_the_byte_conditions() {
        for d in [
            Detector::Sqli,
            Detector::Xss,
            Detector::Cmdi,
            Detector::Ssrf,
            Detector::Ldap,
        ] {
            let triggers = d.trigger_bytes();
            let quiet: Vec<u8> = (0u8..0x80)
                .filter(|&b| triggers[usize::from(b >> 6)] & (1 << (b & 63)) == 0)
                .collect();
            let all = String::from_utf8(quiet.clone()).unwrap();
            let mut texts = vec![all.clone(), all.chars().rev().collect()];
            for &a in &quiet {
                for &b in &quiet {
                    texts.push(String::from_utf8(vec![a, b, a, b, b, a]).unwrap());
                }
            }
            for text in &texts {
                assert!(
                    !d.may_match(text, &Features::of(text)),
                    "{d:?} armed by {text:?} without a trigger byte"
                );
            }
        }
    }

    /// The byte shortcut in front of `bare_host_shape` changes nothing: on every short text
    /// over the bytes that matter, the SSRF byte condition is exactly the full one.
    #[test]
    fn ssrf_byte_shortcut_is_exact() {
        let alphabet = b"9.5/?#[aZ@: -";
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| {
                    alphabet.iter().map(move |&b| {
                        let mut t = t.clone();
                        t.push(char::from(b));
                        t
                    })
                })
                .collect();
            texts.extend(longer);
        }
        texts.sort();
        texts.dedup();
        for text in &texts {
            let f = Features::of(text);
            let full = f.has(b':')
                || f.non_ascii
                || (f.intersects(&SSRF_HOST) && ssrf::bare_host_shape(text));
            assert_eq!(Detector::Ssrf.may_match(text, &f), full, "{text:?}");
        }
    }

    /// The SSRF byte condition reads a bare host the way the detector does: prices, version
    /// numbers and addresses of people are not host names.
    #[test]
    fn bare_host_shapes() {
        for host in [
            "localhost/",
            "127.1/",
            "example.com",
            "169.254.169.254/latest",
            "[::1]/x",
        ] {
            assert!(ssrf::bare_host_shape(host), "{host}");
        }
        for value in ["9.5", "12.0", "1.2.3", "alice@example.com", "a b.c", "word"] {
            assert!(!ssrf::bare_host_shape(value), "{value}");
        }
        assert!(ssrf::find_ssrf("localhost/admin").is_some());
        assert!(ssrf::find_ssrf("127.0.0.1/x").is_some());
        assert!(ssrf::find_ssrf("127.1").is_none());
    }
}

/// Shapes of the built-in rule files (`rules/*.yaml`) added for the detection round: real
/// attack strings and the benign look-alikes each rule must leave alone.
#[cfg(test)]
mod rule_file_tests {
    use super::protocol::tests::rule_ids;

    fn query(value: &str) -> Vec<String> {
        let mut encoded = String::new();
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        rule_ids(1, "GET", &format!("/?a={encoded}"), &[], "")
    }

    fn has(ids: &[String], rule: &str) -> bool {
        ids.iter().any(|id| id == rule)
    }

    #[test]
    fn rule_shapes_detect_attacks() {
        for (value, rule) in [
            (
                "%25C0%25AE%25C0%25AE%25C0%25AFetc%25C0%25AFpasswd",
                "lfi.encoded_traversal",
            ),
            ("/sys/class", "lfi.kernel_filesystem"),
            ("/proc/self/environ", "lfi.kernel_filesystem"),
            ("../.history", "lfi.parent_step"),
            ("..\\pineapple", "lfi.parent_step"),
            ("/path/to/.docker/secrets", "lfi.sensitive_file"),
            (
                "https://[2001:41d0:701:1100::29c8]/gecko.php",
                "rfi.url_to_ip",
            ),
            (
                "https://2001:41d0:701:1100::29c8/gecko.php",
                "rfi.url_to_ip",
            ),
            ("file?", "rfi.trailing_question_mark"),
            ("for %variable in (set) do command", "rce.windows_cmd"),
            ("if (1) equ (1) echo hey", "rce.windows_cmd"),
            ("if (AA) == (AA) echo same", "rce.windows_cmd"),
            ("IF (2 GEQ 15) echo \"bigger\"", "rce.windows_cmd"),
            ("if/i a==b foo", "rce.windows_cmd"),
            ("$[2+2]", "rce.shell_arithmetic"),
            ("$(($() 42))", "rce.shell_arithmetic"),
            ("${PATH#{}/}", "rce.parameter_expansion"),
            ("{PHP}echo \"test\"", "php.open_tag"),
            ("(system)(whoami)", "php.callable_expression"),
            ("return\"system\"(xyz).s", "php.callable_expression"),
            ("$__[$_[1]](7)", "php.variable_call"),
            ("FOOgzinflate()", "php.glued_function_call"),
            ("new Function (", "node.code"),
            ("Process.spawn(\"id\")", "ruby.code"),
            ("(![] [])[ ! []]", "xss.jsfuck"),
            ("!![]", "xss.jsfuck"),
            ("'msdasql'", "sqli.system_procedure"),
            (
                "\"in \\u0076\\u0061l\\u0075e\\u004F\\u0066=",
                "protocol.escaped_letters",
            ),
        ] {
            assert!(has(&query(value), rule), "{rule} missed: {value}");
        }
        let body = "barGET /a.html HTTP/1.1\r\nSomething: ";
        let ids = rule_ids(1, "POST", "/", &[("content-type", "text/plain")], body);
        assert!(has(&ids, "protocol.smuggled_request"), "{ids:?}");
        let upload = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../1.7z\"\r\n\r\nx\r\n--B--\r\n";
        let ids = rule_ids(
            1,
            "POST",
            "/",
            &[("content-type", "multipart/form-data; boundary=B")],
            upload,
        );
        assert!(has(&ids, "lfi.upload_name_traversal"), "{ids:?}");
        for path in [
            "/wp-content/errors.log",
            "/get/backup.sql.zip",
            "/logs/php-error.log",
        ] {
            let ids = rule_ids(1, "GET", path, &[], "");
            assert!(has(&ids, "lfi.restricted_path"), "{path}: {ids:?}");
        }
        for name in ["X-File-Name", "X-Filename"] {
            let ids = rule_ids(
                1,
                "GET",
                "/",
                &[(name, "C:\\temp\\sess_malicious12345678")],
                "",
            );
            assert!(has(&ids, "php.upload_extension"), "{name}: {ids:?}");
        }
    }

    #[test]
    fn rule_shapes_leave_benign_values_alone() {
        for value in [
            "../images/logo.png",
            "see the /sys directory",
            "/system/status",
            "https://example.com/gecko.php",
            "http://cafe:8080/",
            "for each item in (the list) do something",
            "if (a == b) return x;",
            "if (x) { y() }",
            "$[0].name",
            "$['store'].book[-1:]",
            "`${user.name}`",
            "${a}",
            "{php is fun}",
            "(see)(above)",
            "the system is fine (as designed)",
            "![](image.png)",
            "[ ] todo",
            "Array [] is empty!",
            "x64\\Release",
            "\\u00e9t\\u00e9",
            "C:\\Users\\bob",
            "code: \"\\u0041\"",
            "a new function( is defined",
            "renewFunction",
            "I like 'it'",
        ] {
            let ids = query(value);
            assert!(ids.is_empty(), "false positive on {value}: {ids:?}");
        }
        for path in [
            "/api/changelog",
            "/releases/app-1.0.tar.gz",
            "/api/logs/123",
        ] {
            let ids = rule_ids(1, "GET", path, &[], "");
            assert!(ids.is_empty(), "false positive on {path}: {ids:?}");
        }
    }
}
