//! XML bodies: text nodes and attribute values with their element path, and the declarations
//! (`<!DOCTYPE ...>` with its internal subset, `<?...?>`) where XXE lives. A lenient tokenizer,
//! not a validating parser: a malformed document is still inspected, and reported.

use crate::normalize::html::decode_entities;

/// What the tokenizer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlItem {
    /// A text node (or CDATA section) at an element path such as `/root/a`.
    Text { path: String, text: String },
    /// An attribute value at `/root/a/@name`.
    Attribute { path: String, value: String },
    /// A `<!DOCTYPE ...>`, `<!ENTITY ...>` or `<?...?>` declaration, verbatim.
    Declaration(String),
}

/// Irregularities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlIssue {
    /// Nested deeper than allowed; deeper elements are reported at the deepest allowed path.
    TooDeep,
    /// More items than allowed; the rest was not inspected.
    TooMany,
    /// Unclosed tags, comments or declarations.
    Malformed,
}

/// Tokenizes `text`; at most `max_items` items and `max_depth` nested elements.
pub fn parse_xml(text: &str, max_depth: usize, max_items: usize) -> (Vec<XmlItem>, Vec<XmlIssue>) {
    let mut parser = Parser {
        items: Vec::new(),
        issues: Vec::new(),
        stack: Vec::new(),
        max_depth,
        max_items,
    };
    parser.run(text);
    parser.issues.dedup();
    (parser.items, parser.issues)
}

struct Parser {
    items: Vec<XmlItem>,
    issues: Vec<XmlIssue>,
    stack: Vec<String>,
    max_depth: usize,
    max_items: usize,
}

impl Parser {
    fn path(&self) -> String {
        let mut p = String::new();
        for name in &self.stack {
            p.push('/');
            p.push_str(name);
        }
        if p.is_empty() {
            p.push('/');
        }
        p
    }

    fn push(&mut self, item: XmlItem) -> bool {
        if self.items.len() >= self.max_items {
            self.issue(XmlIssue::TooMany);
            return false;
        }
        self.items.push(item);
        true
    }

    fn issue(&mut self, issue: XmlIssue) {
        if !self.issues.contains(&issue) {
            self.issues.push(issue);
        }
    }

    fn run(&mut self, text: &str) {
        let mut rest = text;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                self.text(rest);
                break;
            };
            self.text(&rest[..lt]);
            rest = &rest[lt..];
            let consumed = if rest.starts_with("<!--") {
                end_of(rest, "-->").unwrap_or_else(|| {
                    self.issue(XmlIssue::Malformed);
                    rest.len()
                })
            } else if let Some(body) = rest.strip_prefix("<![CDATA[") {
                let end = body.find("]]>");
                let cdata = &body[..end.unwrap_or(body.len())];
                let path = self.path();
                if !cdata.trim().is_empty()
                    && !self.push(XmlItem::Text {
                        path,
                        text: cdata.to_string(),
                    })
                {
                    return;
                }
                end.map_or(rest.len(), |e| 9 + e + 3)
            } else if rest.starts_with("<!") {
                let end = declaration_end(rest);
                if end.is_none() {
                    self.issue(XmlIssue::Malformed);
                }
                let end = end.unwrap_or(rest.len());
                if !self.push(XmlItem::Declaration(rest[..end].to_string())) {
                    return;
                }
                end
            } else if rest.starts_with("<?") {
                let end = end_of(rest, "?>");
                if end.is_none() {
                    self.issue(XmlIssue::Malformed);
                }
                let end = end.unwrap_or(rest.len());
                if !self.push(XmlItem::Declaration(rest[..end].to_string())) {
                    return;
                }
                end
            } else if let Some(body) = rest.strip_prefix("</") {
                let end = body.find('>').map_or(rest.len(), |e| e + 3);
                let name = body[..body.find('>').unwrap_or(body.len())].trim();
                self.close(name);
                end
            } else {
                match self.start_tag(rest) {
                    Some(used) => used,
                    None => {
                        // A lone `<` in text.
                        self.text("<");
                        1
                    }
                }
            };
            if self.items.len() >= self.max_items && self.issues.contains(&XmlIssue::TooMany) {
                return;
            }
            rest = &rest[consumed.min(rest.len())..];
        }
        if !self.stack.is_empty() {
            self.issue(XmlIssue::Malformed);
        }
    }

    fn text(&mut self, raw: &str) {
        if raw.trim().is_empty() {
            return;
        }
        let path = self.path();
        let text = decode_entities(raw).into_owned();
        self.push(XmlItem::Text { path, text });
    }

    fn close(&mut self, name: &str) {
        if let Some(pos) = self.stack.iter().rposition(|n| n == name) {
            self.stack.truncate(pos);
        } else {
            self.issue(XmlIssue::Malformed);
        }
    }

    /// Parses `<name attr="v" ...>` at the start of `s`; returns the bytes consumed.
    fn start_tag(&mut self, s: &str) -> Option<usize> {
        let bytes = s.as_bytes();
        let name_len = s[1..]
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(s.len() - 1);
        if name_len == 0 || !s[1..].starts_with(|c: char| c.is_alphabetic() || c == '_' || c == ':')
        {
            return None;
        }
        let name = s[1..1 + name_len].to_string();
        let mut i = 1 + name_len;
        let mut attributes = Vec::new();
        let mut self_closing = false;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i) {
                None => {
                    self.issue(XmlIssue::Malformed);
                    break;
                }
                Some(b'>') => {
                    i += 1;
                    break;
                }
                Some(b'/') => {
                    self_closing = true;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let attr_start = i;
            while i < bytes.len()
                && !bytes[i].is_ascii_whitespace()
                && !matches!(bytes[i], b'=' | b'>' | b'/')
            {
                i += 1;
            }
            let attr = s[attr_start..i].to_string();
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value = String::new();
            if bytes.get(i) == Some(&b'=') {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(&q @ (b'"' | b'\'')) => {
                        let end = s[i + 1..].find(q as char).map_or(s.len(), |e| i + 1 + e);
                        value = s[i + 1..end].to_string();
                        i = (end + 1).min(s.len());
                    }
                    _ => {
                        let start = i;
                        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>'
                        {
                            i += 1;
                        }
                        value = s[start..i].to_string();
                    }
                }
            }
            if attr.is_empty() {
                // Garbage that is not an attribute: skip one character so the loop always
                // advances (a whole character: the next slice must start on a boundary).
                i += s
                    .get(i..)
                    .and_then(|r| r.chars().next())
                    .map_or(1, char::len_utf8);
                continue;
            }
            attributes.push((attr, value));
        }
        let depth_ok = self.stack.len() < self.max_depth;
        if !depth_ok {
            self.issue(XmlIssue::TooDeep);
        }
        let element_path = if depth_ok {
            format!("{}/{}", self.path().trim_end_matches('/'), name)
        } else {
            self.path()
        };
        let lower_name = name.to_ascii_lowercase();
        let includes = lower_name.ends_with(":include") || lower_name.ends_with(":import");
        for (attr, value) in attributes {
            if value.is_empty() {
                continue;
            }
            // External schema and include references make the parser fetch a URL: report them
            // with the declarations so XXE rules see them.
            let lower_attr = attr.to_ascii_lowercase();
            if lower_attr.ends_with("schemalocation")
                || (includes
                    && matches!(lower_attr.as_str(), "href" | "namespace" | "schemalocation"))
            {
                self.push(XmlItem::Declaration(format!("<{name} {attr}=\"{value}\">")));
            }
            let path = format!("{element_path}/@{attr}");
            let value = decode_entities(&value).into_owned();
            if !self.push(XmlItem::Attribute { path, value }) {
                break;
            }
        }
        if !self_closing && depth_ok {
            self.stack.push(name);
        }
        Some(i.min(s.len()))
    }
}

fn end_of(s: &str, terminator: &str) -> Option<usize> {
    s.find(terminator).map(|e| e + terminator.len())
}

/// The end of a `<!...>` declaration, skipping a `[...]` internal subset and quoted strings.
fn declaration_end(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quote = None;
    for (i, c) in s.char_indices().skip(2) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') | (None, '<') => depth += 1,
            (None, ']') => depth -= 1,
            (None, '>') if depth <= 0 => return Some(i + 1),
            (None, '>') => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_before_multi_byte_characters_in_a_tag_does_not_panic() {
        // Found by the `parsers` fuzz target: skipping one byte of garbage in a tag landed
        // inside a character.
        let text = String::from_utf8_lossy(b"\n<<ee\x95</=\t\"\"\xff!&");
        let _ = parse_xml(&text, 10, 100);
        let _ = parse_xml("<a =\u{e9}\u{e9} b=\"1\">", 10, 100);
    }

    #[test]
    fn extracts_text_attributes_and_declarations() {
        let doc = r#"<?xml version="1.0"?><!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]><root><a probe="x&amp;y">t&lt;1</a><b/></root>"#;
        let (items, issues) = parse_xml(doc, 10, 100);
        assert!(issues.is_empty(), "{issues:?}");
        assert!(items.contains(&XmlItem::Declaration(r#"<?xml version="1.0"?>"#.into())));
        assert!(
            items
                .iter()
                .any(|i| matches!(i, XmlItem::Declaration(d) if d.contains("ENTITY xxe SYSTEM")))
        );
        assert!(items.contains(&XmlItem::Attribute {
            path: "/root/a/@probe".into(),
            value: "x&y".into()
        }));
        assert!(items.contains(&XmlItem::Text {
            path: "/root/a".into(),
            text: "t<1".into()
        }));
    }

    #[test]
    fn survives_garbage() {
        for doc in [
            "<",
            "<a",
            "<a b=",
            "<!DOCTYPE",
            "<![CDATA[x",
            "</a>",
            "<a =x>",
            "<<<>>>",
        ] {
            let _ = parse_xml(doc, 4, 10);
        }
        let (_, issues) = parse_xml("<a><b><c><d>x</d></c></b></a>", 2, 100);
        assert!(issues.contains(&XmlIssue::TooDeep));
    }
}
