//! JSON bodies: every key and every string value, with its JSON path.

use serde_json::Value;

/// What a JSON walk hands to its visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonItem {
    Key,
    Value,
}

/// Why a JSON walk stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonIssue {
    /// Not valid JSON.
    Invalid,
    /// Nested deeper than allowed; the deeper part was not inspected.
    TooDeep,
    /// More items than allowed; the rest was not inspected.
    TooMany,
}

/// Parses `text` and calls `visit(item, path, text)` for every object key and every string (and
/// number, as text) value, depth first, up to `max_depth` levels and `max_items` calls.
pub fn walk_json(
    text: &str,
    max_depth: usize,
    max_items: usize,
    visit: &mut dyn FnMut(JsonItem, &str, &str),
) -> Result<(), JsonIssue> {
    // serde_json refuses nesting beyond 128 levels itself, so parsing cannot overflow the stack.
    let value: Value = serde_json::from_str(text).map_err(|_| JsonIssue::Invalid)?;
    walk_value(&value, max_depth, max_items, visit)
}

/// Walks an already-parsed value (GraphQL variables, JSON found inside a form field).
pub(crate) fn walk_value(
    value: &Value,
    max_depth: usize,
    max_items: usize,
    visit: &mut dyn FnMut(JsonItem, &str, &str),
) -> Result<(), JsonIssue> {
    let mut walker = Walker {
        visit,
        items: 0,
        max_items,
        max_depth,
        issue: None,
        path: String::from("$"),
    };
    walker.walk(value, 0);
    walker.issue.map_or(Ok(()), Err)
}

struct Walker<'v> {
    visit: &'v mut dyn FnMut(JsonItem, &str, &str),
    items: usize,
    max_items: usize,
    max_depth: usize,
    issue: Option<JsonIssue>,
    path: String,
}

impl Walker<'_> {
    fn emit(&mut self, item: JsonItem, text: &str) -> bool {
        if self.items >= self.max_items {
            self.issue = Some(JsonIssue::TooMany);
            return false;
        }
        self.items += 1;
        (self.visit)(item, &self.path, text);
        true
    }

    fn walk(&mut self, value: &Value, depth: usize) {
        if self.issue == Some(JsonIssue::TooMany) {
            return;
        }
        match value {
            Value::String(s) => {
                self.emit(JsonItem::Value, s);
            }
            Value::Number(n) => {
                self.emit(JsonItem::Value, &n.to_string());
            }
            Value::Null | Value::Bool(_) => {}
            Value::Array(_) | Value::Object(_) if depth >= self.max_depth => {
                self.issue.get_or_insert(JsonIssue::TooDeep);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = self.path.len();
                    self.path.push_str(&format!("[{i}]"));
                    self.walk(item, depth + 1);
                    self.path.truncate(len);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let len = self.path.len();
                    push_key(&mut self.path, key);
                    if !self.emit(JsonItem::Key, key) {
                        return;
                    }
                    self.walk(item, depth + 1);
                    self.path.truncate(len);
                }
            }
        }
    }
}

/// `$.name` for identifier-like keys, `$['odd key']` otherwise.
fn push_key(path: &mut String, key: &str) {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if simple {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str("['");
        for c in key.chars().take(64) {
            match c {
                '\'' | '\\' => {
                    path.push('\\');
                    path.push(c);
                }
                c if c.is_control() => path.push('?'),
                c => path.push(c),
            }
        }
        path.push_str("']");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Collected = (Vec<(JsonItem, String, String)>, Result<(), JsonIssue>);

    fn collect(text: &str, depth: usize) -> Collected {
        let mut out = Vec::new();
        let r = walk_json(text, depth, 100, &mut |i, p, v| {
            out.push((i, p.to_string(), v.to_string()))
        });
        (out, r)
    }

    #[test]
    fn walks_with_paths() {
        let (items, r) = collect(r#"{"a":{"b":["x",2]},"odd key":"y","$ne":1}"#, 10);
        assert!(r.is_ok());
        assert!(items.contains(&(JsonItem::Value, "$.a.b[0]".into(), "x".into())));
        assert!(items.contains(&(JsonItem::Value, "$['odd key']".into(), "y".into())));
        assert!(items.contains(&(JsonItem::Key, "$['$ne']".into(), "$ne".into())));
    }

    #[test]
    fn reports_bounds() {
        assert_eq!(
            collect(r#"{"a":{"b":{"c":"d"}}}"#, 2).1,
            Err(JsonIssue::TooDeep)
        );
        assert_eq!(collect("{nope", 2).1, Err(JsonIssue::Invalid));
    }
}
