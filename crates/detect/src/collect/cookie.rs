//! The `Cookie` request header.

/// The name/value pairs of a `Cookie` header, borrowed (values keep their encoding;
/// normalisation decodes them).
pub(crate) fn cookies(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (name.trim(), value.trim().trim_matches('"'))
        })
}

/// Splits a `Cookie` header into name/value pairs (values keep their encoding; normalisation
/// decodes them).
pub fn parse_cookies(header: &str) -> Vec<(String, String)> {
    cookies(header)
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cookie_header() {
        assert_eq!(
            parse_cookies("a=1; b=\"two\";c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "two".into()),
                ("c".into(), "".into())
            ]
        );
    }
}
