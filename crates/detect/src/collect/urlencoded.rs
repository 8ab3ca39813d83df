//! `application/x-www-form-urlencoded` (query strings and form bodies).

use crate::normalize::url::percent_decode;

/// Splits `input` on `&` into decoded name/value pairs (`;` is data: splitting on it would hide
/// stacked SQL statements from inspection);
/// a pair without `=` has an empty value. At most `max_pairs` pairs; the flag says whether
/// more were dropped.
pub fn parse_urlencoded(input: &str, max_pairs: usize) -> (Vec<(String, String)>, bool) {
    let mut pairs = Vec::new();
    for piece in input.split('&') {
        if piece.is_empty() {
            continue;
        }
        if pairs.len() >= max_pairs {
            return (pairs, true);
        }
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        pairs.push((
            percent_decode(name, true).into_owned(),
            percent_decode(value, true).into_owned(),
        ));
    }
    (pairs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let (pairs, truncated) = parse_urlencoded("a=1+2&b=%3Cx%3E&flag&=v", 10);
        assert!(!truncated);
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "<x>".into()),
                ("flag".into(), "".into()),
                ("".into(), "v".into())
            ]
        );
        assert!(parse_urlencoded("a&b&c", 2).1);
    }
}
