//! Normalisation: every decoding and folding step a rule can ask for, each bounded, each a
//! pure function of its input.

pub mod base64;
pub mod escapes;
pub mod html;
pub mod log4j;
pub mod path;
pub mod shell;
pub mod unicode;
pub mod url;

use std::borrow::Cow;

/// Most decoding passes of [`Transform::Decode`]; three layers of encoding is already more
/// than any legitimate client sends.
const MAX_DECODE_PASSES: usize = 4;

/// One step of a rule's transformation chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Transform {
    /// URL (`%XX`, `%uXXXX`), HTML entity and JS escape decoding repeated until stable, then
    /// Unicode folding and null-byte removal: the canonical form most rules want.
    Decode,
    UrlDecode,
    HtmlDecode,
    JsDecode,
    Unicode,
    RemoveNulls,
    Lowercase,
    /// Runs of whitespace become one space.
    CompressWhitespace,
    RemoveWhitespace,
    /// C, SQL and HTML comments are removed.
    RemoveComments,
    Shell,
    Path,
    Log4j,
}

impl Transform {
    pub(crate) fn parse(name: &str) -> Option<Transform> {
        Some(match name {
            "decode" => Transform::Decode,
            "url_decode" => Transform::UrlDecode,
            "html_decode" => Transform::HtmlDecode,
            "js_decode" => Transform::JsDecode,
            "unicode" => Transform::Unicode,
            "remove_nulls" => Transform::RemoveNulls,
            "lowercase" => Transform::Lowercase,
            "compress_whitespace" => Transform::CompressWhitespace,
            "remove_whitespace" => Transform::RemoveWhitespace,
            "remove_comments" => Transform::RemoveComments,
            "shell" => Transform::Shell,
            "path" => Transform::Path,
            "log4j" => Transform::Log4j,
            _ => return None,
        })
    }

    /// This transform's bit in a `u16` mask.
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub(crate) const ALL: [Transform; 13] = [
        Transform::Decode,
        Transform::UrlDecode,
        Transform::HtmlDecode,
        Transform::JsDecode,
        Transform::Unicode,
        Transform::RemoveNulls,
        Transform::Lowercase,
        Transform::CompressWhitespace,
        Transform::RemoveWhitespace,
        Transform::RemoveComments,
        Transform::Shell,
        Transform::Path,
        Transform::Log4j,
    ];

    /// Whether non-ASCII input may make this transform change more than ASCII case (see
    /// `gate::Features::transparent`).
    pub(crate) const fn non_ascii_sensitive(self) -> bool {
        matches!(
            self,
            Transform::Decode
                | Transform::Unicode
                | Transform::Lowercase
                | Transform::CompressWhitespace
                | Transform::RemoveWhitespace
                | Transform::Shell
        )
    }

    pub(crate) fn apply<'a>(self, input: &'a str) -> Cow<'a, str> {
        match self {
            Transform::Decode => decode(input),
            Transform::UrlDecode => url::percent_decode(input, false),
            Transform::HtmlDecode => html::decode_entities(input),
            Transform::JsDecode => escapes::decode_js_escapes(input),
            Transform::Unicode => unicode::fold_unicode(input),
            Transform::RemoveNulls => remove_nulls(input),
            Transform::Lowercase => lowercase(input),
            Transform::CompressWhitespace => compress_whitespace(input),
            Transform::RemoveWhitespace => {
                if input.contains(char::is_whitespace) {
                    let mut out = String::with_capacity(input.len());
                    if input.is_ascii() {
                        out.extend(
                            input
                                .bytes()
                                .filter(|b| !b.is_ascii_whitespace() && *b != 0x0b)
                                .map(char::from),
                        );
                    } else {
                        out.extend(input.chars().filter(|c| !c.is_whitespace()));
                    }
                    Cow::Owned(out)
                } else {
                    Cow::Borrowed(input)
                }
            }
            Transform::RemoveComments => remove_comments(input),
            Transform::Shell => Cow::Owned(shell::normalize_shell(input)),
            Transform::Path => Cow::Owned(path::normalize_path(input)),
            Transform::Log4j => {
                if input.contains("${") {
                    Cow::Owned(log4j::resolve_lookups(input))
                } else {
                    Cow::Borrowed(input)
                }
            }
        }
    }
}

/// Applies a chain of transforms in order.
pub(crate) fn apply_chain<'a>(input: &'a str, chain: &[Transform]) -> Cow<'a, str> {
    let mut value = Cow::Borrowed(input);
    for t in chain {
        if let Cow::Owned(s) = t.apply(&value) {
            value = Cow::Owned(s);
        }
    }
    value
}

/// The canonical decoded form (see [`Transform::Decode`]).
pub(crate) fn decode(input: &str) -> Cow<'_, str> {
    // Nothing to decode: no escape, entity, NUL or non-ASCII character (the common case).
    if !input
        .bytes()
        .any(|b| matches!(b, b'%' | b'&' | b'\\' | 0) || b >= 0x80)
    {
        return Cow::Borrowed(input);
    }
    let mut value: Cow<'_, str> = Cow::Borrowed(input);
    for _ in 0..MAX_DECODE_PASSES {
        let mut changed = false;
        for step in [
            Transform::UrlDecode,
            Transform::HtmlDecode,
            Transform::JsDecode,
        ] {
            if let Cow::Owned(s) = step.apply(&value)
                && s != *value
            {
                changed = true;
                value = Cow::Owned(s);
            }
        }
        if !changed {
            break;
        }
    }
    if let Cow::Owned(s) = unicode::fold_unicode(&value) {
        value = Cow::Owned(s);
    }
    if let Cow::Owned(s) = remove_nulls(&value) {
        value = Cow::Owned(s);
    }
    value
}

fn remove_nulls(input: &str) -> Cow<'_, str> {
    if input.contains('\0') {
        Cow::Owned(input.replace('\0', ""))
    } else {
        Cow::Borrowed(input)
    }
}

fn lowercase(input: &str) -> Cow<'_, str> {
    if input.chars().any(char::is_uppercase) {
        Cow::Owned(input.to_lowercase())
    } else {
        Cow::Borrowed(input)
    }
}

fn compress_whitespace(input: &str) -> Cow<'_, str> {
    let needs = input
        .as_bytes()
        .windows(2)
        .any(|w| w[0].is_ascii_whitespace() && w[1].is_ascii_whitespace())
        || input.bytes().any(|b| b.is_ascii_whitespace() && b != b' ');
    if !needs {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len());
    let mut in_space = false;
    for c in input.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    Cow::Owned(out)
}

/// Removes `/* */` (keeping the body of MySQL `/*! */` executable comments), `<!-- -->`, and
/// `--`/`#` comments to the end of the line.
fn remove_comments(input: &str) -> Cow<'_, str> {
    if !(input.contains("/*")
        || input.contains("<!--")
        || input.contains("--")
        || input.contains('#'))
    {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix("/*") {
            let end = body.find("*/");
            let inner = &body[..end.unwrap_or(body.len())];
            if let Some(code) = inner.strip_prefix('!') {
                out.push_str(code.trim_start_matches(|c: char| c.is_ascii_digit()));
            }
            out.push(' ');
            rest = end.map_or("", |e| &body[e + 2..]);
        } else if let Some(body) = rest.strip_prefix("<!--") {
            out.push(' ');
            rest = body.find("-->").map_or("", |e| &body[e + 3..]);
        } else if rest.starts_with("--") || rest.starts_with('#') {
            out.push(' ');
            rest = rest.find('\n').map_or("", |e| &rest[e..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_sees_through_layers() {
        assert_eq!(decode("%253Cscript%253E"), "<script>");
        assert_eq!(decode("&amp;lt;img&amp;gt;"), "<img>");
        assert_eq!(decode("%26%2360%3Bsvg"), "<svg");
        assert_eq!(decode("a%00b"), "ab");
        assert_eq!(decode("O'Brien"), "O'Brien");
    }

    #[test]
    fn comments_go_away() {
        assert_eq!(remove_comments("UN/**/ION SEL/*x*/ECT"), "UN ION SEL ECT");
        assert_eq!(remove_comments("/*!50000union*/ select"), "union  select");
        assert_eq!(remove_comments("a -- b\nc"), "a  \nc");
    }
}
