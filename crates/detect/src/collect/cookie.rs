//! The `Cookie` request header.

/// Splits a `Cookie` header into name/value pairs (values keep their encoding; normalisation
/// decodes them).
pub fn parse_cookies(header: &str) -> Vec<(String, String)> {
    header
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (
                name.trim().to_string(),
                value.trim().trim_matches('"').to_string(),
            )
        })
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
