//! A bounded pre-scan of a GraphQL document, run before the parser. It counts lexical tokens
//! and the deepest bracket nesting in one pass without allocating, so that a document over the
//! token limit is refused before a syntax tree is built, and the parser (which recurses per
//! nesting level) never sees nesting deeper than [`MAX_NESTING`].

/// Deepest nesting of `{`, `[` and `(` any document may have. async-graphql-parser itself
/// refuses more than 64 levels of selection sets and values; refusing here first keeps its
/// recursive descent off deep inputs.
pub const MAX_NESTING: usize = 64;

/// What the pre-scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scan {
    /// Lexical tokens: punctuators, names, numbers and strings (whitespace, commas and comments
    /// are not tokens, as in the GraphQL specification).
    pub tokens: usize,
    /// The deepest nesting of `{`, `[` and `(`.
    pub nesting: usize,
}

/// Why a document was refused by the pre-scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// More than `limit` tokens.
    TooManyTokens { limit: usize },
    /// Brackets nested deeper than [`MAX_NESTING`].
    TooDeep { limit: usize },
}

/// Scans `doc`, stopping as soon as a bound is passed.
pub fn scan_document(doc: &str, max_tokens: usize) -> Result<Scan, ScanError> {
    let bytes = doc.as_bytes();
    let mut scan = Scan::default();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            // The byte order mark is whitespace in GraphQL.
            0xEF if bytes[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => {
                i += 3;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => i = block_string_end(bytes, i + 3),
            b'"' => i = string_end(bytes, i + 1),
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                scan.nesting = scan.nesting.max(depth);
                if depth > MAX_NESTING {
                    return Err(ScanError::TooDeep { limit: MAX_NESTING });
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            // Any other byte is one token (the parser refuses what is not a punctuator).
            _ => i += 1,
        }
        debug_assert!(i > start);
        scan.tokens += 1;
        if scan.tokens > max_tokens {
            return Err(ScanError::TooManyTokens { limit: max_tokens });
        }
    }
    Ok(scan)
}

/// The index after the string starting before `i` (just after its opening quote): after the
/// closing quote, or at the line end or input end when it is unterminated.
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return i + 1,
            b'\\' => i += 2,
            b'\n' | b'\r' => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index after the block string whose content starts at `i`: after its closing `"""`
/// (`\"""` is an escaped quote triple), or the input end.
fn block_string_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\\"\"\"") {
            i += 4;
        } else if bytes[i..].starts_with(b"\"\"\"") {
            return i + 3;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tokens_like_the_specification() {
        let doc = r#"
            # a comment { [ (
            query Q($n: Int = -1.5e3) {
              users(first: $n, name: "a \" { b", bio: """x "" } """) { ...F, id }
            }
        "#;
        let scan = scan_document(doc, 1000).unwrap();
        // query Q ( $ n : Int = -1.5e3 ) { users ( first : $ n name : "…" bio : """…""" )
        // { ... F id } }
        assert_eq!(scan.tokens, 30);
        assert_eq!(scan.nesting, 2);
    }

    #[test]
    fn stops_at_the_token_limit_and_at_deep_nesting() {
        assert_eq!(
            scan_document("{ a b c }", 4),
            Err(ScanError::TooManyTokens { limit: 4 })
        );
        assert!(scan_document("{ a b c }", 5).is_ok());
        let deep = "{a".repeat(MAX_NESTING + 1);
        assert_eq!(
            scan_document(&deep, usize::MAX),
            Err(ScanError::TooDeep { limit: MAX_NESTING })
        );
        let ok = format!("{}{}", "{a".repeat(MAX_NESTING), "}".repeat(MAX_NESTING));
        assert_eq!(scan_document(&ok, usize::MAX).unwrap().nesting, MAX_NESTING);
    }

    #[test]
    fn unterminated_strings_and_stray_bytes_end_cleanly() {
        for doc in [
            "\"abc",
            "\"\"\"abc",
            "\"a\\",
            "é ü \u{0} ?",
            "\"\"\"\\\"\"\"",
        ] {
            assert!(scan_document(doc, 100).is_ok(), "{doc:?}");
        }
    }
}
