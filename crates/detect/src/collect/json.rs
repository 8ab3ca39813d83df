//! JSON bodies: every key and every string value, with its JSON path.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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
///
/// Objects are visited in key order with the last of duplicate keys winning, exactly as a
/// `serde_json::Value` holds them; strings without escapes are borrowed from `text`.
pub fn walk_json(
    text: &str,
    max_depth: usize,
    max_items: usize,
    visit: &mut dyn FnMut(JsonItem, &str, &str),
) -> Result<(), JsonIssue> {
    // serde_json refuses nesting beyond 128 levels itself, so parsing cannot overflow the stack.
    let value: Node<'_> = serde_json::from_str(text).map_err(|_| JsonIssue::Invalid)?;
    let mut walker = Walker {
        visit,
        items: 0,
        max_items,
        max_depth,
        issue: None,
        path: String::from("$"),
        number: String::new(),
    };
    walker.walk(&value, 0);
    walker.issue.map_or(Ok(()), Err)
}

/// A parsed JSON value that borrows its strings where it can (the engine only reads them).
enum Node<'a> {
    Null,
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Sorted by key, one entry per key (the last one), like `serde_json::Map`.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// A string key or value, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node<'de>, E> {
                Ok(Node::Null)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Node::Null, Node::Number))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Node<'de>, E> {
                Ok(Node::String(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node<'de>, E> {
                Ok(Node::String(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node<'de>, E> {
                Ok(Node::String(Cow::Owned(v)))
            }
            fn visit_none<E>(self) -> Result<Node<'de>, E> {
                Ok(Node::Null)
            }
            fn visit_unit<E>(self) -> Result<Node<'de>, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
                Deserialize::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
                let mut entries: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
                while let Some((Text(key), value)) = map.next_entry::<Text<'de>, Node<'de>>()? {
                    entries.push((key, value));
                }
                // What `serde_json::Map` (a BTreeMap) keeps: keys in order, the last value of a
                // duplicate key. The sort is stable, so the last duplicate comes last.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out: Vec<(Cow<'de, str>, Node<'de>)> = Vec::with_capacity(entries.len());
                for entry in entries {
                    match out.last_mut() {
                        Some(last) if last.0 == entry.0 => *last = entry,
                        _ => out.push(entry),
                    }
                }
                Ok(Node::Object(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

struct Walker<'v> {
    visit: &'v mut dyn FnMut(JsonItem, &str, &str),
    items: usize,
    max_items: usize,
    max_depth: usize,
    issue: Option<JsonIssue>,
    path: String,
    /// Reused buffer for numbers written as text.
    number: String,
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

    fn walk(&mut self, value: &Node<'_>, depth: usize) {
        if self.issue == Some(JsonIssue::TooMany) {
            return;
        }
        match value {
            Node::String(s) => {
                self.emit(JsonItem::Value, s);
            }
            Node::Number(n) => {
                let mut number = std::mem::take(&mut self.number);
                number.clear();
                let _ = write!(number, "{n}");
                self.emit(JsonItem::Value, &number);
                self.number = number;
            }
            Node::Null => {}
            Node::Array(_) | Node::Object(_) if depth >= self.max_depth => {
                self.issue.get_or_insert(JsonIssue::TooDeep);
            }
            Node::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = self.path.len();
                    let _ = write!(self.path, "[{i}]");
                    self.walk(item, depth + 1);
                    self.path.truncate(len);
                }
            }
            Node::Object(map) => {
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
