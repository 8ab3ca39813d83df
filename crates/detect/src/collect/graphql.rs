//! GraphQL documents: the literal arguments (where injections hide) and the shape facts the
//! detectors care about (introspection, depth, aliases).

/// What a GraphQL document contains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphqlInfo {
    /// `(argument name, literal value)` for every string or number literal argument.
    pub arguments: Vec<(String, String)>,
    /// Whether `__schema` or `__type` is selected.
    pub introspection: bool,
    /// The deepest selection-set nesting.
    pub depth: usize,
    /// How many aliases (`alias: field`) appear.
    pub aliases: usize,
    /// Whether the token bound was hit (the rest was not inspected).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    Str(String),
    Num(String),
    Punct(char),
    Spread,
}

/// Tokenizes and summarises a document; at most `max_tokens` tokens are read.
pub fn parse_graphql_document(doc: &str, max_tokens: usize) -> GraphqlInfo {
    let (tokens, truncated) = tokenize(doc, max_tokens);
    let mut info = GraphqlInfo {
        truncated,
        ..GraphqlInfo::default()
    };
    let mut depth = 0usize;
    let mut paren = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct('{') => {
                depth += 1;
                info.depth = info.depth.max(depth);
            }
            Token::Punct('}') => depth = depth.saturating_sub(1),
            Token::Punct('(') => paren += 1,
            Token::Punct(')') => paren = paren.saturating_sub(1),
            Token::Name(n) if n == "__schema" || n == "__type" => info.introspection = true,
            Token::Str(value) | Token::Num(value) if paren > 0 => {
                // `name: "value"` (possibly inside a list or input object).
                let name = match (
                    i.checked_sub(2).map(|j| &tokens[j]),
                    tokens.get(i.wrapping_sub(1)),
                ) {
                    (Some(Token::Name(n)), Some(Token::Punct(':'))) => n.clone(),
                    _ => String::from("[literal]"),
                };
                info.arguments.push((name, value.clone()));
            }
            Token::Str(value) if paren == 0 && depth > 0 => {
                info.arguments.push(("[literal]".into(), value.clone()))
            }
            Token::Name(_) if paren == 0 && depth > 0 => {
                if let (Some(Token::Punct(':')), Some(Token::Name(_))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    info.aliases += 1;
                }
            }
            _ => {}
        }
    }
    info
}

fn tokenize(doc: &str, max_tokens: usize) -> (Vec<Token>, bool) {
    let mut tokens = Vec::new();
    let bytes = doc.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if tokens.len() >= max_tokens {
            return (tokens, true);
        }
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                let (value, used) = string_literal(&doc[i..]);
                tokens.push(Token::Str(value));
                i += used;
            }
            b'.' if doc[i..].starts_with("...") => {
                tokens.push(Token::Spread);
                i += 3;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
                tokens.push(Token::Num(doc[start..i].to_string()));
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                tokens.push(Token::Name(doc[start..i].to_string()));
            }
            _ => {
                let c = doc[i..].chars().next().unwrap_or(' ');
                tokens.push(Token::Punct(c));
                i += c.len_utf8();
            }
        }
    }
    (tokens, false)
}

/// A `"..."` or `"""..."""` literal at the start of `s`: its value and length.
fn string_literal(s: &str) -> (String, usize) {
    if let Some(body) = s.strip_prefix("\"\"\"") {
        let end = body.find("\"\"\"").unwrap_or(body.len());
        let used = (3 + end + 3).min(s.len());
        return (body[..end].to_string(), used);
    }
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, i + 1),
            '\n' => return (value, i),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((j, 'u')) => {
                    let code = s
                        .get(j + 1..j + 5)
                        .and_then(|h| u32::from_str_radix(h, 16).ok());
                    match code.and_then(char::from_u32) {
                        Some(ch) => {
                            value.push(ch);
                            for _ in 0..4 {
                                chars.next();
                            }
                        }
                        None => value.push('u'),
                    }
                }
                Some((_, other)) => value.push(other),
                None => break,
            },
            c => value.push(c),
        }
    }
    (value, s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_arguments_and_shape() {
        let info = parse_graphql_document(
            r#"query { user(id: "1' or '1'='1", limit: 5) { a: name friends { name } } __schema { types { name } } }"#,
            1000,
        );
        assert!(
            info.arguments
                .contains(&("id".into(), "1' or '1'='1".into()))
        );
        assert!(info.arguments.contains(&("limit".into(), "5".into())));
        assert!(info.introspection);
        assert_eq!(info.depth, 3);
        assert_eq!(info.aliases, 1);
    }

    #[test]
    fn bounded() {
        let doc = "{".repeat(10_000);
        let info = parse_graphql_document(&doc, 100);
        assert!(info.truncated);
        let _ = parse_graphql_document("\"\\u12", 10);
        let _ = parse_graphql_document("\"\"\"", 10);
    }
}
