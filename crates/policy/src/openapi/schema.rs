//! OpenAPI Schema Objects as JSON Schema: the document is rewritten once per direction
//! (request, response) and registered as one resource, so every `$ref` inside it resolves
//! locally; the validators never fetch anything.
//!
//! - 3.0 (JSON Schema draft 4 dialect with extensions): `nullable: true` becomes a `null`
//!   type (and a `null` enum member).
//! - 3.0 and 3.1: a `readOnly` property is not required in a request, a `writeOnly` property
//!   is not required in a response (the OpenAPI rule for `required`).

use std::fmt::Write as _;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, PatternOptions, Registry, ValidationError, Validator};
use serde_json::{Map, Value};

/// Which OpenAPI major.minor a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenApiVersion {
    V30,
    V31,
}

impl OpenApiVersion {
    pub fn draft(self) -> Draft {
        match self {
            OpenApiVersion::V30 => Draft::Draft4,
            OpenApiVersion::V31 => Draft::Draft202012,
        }
    }
}

/// Which way a message travels; `required` is read differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Deepest nesting the rewrite walks; a deeper document is refused.
pub const MAX_DEPTH: usize = 200;

/// Keys whose values are data, never schemas.
fn is_data_key(key: &str) -> bool {
    matches!(key, "example" | "examples" | "enum" | "const" | "default") || key.starts_with("x-")
}

/// Rewrites every Schema Object of `doc` for `direction`.
pub fn rewrite(
    doc: &mut Value,
    version: OpenApiVersion,
    direction: Direction,
) -> Result<(), String> {
    walk(doc, version, direction, 0)
}

fn walk(
    value: &mut Value,
    version: OpenApiVersion,
    direction: Direction,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "the document is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    match value {
        Value::Object(map) => {
            if version == OpenApiVersion::V30 && map.get("nullable") == Some(&Value::Bool(true)) {
                make_nullable(map);
            }
            drop_required(map, direction);
            for (key, child) in map.iter_mut() {
                if !is_data_key(key) {
                    walk(child, version, direction, depth + 1)?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, version, direction, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn make_nullable(map: &mut Map<String, Value>) {
    map.remove("nullable");
    if let Some(Value::Array(options)) = map.get_mut("enum")
        && !options.contains(&Value::Null)
    {
        options.push(Value::Null);
    }
    match map.get_mut("type") {
        Some(Value::String(kind)) => {
            let kind = std::mem::take(kind);
            map.insert(
                "type".into(),
                Value::Array(vec![Value::String(kind), "null".into()]),
            );
        }
        Some(_) => {}
        None => {
            // No type (a composition): null or whatever the rest says.
            if map.contains_key("$ref") {
                return;
            }
            let rest = std::mem::take(map);
            map.insert(
                "anyOf".into(),
                Value::Array(vec![
                    serde_json::json!({"type": "null"}),
                    Value::Object(rest),
                ]),
            );
        }
    }
}

fn drop_required(map: &mut Map<String, Value>, direction: Direction) {
    let flag = match direction {
        Direction::Request => "readOnly",
        Direction::Response => "writeOnly",
    };
    let Some(Value::Object(properties)) = map.get("properties") else {
        return;
    };
    let skipped: Vec<String> = properties
        .iter()
        .filter(|(_, p)| p.get(flag) == Some(&Value::Bool(true)))
        .map(|(name, _)| name.clone())
        .collect();
    if skipped.is_empty() {
        return;
    }
    if let Some(Value::Array(required)) = map.get_mut("required") {
        required.retain(|r| {
            r.as_str()
                .is_none_or(|name| !skipped.iter().any(|s| s == name))
        });
    }
}

/// Escapes a JSON pointer for use in a URI fragment.
pub fn pointer_fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Escapes one JSON pointer token.
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Compiles the schema at `pointer` of the document registered as `uri`.
pub fn compile(
    registry: &Registry<'_>,
    uri: &str,
    pointer: &str,
    draft: Draft,
) -> Result<Validator, String> {
    let root = serde_json::json!({"$ref": format!("{uri}#{}", pointer_fragment(pointer))});
    jsonschema::options()
        .with_draft(draft)
        .with_registry(registry)
        .with_pattern_options(PatternOptions::regex())
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("Unresolvable") || text.contains("resolve") {
                format!("{text} (only `$ref`s within the document are supported)")
            } else {
                text
            }
        })
}

/// A JSON pointer (`/user/tags/0`) as a readable path after `prefix`: `body.user.tags[0]`.
pub fn readable_path(prefix: &str, pointer: &str) -> String {
    let mut out = prefix.to_owned();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        push_token(&mut out, &token);
    }
    out
}

/// Appends one property name or index to a readable path.
pub fn push_token(out: &mut String, token: &str) {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        let _ = write!(out, "[{token}]");
    } else if !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        out.push('.');
        out.push_str(token);
    } else {
        let _ = write!(out, "[{}]", Value::String(token.to_owned()));
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        let mut end = 80;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

/// A violation as (field, reason): the field under `prefix`, a reason that names what the
/// specification wants and never repeats the client's value.
pub fn explain(prefix: &str, error: &ValidationError<'_>) -> Vec<(String, String)> {
    let field = readable_path(prefix, error.instance_path().as_str());
    let at = |reason: String| vec![(field.clone(), reason)];
    match error.kind() {
        ValidationErrorKind::Type { kind } => {
            let types: Vec<String> = match kind {
                TypeKind::Single(t) => vec![t.to_string()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
            };
            at(format!("must be of type {}", types.join(" or ")))
        }
        ValidationErrorKind::Required { property } => {
            let mut f = field.clone();
            push_token(&mut f, property.as_str().unwrap_or_default());
            vec![(f, "is required".into())]
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                let mut f = field.clone();
                push_token(&mut f, name);
                (f, "is not a declared property".into())
            })
            .collect(),
        ValidationErrorKind::Enum { options } => match options.as_array() {
            Some(list) if list.len() <= 10 => at(format!(
                "must be one of {}",
                list.iter().map(short).collect::<Vec<_>>().join(", ")
            )),
            _ => at("must be one of the allowed values".into()),
        },
        ValidationErrorKind::Constant { expected_value } => {
            at(format!("must be {}", short(expected_value)))
        }
        ValidationErrorKind::Minimum { limit } => at(format!("must be at least {limit}")),
        ValidationErrorKind::Maximum { limit } => at(format!("must be at most {limit}")),
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            at(format!("must be greater than {limit}"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => at(format!("must be less than {limit}")),
        ValidationErrorKind::MinLength { limit } => {
            at(format!("must be at least {limit} characters long"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            at(format!("must be at most {limit} characters long"))
        }
        ValidationErrorKind::MinItems { limit } => at(format!("must have at least {limit} items")),
        ValidationErrorKind::MaxItems { limit } => at(format!("must have at most {limit} items")),
        ValidationErrorKind::MinProperties { limit } => {
            at(format!("must have at least {limit} properties"))
        }
        ValidationErrorKind::MaxProperties { limit } => {
            at(format!("must have at most {limit} properties"))
        }
        ValidationErrorKind::Pattern { pattern } => at(format!("must match the pattern {pattern}")),
        ValidationErrorKind::Format { format } => at(format!("must be a valid {format}")),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            at(format!("must be a multiple of {multiple_of}"))
        }
        ValidationErrorKind::UniqueItems => at("must not contain duplicate items".into()),
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            at("must match one of the allowed schemas".into())
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            at("must match exactly one of the allowed schemas".into())
        }
        ValidationErrorKind::Not { .. } => at("must not match the excluded schema".into()),
        ValidationErrorKind::FalseSchema => at("is not allowed".into()),
        ValidationErrorKind::Contains => at("must contain a matching item".into()),
        ValidationErrorKind::PropertyNames { .. } => {
            at("has a property name that is not allowed".into())
        }
        ValidationErrorKind::AdditionalItems { limit } => {
            at(format!("must have at most {limit} items"))
        }
        other => at(format!("does not match the schema (`{}`)", other.keyword())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nullable_and_read_only_are_rewritten() {
        let mut doc = json!({
            "components": {"schemas": {"User": {
                "type": "object",
                "required": ["id", "name", "password"],
                "properties": {
                    "id": {"type": "integer", "readOnly": true},
                    "name": {"type": "string", "nullable": true},
                    "password": {"type": "string", "writeOnly": true},
                    "role": {"type": "string", "enum": ["a", "b"], "nullable": true},
                    "any": {"nullable": true, "allOf": [{"type": "string"}]}
                },
                "example": {"nullable": true}
            }}}
        });
        let mut request = doc.clone();
        rewrite(&mut request, OpenApiVersion::V30, Direction::Request).unwrap();
        let user = &request["components"]["schemas"]["User"];
        assert_eq!(user["required"], json!(["name", "password"]));
        assert_eq!(
            user["properties"]["name"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(user["properties"]["role"]["enum"], json!(["a", "b", null]));
        assert_eq!(
            user["properties"]["any"]["anyOf"][0],
            json!({"type": "null"})
        );
        assert_eq!(
            user["example"],
            json!({"nullable": true}),
            "data is left alone"
        );
        rewrite(&mut doc, OpenApiVersion::V31, Direction::Response).unwrap();
        let user = &doc["components"]["schemas"]["User"];
        assert_eq!(user["required"], json!(["id", "name"]));
        assert_eq!(
            user["properties"]["name"]["nullable"],
            json!(true),
            "3.1 keeps it"
        );
    }

    #[test]
    fn readable_paths() {
        assert_eq!(readable_path("body", ""), "body");
        assert_eq!(readable_path("body", "/user/tags/0"), "body.user.tags[0]");
        assert_eq!(readable_path("body", "/a~1b/c d"), "body[\"a/b\"][\"c d\"]");
        assert_eq!(
            pointer_fragment("/paths/~1users~1{id}/get"),
            "/paths/~1users~1%7Bid%7D/get"
        );
    }
}
