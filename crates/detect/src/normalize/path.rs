//! Path normalisation for traversal detection: backslashes become slashes, repeated slashes
//! collapse and `/./` disappears, but `..` stays (it is what the detectors look for).

/// Normalises separators; keeps `..` segments.
pub fn normalize_path(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        let c = if c == '\\' { '/' } else { c };
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
        if out.ends_with("/./") {
            out.truncate(out.len() - 2);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_separators() {
        assert_eq!(
            normalize_path("..\\..\\windows\\win.ini"),
            "../../windows/win.ini"
        );
        assert_eq!(normalize_path("/a//b/./c/../d"), "/a/b/c/../d");
    }
}
