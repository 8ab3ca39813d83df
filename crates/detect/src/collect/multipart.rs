//! `multipart/form-data` bodies: parts with their headers, names, file names and contents.
//! Lenient (CRLF or LF line ends) so that what a permissive backend accepts is inspected, but
//! every irregularity is reported, because multipart parsing differences are a classic WAF
//! bypass.

/// One part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Part<'a> {
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    pub name: Option<String>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub body: &'a [u8],
}

/// Irregularities a strict parser would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipartIssue {
    /// No part starts with the declared boundary.
    NoParts,
    /// The closing `--boundary--` is missing.
    Unterminated,
    /// A part header line is not `name: value`, or its name has characters outside the token set.
    BadHeader,
    /// A part has no `Content-Disposition: form-data` header.
    MissingDisposition,
    /// More parts than allowed; the rest was not parsed.
    TooManyParts,
    /// A part header line has CR/LF inconsistencies (bare LF among CRLF lines).
    MixedLineEnds,
}

/// Parses `body` with `boundary`; returns the parts found and every irregularity seen.
pub fn parse_multipart<'a>(
    body: &'a [u8],
    boundary: &str,
    max_parts: usize,
) -> (Vec<Part<'a>>, Vec<MultipartIssue>) {
    let mut parts = Vec::new();
    let mut issues = Vec::new();
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    if boundary.is_empty() {
        return (parts, vec![MultipartIssue::NoParts]);
    }
    let mut positions = Vec::new();
    let mut from = 0;
    while let Some(found) = find(&body[from..], delimiter) {
        let at = from + found;
        // A delimiter starts the body or a line.
        if at == 0 || body[at - 1] == b'\n' {
            positions.push(at);
        }
        from = at + delimiter.len();
    }
    let mut terminated = false;
    for (index, &start) in positions.iter().enumerate() {
        let after = start + delimiter.len();
        if body[after..].starts_with(b"--") {
            terminated = true;
            break;
        }
        if parts.len() >= max_parts {
            issues.push(MultipartIssue::TooManyParts);
            break;
        }
        let end = positions.get(index + 1).copied().unwrap_or(body.len());
        let mut segment = &body[after..end];
        // The line break before the next delimiter belongs to the delimiter.
        segment = segment.strip_suffix(b"\n").unwrap_or(segment);
        segment = segment.strip_suffix(b"\r").unwrap_or(segment);
        // Rest of the boundary line (transport padding) and its line end.
        let segment = match find(segment, b"\n") {
            Some(nl) => &segment[nl + 1..],
            None => &segment[segment.len()..],
        };
        parts.push(parse_part(segment, &mut issues));
    }
    if positions.is_empty() {
        issues.push(MultipartIssue::NoParts);
    } else if !terminated && !issues.contains(&MultipartIssue::TooManyParts) {
        issues.push(MultipartIssue::Unterminated);
    }
    issues.dedup();
    (parts, issues)
}

fn parse_part<'a>(segment: &'a [u8], issues: &mut Vec<MultipartIssue>) -> Part<'a> {
    let mut part = Part::default();
    let mut rest = segment;
    let mut saw_crlf = false;
    let mut saw_lf = false;
    loop {
        let Some(nl) = find(rest, b"\n") else {
            // Headers without a blank line: no body.
            rest = &rest[rest.len()..];
            break;
        };
        let raw_line = &rest[..nl];
        rest = &rest[nl + 1..];
        let line = match raw_line.strip_suffix(b"\r") {
            Some(l) => {
                saw_crlf = true;
                l
            }
            None => {
                saw_lf = true;
                raw_line
            }
        };
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(line);
        match line.split_once(':') {
            Some((name, value)) if is_token(name) => {
                part.headers
                    .push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
            _ => {
                issues.push(MultipartIssue::BadHeader);
                part.headers.push((String::new(), line.into_owned()));
            }
        }
    }
    if saw_crlf && saw_lf {
        issues.push(MultipartIssue::MixedLineEnds);
    }
    part.body = rest;
    let mut has_disposition = false;
    for (name, value) in &part.headers {
        match name.as_str() {
            "content-disposition" => {
                has_disposition = value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("form-data");
                for (key, param) in parameters(value) {
                    match key.as_str() {
                        "name" => part.name = Some(param),
                        "filename" | "filename*" => part.filename = Some(param),
                        _ => {}
                    }
                }
            }
            "content-type" => part.content_type = Some(value.clone()),
            _ => {}
        }
    }
    if !has_disposition {
        issues.push(MultipartIssue::MissingDisposition);
    }
    part
}

/// The `; key=value` parameters of a header value (quoted values unescaped), keys lowercase.
pub(crate) fn parameters(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = match value.find(';') {
        Some(p) => p + 1,
        None => return out,
    };
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t' || bytes[i] == b';') {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b';' {
            i += 1;
        }
        let key = value[key_start..i].trim().to_ascii_lowercase();
        let mut param = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        i += 1;
                    }
                    let c = value[i..].chars().next().unwrap_or(' ');
                    param.push(c);
                    i += c.len_utf8();
                }
                i += 1;
            } else {
                let start = i;
                while i < bytes.len() && bytes[i] != b';' {
                    i += 1;
                }
                param = value[start..i].trim().to_string();
            }
        }
        if !key.is_empty() {
            out.push((key, param));
        }
    }
    out
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    memchr_find(haystack, needle)
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let pos = haystack[from..=haystack.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let at = from + pos;
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--XX--\r\n";
        let (parts, issues) = parse_multipart(body, "XX", 10);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name.as_deref(), Some("a"));
        assert_eq!(parts[0].body, b"hello");
        assert_eq!(parts[1].filename.as_deref(), Some("x.php"));
        assert_eq!(parts[1].body, b"<?php");
    }

    #[test]
    fn reports_irregularities() {
        let (_, issues) = parse_multipart(b"--XX\nfoo\n\nbar\n", "XX", 10);
        assert!(issues.contains(&MultipartIssue::BadHeader));
        assert!(issues.contains(&MultipartIssue::Unterminated));
        let (_, issues) = parse_multipart(b"nothing here", "XX", 10);
        assert_eq!(issues, vec![MultipartIssue::NoParts]);
    }

    #[test]
    fn parses_parameters() {
        assert_eq!(
            parameters("form-data; name=\"a;b\"; filename=x.txt"),
            vec![
                ("name".into(), "a;b".into()),
                ("filename".into(), "x.txt".into())
            ]
        );
    }
}
