//! The persisted-query allowlist: the documents a route accepts, by the SHA-256 of their
//! exact text (the hash Apollo's automatic persisted queries send as
//! `extensions.persistedQuery.sha256Hash`).
//!
//! Files: a `.graphql` or `.gql` file is one document; a JSON file is an Apollo persisted
//! query manifest (`{"operations": [{"id": "<sha256>", "body": "query …"}]}`), an object
//! mapping ids to documents (`{"<id>": "query …"}`, Relay's form; ids are not trusted, the
//! hash is computed), or an array of documents.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// The allowed documents by hash.
#[derive(Debug, Default)]
pub struct PersistedQueries {
    documents: HashMap<Sha256Digest, Arc<str>>,
}

/// The SHA-256 of a document's exact text.
pub fn document_hash(document: &str) -> Sha256Digest {
    Sha256::digest(document.as_bytes()).into()
}

/// Parses 64 hexadecimal digits (either case).
pub fn parse_hash(hex: &str) -> Option<Sha256Digest> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

impl PersistedQueries {
    /// Reads allowlist files: `(file name, content)`. An error names the file and the reason.
    pub fn from_files(files: &[(String, Vec<u8>)]) -> Result<Self, String> {
        let mut list = PersistedQueries::default();
        for (name, content) in files {
            let text =
                std::str::from_utf8(content).map_err(|_| format!("`{name}` is not UTF-8 text"))?;
            let lower = name.to_ascii_lowercase();
            if lower.ends_with(".graphql") || lower.ends_with(".gql") {
                list.add(text);
                continue;
            }
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| format!("`{name}` is neither a .graphql file nor JSON ({e})"))?;
            list.add_json(&json).map_err(|e| format!("`{name}`: {e}"))?;
        }
        if list.documents.is_empty() {
            return Err("the persisted-query files hold no document".into());
        }
        Ok(list)
    }

    fn add(&mut self, document: &str) {
        self.documents
            .insert(document_hash(document), Arc::from(document));
    }

    fn add_json(&mut self, json: &serde_json::Value) -> Result<(), String> {
        match json {
            serde_json::Value::Object(map) if map.get("operations").is_some() => {
                let operations = map["operations"]
                    .as_array()
                    .ok_or("`operations` is not an array")?;
                for (i, op) in operations.iter().enumerate() {
                    let body = ["body", "query", "document"]
                        .iter()
                        .find_map(|k| op.get(*k).and_then(|v| v.as_str()))
                        .ok_or_else(|| format!("operations[{i}] has no `body`"))?;
                    if let Some(id) = op.get("id").and_then(|v| v.as_str())
                        && let Some(claimed) = parse_hash(id)
                        && claimed != document_hash(body)
                    {
                        return Err(format!(
                            "operations[{i}]: id `{id}` is not the SHA-256 of its body"
                        ));
                    }
                    self.add(body);
                }
                Ok(())
            }
            serde_json::Value::Object(map) => {
                for (id, document) in map {
                    let document = document
                        .as_str()
                        .ok_or_else(|| format!("`{id}` does not map to a document string"))?;
                    self.add(document);
                }
                Ok(())
            }
            serde_json::Value::Array(items) => {
                for (i, document) in items.iter().enumerate() {
                    self.add(
                        document
                            .as_str()
                            .ok_or_else(|| format!("item {i} is not a document string"))?,
                    );
                }
                Ok(())
            }
            _ => Err("expected a manifest, an object of documents or an array".into()),
        }
    }

    /// The allowed document with this hash.
    pub fn get(&self, hash: &Sha256Digest) -> Option<&Arc<str>> {
        self.documents.get(hash)
    }

    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(digest: &Sha256Digest) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn reads_the_three_json_forms_and_graphql_files() {
        let a = "query A { a }";
        let manifest = serde_json::json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [{"id": hex(&document_hash(a)), "name": "A", "type": "query", "body": a}]
        });
        let files = vec![
            ("m.json".to_owned(), manifest.to_string().into_bytes()),
            ("r.json".to_owned(), br#"{"1": "query B { b }"}"#.to_vec()),
            ("l.json".to_owned(), br#"["query C { c }"]"#.to_vec()),
            ("d.graphql".to_owned(), b"query D { d }\n".to_vec()),
        ];
        let list = PersistedQueries::from_files(&files).unwrap();
        assert_eq!(list.len(), 4);
        for doc in [a, "query B { b }", "query C { c }", "query D { d }\n"] {
            assert_eq!(
                list.get(&document_hash(doc)).map(|d| &**d),
                Some(doc),
                "{doc}"
            );
        }
        let upper = hex(&document_hash(a)).to_ascii_uppercase();
        assert_eq!(parse_hash(&upper), Some(document_hash(a)));
    }

    #[test]
    fn refuses_wrong_ids_and_empty_or_broken_files() {
        let wrong = serde_json::json!({"operations": [{"id": hex(&[0; 32]), "body": "{ a }"}]});
        let err = PersistedQueries::from_files(&[("m.json".into(), wrong.to_string().into())])
            .unwrap_err();
        assert!(err.contains("not the SHA-256"), "{err}");
        assert!(PersistedQueries::from_files(&[("e.json".into(), b"[]".to_vec())]).is_err());
        assert!(PersistedQueries::from_files(&[("x.json".into(), b"{".to_vec())]).is_err());
        assert_eq!(parse_hash("abc"), None);
        assert_eq!(parse_hash(&"g".repeat(64)), None);
    }
}
