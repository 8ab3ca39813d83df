//! What GraphQL operations a request runs, for authorisation: their types (`query`,
//! `mutation`, `subscription`) and names. Only the top level of the document is scanned
//! (operation headers; selection sets are skipped by brace counting), so the cost is one
//! linear pass without allocation per token. Deeper GraphQL checks (depth, cost, aliases)
//! belong to protocol inspection.

use std::collections::BTreeSet;

use apiguard_model::RequestView;

/// The operations of a GraphQL request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GraphQlOperations {
    pub types: BTreeSet<String>,
    pub names: BTreeSet<String>,
}

/// Most operations of a batch considered; the rest count as one more of each kind seen.
const MAX_BATCH: usize = 64;

/// The operations of `request` when it is a GraphQL request: GET with a `query` parameter,
/// POST `application/json` with a `query` member (or a batch array of them), or POST
/// `application/graphql`. None when it is not GraphQL (or the body was not read).
pub fn graphql_operations(request: &RequestView<'_>) -> Option<GraphQlOperations> {
    let mut ops = GraphQlOperations::default();
    if request.method == http::Method::GET {
        let query = request.query()?;
        let mut document = None;
        let mut name = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "query" => document = Some(crate::openapi::percent_decode(value, true)),
                "operationName" => name = Some(crate::openapi::percent_decode(value, true)),
                _ => {}
            }
        }
        let document = document?;
        scan(
            &document,
            name.as_deref().filter(|n| !n.is_empty()),
            &mut ops,
        );
        return Some(ops);
    }
    let body = request.body?;
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/graphql" => {
            let text = std::str::from_utf8(body).ok()?;
            scan(text, None, &mut ops);
            Some(ops)
        }
        "application/json" => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let mut found = false;
            let mut one = |item: &serde_json::Value| {
                if let Some(document) = item.get("query").and_then(|q| q.as_str()) {
                    let name = item
                        .get("operationName")
                        .and_then(|n| n.as_str())
                        .filter(|n| !n.is_empty());
                    scan(document, name, &mut ops);
                    found = true;
                }
            };
            match &value {
                serde_json::Value::Array(batch) => batch.iter().take(MAX_BATCH).for_each(&mut one),
                item => one(item),
            }
            found.then_some(ops)
        }
        _ => None,
    }
}

/// Adds the operations of `document` (only the one named `selected`, when given) to `ops`.
fn scan(document: &str, selected: Option<&str>, ops: &mut GraphQlOperations) {
    let mut found: Vec<(&str, Option<&str>)> = Vec::new();
    let bytes = document.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        i = skip_ignored(bytes, i);
        if i >= bytes.len() {
            break;
        }
        match bytes[i] {
            b'{' => {
                found.push(("query", None));
                i = skip_block(bytes, i);
            }
            b if is_name_start(b) => {
                let (word, next) = name_at(document, i);
                i = next;
                match word {
                    "query" | "mutation" | "subscription" => {
                        let j = skip_ignored(bytes, i);
                        let name = (j < bytes.len() && is_name_start(bytes[j]))
                            .then(|| name_at(document, j).0);
                        found.push((word, name));
                    }
                    _ => {}
                }
                // Skip the rest of the definition: up to and including its selection set.
                while i < bytes.len() && bytes[i] != b'{' {
                    i = match bytes[i] {
                        b'"' => skip_string(bytes, i),
                        b'#' => skip_comment(bytes, i),
                        b'(' => skip_until_close(bytes, i, b'(', b')'),
                        _ => i + 1,
                    };
                }
                i = skip_block(bytes, i);
            }
            _ => i += 1,
        }
    }
    let chosen: Vec<&(&str, Option<&str>)> = match selected {
        Some(name) => found.iter().filter(|(_, n)| *n == Some(name)).collect(),
        None => found.iter().collect(),
    };
    for (kind, name) in chosen {
        ops.types.insert((*kind).to_owned());
        if let Some(name) = name {
            ops.names.insert((*name).to_owned());
        }
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn name_at(text: &str, start: usize) -> (&str, usize) {
    let bytes = text.as_bytes();
    let mut end = start;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        end += 1;
    }
    (&text[start..end], end)
}

/// Skips whitespace, commas, comments and the byte order mark.
fn skip_ignored(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => i = skip_comment(bytes, i),
            0xEF if bytes[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => i += 3,
            _ => break,
        }
    }
    i
}

fn skip_comment(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
        i += 1;
    }
    i
}

/// Skips a string or block string starting at `i` (a `"`).
fn skip_string(bytes: &[u8], i: usize) -> usize {
    if bytes[i..].starts_with(b"\"\"\"") {
        let mut j = i + 3;
        while j < bytes.len() {
            if bytes[j..].starts_with(b"\\\"\"\"") {
                j += 4;
            } else if bytes[j..].starts_with(b"\"\"\"") {
                return j + 3;
            } else {
                j += 1;
            }
        }
        return j;
    }
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            b'\n' | b'\r' => return j,
            _ => j += 1,
        }
    }
    j
}

/// Skips a balanced `open`..`close` group starting at `i`, minding strings and comments.
fn skip_until_close(bytes: &[u8], i: usize, open: u8, close: u8) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < bytes.len() {
        match bytes[j] {
            b'"' => {
                j = skip_string(bytes, j);
                continue;
            }
            b'#' => {
                j = skip_comment(bytes, j);
                continue;
            }
            b if b == open => depth += 1,
            b if b == close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

fn skip_block(bytes: &[u8], i: usize) -> usize {
    if i >= bytes.len() {
        return i;
    }
    skip_until_close(bytes, i, b'{', b'}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(document: &str, selected: Option<&str>) -> (Vec<String>, Vec<String>) {
        let mut ops = GraphQlOperations::default();
        scan(document, selected, &mut ops);
        (
            ops.types.into_iter().collect(),
            ops.names.into_iter().collect(),
        )
    }

    #[test]
    fn operation_types_and_names_are_found() {
        assert_eq!(
            ops("{ users { id } }", None),
            (vec!["query".into()], vec![])
        );
        assert_eq!(
            ops(
                "mutation DeleteUser($id: ID!) { deleteUser(id: $id) }",
                None
            ),
            (vec!["mutation".into()], vec!["DeleteUser".into()])
        );
        let doc = r#"
            # a comment with mutation { in it
            fragment F on User { id name(format: "}") }
            query Q { user(id: "{") { ...F } }
            mutation M { x }
        "#;
        assert_eq!(
            ops(doc, None),
            (
                vec!["mutation".into(), "query".into()],
                vec!["M".into(), "Q".into()]
            )
        );
        assert_eq!(
            ops(doc, Some("Q")),
            (vec!["query".into()], vec!["Q".into()])
        );
        assert_eq!(
            ops(r#"query A { a(s: """ } mutation B { """) }"#, None),
            (vec!["query".into()], vec!["A".into()])
        );
    }

    #[test]
    fn garbage_never_panics() {
        for doc in [
            "{",
            "}",
            "query",
            "\"",
            "\"\"\"",
            "mutation (",
            "#",
            "query Q(",
            "\u{feff}{a}",
        ] {
            let _ = ops(doc, None);
        }
    }
}
