//! Response validation: the status is declared, the content type is declared, the body
//! matches its schema, and (excessive data exposure) the body carries no field the
//! specification does not declare.

use serde_json::Value;

use super::schema::push_token;
use super::spec::{BodyKind, Operation, Spec, media_essence};
use super::validate::{MAX_VIOLATIONS, Violation, find_media, schema_violations};

/// Most `$ref` hops and nesting levels followed when looking for undeclared fields.
const MAX_WALK_DEPTH: usize = 64;
/// Array elements looked at per array.
const MAX_ELEMENTS: usize = 1_000;

/// Checks a response to `op`. `body` is the complete body, when it was buffered.
pub fn validate_response(
    spec: &Spec,
    op: &Operation,
    status: u16,
    content_type: Option<&str>,
    body: Option<&[u8]>,
    undeclared_fields: bool,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let violation = |rule, field: &str, reason: String| Violation {
        rule,
        field: field.to_owned(),
        reason,
        status: 502,
    };
    let Some(declared) = op.response(status) else {
        out.push(violation(
            "openapi.response_status",
            "response.status",
            format!("{status} is not declared for {}", op.describe()),
        ));
        return out;
    };
    let body = body.filter(|b| !b.is_empty());
    let Some(body) = body else {
        return out;
    };
    if declared.media.is_empty() {
        out.push(violation(
            "openapi.response_body",
            "response.body",
            format!("is not declared for status {status} of {}", op.describe()),
        ));
        return out;
    }
    let Some(content_type) = content_type else {
        return out;
    };
    let essence = media_essence(content_type);
    let Some(media) = find_media(&declared.media, &essence) else {
        let allowed: Vec<&str> = declared.media.iter().map(|m| m.range.as_str()).collect();
        out.push(violation(
            "openapi.response_content_type",
            "response.header:content-type",
            format!("must be one of {}", allowed.join(", ")),
        ));
        return out;
    };
    let json = essence == "application/json" || essence.ends_with("+json");
    if media.kind != BodyKind::Json || !json {
        return out;
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => {
            out.push(violation(
                "openapi.response_body",
                "response.body",
                "must be valid JSON".into(),
            ));
            return out;
        }
    };
    if let Some(validator) = &media.validator {
        schema_violations(
            validator,
            &value,
            "response.body",
            "openapi.response_body",
            &mut out,
        );
    }
    if undeclared_fields
        && let Some(pointer) = &media.schema_pointer
        && let Some(schema) = spec.response_doc.pointer(pointer)
    {
        let mut fields = Vec::new();
        let mut path = "response.body".to_owned();
        undeclared(
            &spec.response_doc,
            schema,
            &value,
            &mut path,
            0,
            &mut fields,
        );
        for field in fields {
            if out.len() >= MAX_VIOLATIONS {
                break;
            }
            if !out.iter().any(|v| v.field == field) {
                out.push(violation(
                    "openapi.response_undeclared",
                    &field,
                    "is not declared in the API specification".into(),
                ));
            }
        }
    }
    for v in &mut out {
        v.status = 502;
    }
    out
}

/// Follows `$ref`s within the document.
fn resolve<'d>(doc: &'d Value, mut schema: &'d Value) -> Option<&'d Value> {
    for _ in 0..MAX_WALK_DEPTH {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#')?;
                schema = doc.pointer(&super::path::percent_decode(pointer, false))?;
            }
            None => return Some(schema),
        }
    }
    None
}

/// The schema and every subschema it is composed of (`allOf`, `anyOf`, `oneOf`), resolved.
fn branches<'d>(doc: &'d Value, schema: &'d Value, depth: usize, out: &mut Vec<&'d Value>) {
    if depth > 8 || out.len() > 64 {
        return;
    }
    let Some(schema) = resolve(doc, schema) else {
        return;
    };
    out.push(schema);
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            for sub in list {
                branches(doc, sub, depth + 1, out);
            }
        }
    }
}

/// Collects the paths of object members that no applicable schema declares. An object is
/// closed when some branch lists `properties` and none allows more (`additionalProperties`
/// true or a schema, or `patternProperties`); an object schema without `properties` is
/// free-form.
fn undeclared(
    doc: &Value,
    schema: &Value,
    value: &Value,
    path: &mut String,
    depth: usize,
    out: &mut Vec<String>,
) {
    if depth > MAX_WALK_DEPTH || out.len() >= MAX_VIOLATIONS {
        return;
    }
    let mut all = Vec::new();
    branches(doc, schema, 0, &mut all);
    match value {
        Value::Object(map) => {
            let declares = all.iter().any(|s| s.get("properties").is_some());
            let open = all.iter().any(|s| {
                s.get("patternProperties").is_some()
                    || matches!(
                        s.get("additionalProperties"),
                        Some(Value::Bool(true)) | Some(Value::Object(_))
                    )
            });
            let additional = all
                .iter()
                .find_map(|s| s.get("additionalProperties").filter(|a| a.is_object()));
            for (key, member) in map {
                let declared = all
                    .iter()
                    .find_map(|s| s.get("properties").and_then(|p| p.get(key)));
                let len = path.len();
                push_token(path, key);
                match (declared, additional) {
                    (Some(sub), _) | (None, Some(sub)) => {
                        undeclared(doc, sub, member, path, depth + 1, out)
                    }
                    (None, None) if declares && !open => out.push(path.clone()),
                    _ => {}
                }
                path.truncate(len);
                if out.len() >= MAX_VIOLATIONS {
                    return;
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = all.iter().find_map(|s| s.get("items")) else {
                return;
            };
            for (i, item) in items.iter().take(MAX_ELEMENTS).enumerate() {
                let len = path.len();
                push_token(path, &i.to_string());
                undeclared(doc, item_schema, item, path, depth + 1, out);
                path.truncate(len);
                if out.len() >= MAX_VIOLATIONS {
                    return;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::path::split_path;
    use crate::openapi::spec::Lookup;

    const SPEC: &str = r#"
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /users/{id}:
    get:
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/User'}
        '204': {description: nothing}
        4XX:
          description: problem
          content:
            application/problem+json:
              schema: {type: object}
components:
  schemas:
    Base:
      type: object
      required: [id]
      properties:
        id: {type: integer}
    User:
      allOf:
        - $ref: '#/components/schemas/Base'
        - type: object
          required: [name, password]
          properties:
            name: {type: string, nullable: true}
            password: {type: string, writeOnly: true}
            tags: {type: array, items: {type: object, properties: {label: {type: string}}}}
            extra: {type: object, additionalProperties: {type: integer}}
"#;

    fn check(status: u16, ct: Option<&str>, body: &str) -> Vec<(String, String)> {
        let spec = Spec::parse(SPEC, None).unwrap();
        let Lookup::Operation(op, _) = spec.lookup("GET", &split_path("/users/1")) else {
            panic!()
        };
        validate_response(&spec, op, status, ct, Some(body.as_bytes()), true)
            .into_iter()
            .map(|v| (v.field, v.reason))
            .collect()
    }

    #[test]
    fn a_declared_response_passes() {
        let json = Some("application/json");
        assert_eq!(
            check(
                200,
                json,
                r#"{"id":1,"name":null,"tags":[{"label":"a"}],"extra":{"n":1}}"#
            ),
            vec![]
        );
        assert_eq!(
            check(404, Some("application/problem+json"), r#"{"detail":"x"}"#),
            vec![]
        );
        assert_eq!(check(204, None, ""), vec![]);
    }

    #[test]
    fn undeclared_status_type_body_and_fields_are_named() {
        let json = Some("application/json");
        assert_eq!(check(500, json, "{}")[0].0, "response.status");
        assert_eq!(check(204, json, "{}")[0].0, "response.body");
        assert_eq!(
            check(200, Some("text/html"), "<p>")[0].0,
            "response.header:content-type"
        );
        let leak = check(
            200,
            json,
            r#"{"id":1,"name":"a","password_hash":"x","tags":[{"label":"a","internal":true}],"extra":{"n":"x"}}"#,
        );
        let fields: Vec<&str> = leak.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"response.body.password_hash"), "{leak:?}");
        assert!(
            fields.contains(&"response.body.tags[0].internal"),
            "{leak:?}"
        );
        assert!(fields.contains(&"response.body.extra.n"), "{leak:?}");
        assert_eq!(
            check(200, json, r#"{"name":"a"}"#),
            [("response.body.id".to_owned(), "is required".to_owned())]
        );
    }
}
