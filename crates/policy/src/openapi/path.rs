//! Paths: normalisation (the same as the gateway's routing, so what is validated is what is
//! forwarded), percent-decoding, and OpenAPI path templates (`/users/{id}`, `/files/{name}.json`).

use std::borrow::Cow;

/// Resolves dot segments (`.`, `..` and their `%2e` forms), merges repeated slashes and reads
/// `\` as `/`, exactly as the gateway's router does before routing and forwarding. Nothing
/// else is decoded.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let suspicious = path.contains("//")
        || path.contains("/.")
        || path.contains('\\')
        || path
            .as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%2e"));
    if !suspicious {
        return Cow::Borrowed(path);
    }
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let is_dot_dot = |s: &str| {
        s == ".."
            || s.eq_ignore_ascii_case("%2e%2e")
            || s.eq_ignore_ascii_case(".%2e")
            || s.eq_ignore_ascii_case("%2e.")
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split(['/', '\\']).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            trailing_slash = i == last && i > 0;
            continue;
        }
        if is_dot(segment) {
            trailing_slash = i == last;
        } else if is_dot_dot(segment) {
            out.pop();
            trailing_slash = i == last;
        } else {
            out.push(segment);
            trailing_slash = false;
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || normalized.is_empty() {
        normalized.push('/');
    }
    Cow::Owned(normalized)
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in query strings).
/// Invalid escapes are kept as they are; invalid UTF-8 is replaced.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Cow<'_, str> {
    let escaped = text.contains('%') || (plus_is_space && text.contains('+'));
    if !escaped {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One piece of a template segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param(String),
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A whole segment `{name}`.
    Param(String),
    /// Literals and parameters mixed: `{name}.json`, `v{major}.{minor}`.
    Mixed(Vec<Piece>),
}

/// A compiled OpenAPI path template.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    pub text: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses `/users/{id}/orders`; the text must start with `/` and braces must pair.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path `{text}` must start with `/`"));
        }
        let trimmed = text.trim_end_matches('/');
        let mut segments = Vec::new();
        for raw in trimmed.split('/').skip(1) {
            let mut pieces = Vec::new();
            let mut rest = raw;
            while !rest.is_empty() {
                match rest.find('{') {
                    Some(0) => {
                        let close = rest
                            .find('}')
                            .ok_or_else(|| format!("path `{text}`: `{{` without `}}`"))?;
                        let name = &rest[1..close];
                        if name.is_empty() || name.contains('{') {
                            return Err(format!("path `{text}`: empty or nested parameter"));
                        }
                        if matches!(pieces.last(), Some(Piece::Param(_))) {
                            return Err(format!(
                                "path `{text}`: two parameters need a literal between them"
                            ));
                        }
                        pieces.push(Piece::Param(name.to_owned()));
                        rest = &rest[close + 1..];
                    }
                    Some(open) => {
                        pieces.push(Piece::Literal(rest[..open].to_owned()));
                        rest = &rest[open..];
                    }
                    None => {
                        if rest.contains('}') {
                            return Err(format!("path `{text}`: `}}` without `{{`"));
                        }
                        pieces.push(Piece::Literal(rest.to_owned()));
                        rest = "";
                    }
                }
            }
            segments.push(match pieces.as_slice() {
                [] => Segment::Literal(String::new()),
                [Piece::Literal(l)] => Segment::Literal(l.clone()),
                [Piece::Param(p)] => Segment::Param(p.clone()),
                _ => Segment::Mixed(pieces),
            });
        }
        Ok(PathTemplate {
            text: text.to_owned(),
            segments,
        })
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Sort key: more literal segments first, then more mixed ones (concrete paths match
    /// before templated ones, as OpenAPI says).
    pub fn specificity(&self) -> (usize, usize) {
        let literal = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let mixed = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Mixed(_)))
            .count();
        (literal, mixed)
    }

    /// Names of the parameters, in order.
    pub fn param_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Param(p) => names.push(p.as_str()),
                Segment::Mixed(pieces) => pieces.iter().for_each(|p| {
                    if let Piece::Param(n) = p {
                        names.push(n.as_str())
                    }
                }),
                Segment::Literal(_) => {}
            }
        }
        names
    }

    /// Matches `segments` (the request path split on `/`, still percent-encoded); returns
    /// the raw parameter values by name.
    pub fn matches<'p>(&self, segments: &[&'p str]) -> Option<Vec<(&str, &'p str)>> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut captures = Vec::new();
        for (template, actual) in self.segments.iter().zip(segments) {
            match template {
                Segment::Literal(l) => {
                    if l != actual && percent_decode(actual, false) != l.as_str() {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    if actual.is_empty() {
                        return None;
                    }
                    captures.push((name.as_str(), *actual));
                }
                Segment::Mixed(pieces) => match_pieces(pieces, actual, &mut captures)?,
            }
        }
        Some(captures)
    }
}

fn match_pieces<'t, 'p>(
    pieces: &'t [Piece],
    mut actual: &'p str,
    captures: &mut Vec<(&'t str, &'p str)>,
) -> Option<()> {
    let mut i = 0;
    while i < pieces.len() {
        match &pieces[i] {
            Piece::Literal(l) => actual = actual.strip_prefix(l.as_str())?,
            Piece::Param(name) => {
                let value = match pieces.get(i + 1) {
                    Some(Piece::Literal(next)) => {
                        // At least one character, up to the next literal.
                        let at = actual.get(1..)?.find(next.as_str())? + 1;
                        let (value, rest) = actual.split_at(at);
                        actual = rest;
                        value
                    }
                    _ => std::mem::take(&mut actual),
                };
                if value.is_empty() {
                    return None;
                }
                captures.push((name.as_str(), value));
            }
        }
        i += 1;
    }
    actual.is_empty().then_some(())
}

/// Splits a path (without the base path) into segments, ignoring one trailing slash.
pub fn split_path(path: &str) -> Vec<&str> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split('/').skip(1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_router() {
        for (raw, expected) in [
            ("/a/b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/%2e%2e/b", "/b"),
            ("//a///b/", "/a/b/"),
            ("/a\\b", "/a/b"),
            ("/..", "/"),
            ("/a/.", "/a/"),
        ] {
            assert_eq!(normalize_path(raw), expected, "{raw}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%C3%A9", false), "é");
        assert_eq!(percent_decode("%FF", false), "\u{fffd}");
    }

    #[test]
    fn templates_match_whole_and_mixed_segments() {
        let t = PathTemplate::parse("/users/{id}/files/{name}.{ext}").unwrap();
        assert_eq!(t.param_names(), ["id", "name", "ext"]);
        let m = t
            .matches(&split_path("/users/7/files/report.v2.pdf"))
            .unwrap();
        assert_eq!(m, [("id", "7"), ("name", "report"), ("ext", "v2.pdf")]);
        assert!(t.matches(&split_path("/users/7/files/.pdf")).is_none());
        assert!(t.matches(&split_path("/users//files/a.b")).is_none());
        assert!(t.matches(&split_path("/users/7/files")).is_none());
        let root = PathTemplate::parse("/").unwrap();
        assert!(root.matches(&split_path("/")).is_some());
        let lit = PathTemplate::parse("/a%20b").unwrap();
        assert!(lit.matches(&split_path("/a%20b")).is_some());
        assert!(PathTemplate::parse("/a/{b").is_err());
        assert!(PathTemplate::parse("/a/{b}{c}").is_err());
        assert!(PathTemplate::parse("a").is_err());
        assert!(
            PathTemplate::parse("/users/me").unwrap().specificity()
                > PathTemplate::parse("/users/{id}").unwrap().specificity()
        );
    }
}
