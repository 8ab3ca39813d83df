//! Parsing the `Signature-Input` and `Signature` fields of RFC 9421 (HTTP Message Signatures).
//! Both are structured-field dictionaries (RFC 9651), parsed with the `sfv` crate; this module
//! checks their shape (inner lists of strings with the signature parameters; byte sequences)
//! and bounds what a client can make the gateway do: field size, signature count and
//! component count are capped before anything is verified.

use sfv::{BareItem, Dictionary, InnerList, ListEntry, ListSerializer, Parser};

/// Longest `Signature-Input` or `Signature` field accepted (all field lines together).
pub const MAX_FIELD_BYTES: usize = 8 * 1024;
/// Most signatures considered in one request.
pub const MAX_SIGNATURES: usize = 8;
/// Most components one signature may cover.
pub const MAX_COMPONENTS: usize = 32;

/// One signature of a request: its label, what it covers and its parameters, and the
/// signature bytes from the `Signature` field.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureEntry {
    pub label: String,
    pub components: Vec<ComponentId>,
    pub params: SignatureParams,
    /// The value of the `@signature-params` line of the signature base: the inner list
    /// serialized again (RFC 9651 serialization is canonical, so this is what the signer
    /// serialized).
    pub params_line: String,
    pub signature: Vec<u8>,
}

impl SignatureEntry {
    /// Whether the signature covers the field `name` (lower case), without parameters.
    pub fn covers(&self, name: &str) -> bool {
        self.components
            .iter()
            .any(|c| c.name == name && c.params.is_empty())
    }
}

/// The parameters of a signature (RFC 9421 section 2.3).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignatureParams {
    /// Creation time, seconds since the Unix epoch.
    pub created: Option<i64>,
    /// Expiry time, seconds since the Unix epoch.
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub alg: Option<String>,
    pub keyid: Option<String>,
    pub tag: Option<String>,
}

/// A component identifier: a derived component (`@method`) or a field name, with its
/// parameters (`;bs`, `;name="id"`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentId {
    pub name: String,
    /// Parameter names and values, in order.
    pub params: Vec<(String, BareItem)>,
    /// The identifier as it appears in the signature base (`"@method"`, `"x-a";bs`).
    pub serialized: String,
}

impl ComponentId {
    pub fn has_param(&self, name: &str) -> bool {
        self.params.iter().any(|(k, _)| k == name)
    }
}

/// Why the signature fields cannot be used. The text is for logs, not for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedSignature(pub String);

impl std::fmt::Display for MalformedSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed(text: impl Into<String>) -> MalformedSignature {
    MalformedSignature(text.into())
}

/// Joins the lines of one field with ", " (how several field lines of a structured field
/// combine), refusing more than [`MAX_FIELD_BYTES`].
pub fn join_lines<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    what: &str,
) -> Result<Vec<u8>, MalformedSignature> {
    let mut joined = Vec::new();
    for line in lines {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        if joined.len() + line.len() > MAX_FIELD_BYTES {
            return Err(malformed(format!(
                "{what} is longer than {MAX_FIELD_BYTES} bytes"
            )));
        }
        joined.extend_from_slice(line);
    }
    Ok(joined)
}

fn parse_dictionary(bytes: &[u8], what: &str) -> Result<Dictionary, MalformedSignature> {
    Parser::new(bytes)
        .parse::<Dictionary>()
        .map_err(|e| malformed(format!("{what} is not a structured dictionary: {e}")))
}

/// Parses the two fields (each already joined, see [`join_lines`]) into the signatures
/// present in both, in `Signature-Input` order. A label only in one of them is skipped; no
/// usable signature at all is an error.
pub fn parse_signatures(
    signature_input: &[u8],
    signature: &[u8],
) -> Result<Vec<SignatureEntry>, MalformedSignature> {
    if signature_input.len() > MAX_FIELD_BYTES || signature.len() > MAX_FIELD_BYTES {
        return Err(malformed("a signature field is too long"));
    }
    let inputs = parse_dictionary(signature_input, "Signature-Input")?;
    let values = parse_dictionary(signature, "Signature")?;
    if inputs.len() > MAX_SIGNATURES {
        return Err(malformed(format!(
            "more than {MAX_SIGNATURES} signatures in Signature-Input"
        )));
    }
    let mut entries = Vec::new();
    for (label, member) in &inputs {
        let Some(value) = values.get(label) else {
            continue;
        };
        let ListEntry::InnerList(inner) = member else {
            return Err(malformed(format!(
                "Signature-Input `{}` is not an inner list",
                label.as_str()
            )));
        };
        let signature = match value {
            ListEntry::Item(item) => match item.bare_item.as_byte_sequence() {
                Some(bytes) => bytes.to_vec(),
                None => {
                    return Err(malformed(format!(
                        "Signature `{}` is not a byte sequence",
                        label.as_str()
                    )));
                }
            },
            ListEntry::InnerList(_) => {
                return Err(malformed(format!(
                    "Signature `{}` is not a byte sequence",
                    label.as_str()
                )));
            }
        };
        entries.push(SignatureEntry {
            label: label.as_str().to_owned(),
            components: components(inner, label.as_str())?,
            params: params(inner, label.as_str())?,
            params_line: serialize_inner_list(inner)?,
            signature,
        });
    }
    if entries.is_empty() {
        return Err(malformed(
            "no label is in both Signature-Input and Signature",
        ));
    }
    Ok(entries)
}

fn components(inner: &InnerList, label: &str) -> Result<Vec<ComponentId>, MalformedSignature> {
    if inner.items.len() > MAX_COMPONENTS {
        return Err(malformed(format!(
            "signature `{label}` covers more than {MAX_COMPONENTS} components"
        )));
    }
    let mut out: Vec<ComponentId> = Vec::with_capacity(inner.items.len());
    for item in &inner.items {
        let Some(name) = item.bare_item.as_string() else {
            return Err(malformed(format!(
                "signature `{label}`: a component identifier is not a string"
            )));
        };
        let serialized = sfv::ItemSerializer::new()
            .bare_item(&item.bare_item)
            .parameters(&item.params)
            .finish();
        // RFC 9421 section 3.2: a repeated component makes the signature unverifiable.
        if out.iter().any(|c| c.serialized == serialized) {
            return Err(malformed(format!(
                "signature `{label}` covers {serialized} twice"
            )));
        }
        out.push(ComponentId {
            name: name.as_str().to_owned(),
            params: item
                .params
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect(),
            serialized,
        });
    }
    Ok(out)
}

fn params(inner: &InnerList, label: &str) -> Result<SignatureParams, MalformedSignature> {
    let mut out = SignatureParams::default();
    for (key, value) in &inner.params {
        let wrong = || {
            malformed(format!(
                "signature `{label}`: parameter `{}` has the wrong type",
                key.as_str()
            ))
        };
        let integer = || value.as_integer().map(i64::from).ok_or_else(wrong);
        let string = || {
            value
                .as_string()
                .map(|s| s.as_str().to_owned())
                .ok_or_else(wrong)
        };
        match key.as_str() {
            "created" => out.created = Some(integer()?),
            "expires" => out.expires = Some(integer()?),
            "nonce" => out.nonce = Some(string()?),
            "alg" => out.alg = Some(string()?),
            "keyid" => out.keyid = Some(string()?),
            "tag" => out.tag = Some(string()?),
            // Unknown parameters are covered by the signature (they are in the base); they
            // mean nothing here.
            _ => {}
        }
    }
    Ok(out)
}

fn serialize_inner_list(inner: &InnerList) -> Result<String, MalformedSignature> {
    let entry = ListEntry::InnerList(inner.clone());
    let mut serializer = ListSerializer::new();
    serializer.members(std::iter::once(&entry));
    serializer
        .finish()
        .ok_or_else(|| malformed("the signature parameters cannot be serialized"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc_9421_example_fields() {
        // RFC 9421 appendix B.2.6 (Ed25519), with the signature shortened.
        let input = br#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
        let signature = b"sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
        let entries = parse_signatures(input, signature).unwrap();
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.label, "sig-b26");
        assert_eq!(entry.components.len(), 6);
        assert_eq!(entry.components[1].serialized, "\"@method\"");
        assert_eq!(entry.params.created, Some(1618884473));
        assert_eq!(entry.params.keyid.as_deref(), Some("test-key-ed25519"));
        assert_eq!(entry.signature.len(), 64);
        assert_eq!(
            entry.params_line,
            r#"("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#
        );
        assert!(entry.covers("content-type"));
        assert!(!entry.covers("content-digest"));
    }

    #[test]
    fn component_parameters_are_kept_and_serialized() {
        let entries = parse_signatures(
            br#"a=("x-list";bs "@query-param";name="id");created=1"#,
            b"a=:AAAA:",
        )
        .unwrap();
        let components = &entries[0].components;
        assert_eq!(components[0].serialized, "\"x-list\";bs");
        assert!(components[0].has_param("bs"));
        assert_eq!(components[1].serialized, "\"@query-param\";name=\"id\"");
    }

    #[test]
    fn refuses_bad_shapes() {
        let cases: [(&[u8], &[u8]); 8] = [
            (b"a=(\"@method\"", b"a=:AAAA:"),                  // unterminated
            (b"a=\"@method\"", b"a=:AAAA:"),                   // not an inner list
            (b"a=(\"@method\")", b"a=\"text\""),               // not a byte sequence
            (b"a=(@method)", b"a=:AAAA:"),                     // a token, not a string
            (b"a=(\"@method\");created=\"now\"", b"a=:AAAA:"), // wrong parameter type
            (b"a=(\"@method\" \"@method\")", b"a=:AAAA:"),     // repeated component
            (b"a=(\"@method\")", b"b=:AAAA:"),                 // no common label
            (b"", b""),                                        // nothing
        ];
        for (input, signature) in cases {
            assert!(
                parse_signatures(input, signature).is_err(),
                "accepted {:?} / {:?}",
                String::from_utf8_lossy(input),
                String::from_utf8_lossy(signature)
            );
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let many: Vec<String> = (0..=MAX_SIGNATURES).map(|i| format!("s{i}=()")).collect();
        let sigs: Vec<String> = (0..=MAX_SIGNATURES)
            .map(|i| format!("s{i}=:AA==:"))
            .collect();
        assert!(parse_signatures(many.join(", ").as_bytes(), sigs.join(", ").as_bytes()).is_err());
        let components: Vec<String> = (0..=MAX_COMPONENTS).map(|i| format!("\"h{i}\"")).collect();
        let input = format!("a=({})", components.join(" "));
        assert!(parse_signatures(input.as_bytes(), b"a=:AA==:").is_err());
        let long = vec![b'a'; MAX_FIELD_BYTES + 1];
        assert!(join_lines([long.as_slice()].into_iter(), "Signature").is_err());
        assert_eq!(
            join_lines([&b"a=1"[..], &b"b=2"[..]].into_iter(), "x").unwrap(),
            b"a=1, b=2"
        );
    }
}
