//! `application/x-www-form-urlencoded` (query strings and form bodies).

use std::borrow::Cow;

use crate::normalize::url::percent_decode;

/// The raw `name=value` pieces of `input` (split on `&`, empty pieces skipped), undecoded.
pub(crate) fn raw_pairs(input: &str) -> impl Iterator<Item = (&str, &str)> {
    input
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

/// The decoded `(name, value)` pairs of `input`, borrowed when nothing needed decoding.
pub(crate) fn pairs(input: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    raw_pairs(input).map(|(name, value)| (percent_decode(name, true), percent_decode(value, true)))
}

/// Splits `input` on `&` into decoded name/value pairs (`;` is data: splitting on it would hide
/// stacked SQL statements from inspection);
/// a pair without `=` has an empty value. At most `max_pairs` pairs; the flag says whether
/// more were dropped.
pub fn parse_urlencoded(input: &str, max_pairs: usize) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    for (name, value) in pairs(input) {
        if out.len() >= max_pairs {
            return (out, true);
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    (out, false)
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
