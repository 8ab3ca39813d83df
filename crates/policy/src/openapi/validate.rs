//! Request validation against one operation: parameters (path, query, header, cookie) with
//! OpenAPI's serialisation rules and string coercion, then the body's content type and
//! schema.

use std::borrow::Cow;

use apiguard_model::RequestView;
use jsonschema::Validator;
use serde_json::Value;

use super::path::percent_decode;
use super::schema::explain;
use super::spec::{
    BodyKind, Media, Operation, Param, ParamIn, Scalar, Shape, Style, media_essence,
};

/// One way a request (or response) differs from the specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// A stable rule id: `openapi.parameter`, `openapi.body`, `openapi.content_type`, ...
    pub rule: &'static str,
    /// The field: `query:limit`, `path:id`, `header:x-request-id`, `body.user.email`.
    pub field: String,
    /// What the specification wants, without the client's value.
    pub reason: String,
    /// The status a refusal answers with: 400, 413 or 415.
    pub status: u16,
}

/// Most violations reported for one message.
pub const MAX_VIOLATIONS: usize = 10;

/// Headers OpenAPI says parameter definitions must not describe.
fn ignored_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("accept")
        || name.eq_ignore_ascii_case("content-type")
        || name.eq_ignore_ascii_case("authorization")
}

/// Validates `request` against `op`. `captures` are the raw path parameter values;
/// `body_limit` is how many body bytes the gateway buffers (a longer body was cut).
pub fn validate_request(
    op: &Operation,
    request: &RequestView<'_>,
    captures: &[(&str, &str)],
    body_limit: usize,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let query: Vec<(Cow<'_, str>, Cow<'_, str>)> = request
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect()
        })
        .unwrap_or_default();
    for param in &op.params {
        if out.len() >= MAX_VIOLATIONS {
            return out;
        }
        if param.location == ParamIn::Header && ignored_header(&param.name) {
            continue;
        }
        let Some(raw) = extract(param, request, captures, &query) else {
            if param.required {
                out.push(Violation {
                    rule: "openapi.parameter",
                    field: field_of(param),
                    reason: "is required".into(),
                    status: 400,
                });
            }
            continue;
        };
        check_param(param, raw, &mut out);
    }
    if out.len() < MAX_VIOLATIONS {
        check_body(op, request, body_limit, &mut out);
    }
    out.truncate(MAX_VIOLATIONS);
    out
}

/// A parameter's text as found in the request.
enum Raw<'a> {
    One(Cow<'a, str>),
    /// Repeated (`?id=1&id=2`).
    Many(Vec<Cow<'a, str>>),
    /// `name[key]=value` pairs (deepObject) or the object's properties (form, exploded).
    Pairs(Vec<(String, Cow<'a, str>)>),
}

fn extract<'a>(
    param: &Param,
    request: &'a RequestView<'_>,
    captures: &[(&str, &'a str)],
    query: &'a [(Cow<'a, str>, Cow<'a, str>)],
) -> Option<Raw<'a>> {
    match param.location {
        ParamIn::Path => {
            let raw = captures.iter().find(|(n, _)| *n == param.name)?.1;
            let decoded = percent_decode(raw, false);
            let value = match param.style {
                Style::Label => match decoded {
                    Cow::Borrowed(s) => Cow::Borrowed(s.strip_prefix('.').unwrap_or(s)),
                    Cow::Owned(s) => Cow::Owned(s.strip_prefix('.').unwrap_or(&s).to_owned()),
                },
                Style::Matrix => {
                    let prefix = format!(";{}=", param.name);
                    Cow::Owned(
                        decoded
                            .strip_prefix(prefix.as_str())
                            .unwrap_or(&decoded)
                            .to_owned(),
                    )
                }
                _ => decoded,
            };
            Some(Raw::One(value))
        }
        ParamIn::Query => {
            if param.style == Style::DeepObject {
                let prefix = format!("{}[", param.name);
                let pairs: Vec<(String, Cow<'a, str>)> = query
                    .iter()
                    .filter_map(|(k, v)| {
                        let key = k.strip_prefix(prefix.as_str())?.strip_suffix(']')?;
                        Some((key.to_owned(), v.clone()))
                    })
                    .collect();
                return (!pairs.is_empty()).then_some(Raw::Pairs(pairs));
            }
            if let (Shape::Object(fields), true) = (&param.shape, param.explode) {
                let pairs: Vec<(String, Cow<'a, str>)> = query
                    .iter()
                    .filter(|(k, _)| fields.iter().any(|(f, _)| f == k))
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                return (!pairs.is_empty()).then_some(Raw::Pairs(pairs));
            }
            let values: Vec<Cow<'a, str>> = query
                .iter()
                .filter(|(k, _)| *k == param.name)
                .map(|(_, v)| v.clone())
                .collect();
            match values.len() {
                0 => None,
                1 => values.into_iter().next().map(Raw::One),
                _ => Some(Raw::Many(values)),
            }
        }
        ParamIn::Header => {
            let values: Vec<&str> = request
                .headers
                .get_all(param.name.as_str())
                .iter()
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
                .collect();
            match values.len() {
                0 => None,
                1 => Some(Raw::One(Cow::Borrowed(values[0].trim()))),
                _ => Some(Raw::One(Cow::Owned(values.join(",")))),
            }
        }
        ParamIn::Cookie => request
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == param.name)
            .map(|(_, v)| Raw::One(percent_decode(v.trim_matches('"'), false))),
    }
}

/// A string as the JSON value the schema's type asks for; text that does not parse stays
/// a string (and fails validation with a type error).
fn coerce(scalar: Scalar, text: &str) -> Value {
    match scalar {
        Scalar::String => Value::String(text.to_owned()),
        Scalar::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Scalar::Number => number(text).unwrap_or_else(|| Value::String(text.to_owned())),
        Scalar::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        Scalar::Any => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => number(text).unwrap_or_else(|| Value::String(text.to_owned())),
        },
    }
}

fn number(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f: f64 = text.parse().ok()?;
    // "inf" and "NaN" parse in Rust but are not JSON numbers.
    serde_json::Number::from_f64(f)
        .filter(|_| {
            text.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        })
        .map(Value::Number)
}

fn delimiter(style: Style) -> char {
    match style {
        Style::SpaceDelimited => ' ',
        Style::PipeDelimited => '|',
        Style::Label => '.',
        _ => ',',
    }
}

fn build(param: &Param, raw: Raw<'_>) -> Value {
    match (&param.shape, raw) {
        (Shape::Array(item), Raw::Many(values)) => {
            Value::Array(values.iter().map(|v| coerce(*item, v)).collect())
        }
        (Shape::Array(item), Raw::One(text)) => {
            if text.is_empty() {
                return Value::Array(Vec::new());
            }
            let split = if param.style == Style::Label && !param.explode {
                ','
            } else {
                delimiter(param.style)
            };
            Value::Array(text.split(split).map(|v| coerce(*item, v)).collect())
        }
        (Shape::Object(fields), Raw::Pairs(pairs)) => {
            let mut map = serde_json::Map::new();
            for (key, value) in pairs {
                let scalar = fields
                    .iter()
                    .find(|(f, _)| *f == key)
                    .map_or(Scalar::Any, |(_, s)| *s);
                map.insert(key, coerce(scalar, &value));
            }
            Value::Object(map)
        }
        (Shape::Object(fields), Raw::One(text)) => {
            // Non-exploded: `k1,v1,k2,v2`.
            let parts: Vec<&str> = text.split(delimiter(param.style)).collect();
            let mut map = serde_json::Map::new();
            for pair in parts.chunks(2) {
                let key = pair[0];
                let value = pair.get(1).copied().unwrap_or("");
                let scalar = fields
                    .iter()
                    .find(|(f, _)| f == key)
                    .map_or(Scalar::Any, |(_, s)| *s);
                map.insert(key.to_owned(), coerce(scalar, value));
            }
            Value::Object(map)
        }
        (Shape::Scalar(scalar), Raw::One(text)) => coerce(*scalar, &text),
        // A scalar sent several times: the first counts, as most servers read it, and the
        // repetition is reported.
        (Shape::Scalar(scalar), Raw::Many(values)) => coerce(*scalar, &values[0]),
        (_, Raw::Pairs(pairs)) => Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v.into_owned())))
                .collect(),
        ),
        (Shape::Object(_), Raw::Many(values)) => Value::String(values.join(",")),
    }
}

/// A parameter's name in violations: `query:limit`, `path:id`. Made only for a violation:
/// valid parameters, the common case, cost no allocation.
fn field_of(param: &Param) -> String {
    format!("{}:{}", param.location.prefix(), param.name)
}

fn check_param(param: &Param, raw: Raw<'_>, out: &mut Vec<Violation>) {
    let repeated = matches!(raw, Raw::Many(_)) && matches!(param.shape, Shape::Scalar(_));
    if repeated {
        out.push(Violation {
            rule: "openapi.parameter",
            field: field_of(param),
            reason: "must be given once".into(),
            status: 400,
        });
        return;
    }
    let value = if param.json_content {
        let text = match &raw {
            Raw::One(t) => t.as_ref(),
            _ => "",
        };
        match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(_) => {
                out.push(Violation {
                    rule: "openapi.parameter",
                    field: field_of(param),
                    reason: "must be JSON".into(),
                    status: 400,
                });
                return;
            }
        }
    } else {
        build(param, raw)
    };
    let Some(validator) = &param.validator else {
        if value.as_str() == Some("") && param.location == ParamIn::Path {
            out.push(Violation {
                rule: "openapi.parameter",
                field: field_of(param),
                reason: "must not be empty".into(),
                status: 400,
            });
        }
        return;
    };
    // A composition without one type: the coerced guess, else the text as a string.
    if param.shape == Shape::Scalar(Scalar::Any)
        && !validator.is_valid(&value)
        && let Value::Number(_) | Value::Bool(_) = value
        && validator.is_valid(&Value::String(value.to_string()))
    {
        return;
    }
    if !validator.is_valid(&value) {
        schema_violations(
            validator,
            &value,
            &field_of(param),
            "openapi.parameter",
            out,
        );
    }
}

/// Adds one violation per schema error of `value`.
pub(crate) fn schema_violations(
    validator: &Validator,
    value: &Value,
    prefix: &str,
    rule: &'static str,
    out: &mut Vec<Violation>,
) {
    // Most requests are valid: `is_valid` stops at nothing and builds no errors, where
    // walking `iter_errors` to its end costs several times as much.
    if validator.is_valid(value) {
        return;
    }
    for error in validator.iter_errors(value) {
        for (field, reason) in explain(prefix, &error) {
            if out.len() >= MAX_VIOLATIONS {
                return;
            }
            out.push(Violation {
                rule,
                field,
                reason,
                status: 400,
            });
        }
    }
}

/// The declared media type that covers `essence`: exact, then `type/*`, then `*/*`.
pub(crate) fn find_media<'m>(media: &'m [Media], essence: &str) -> Option<&'m Media> {
    let kind = essence.split('/').next().unwrap_or("");
    media
        .iter()
        .find(|m| m.range == essence)
        .or_else(|| {
            media.iter().find(|m| {
                m.range
                    .strip_suffix("/*")
                    .is_some_and(|t| t == kind && t != "*")
            })
        })
        .or_else(|| media.iter().find(|m| m.range == "*/*"))
}

fn is_json(essence: &str) -> bool {
    essence == "application/json" || essence.ends_with("+json")
}

fn check_body(
    op: &Operation,
    request: &RequestView<'_>,
    body_limit: usize,
    out: &mut Vec<Violation>,
) {
    let Some(declared) = &op.body else {
        return;
    };
    let declared_length = request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = request.body.filter(|b| !b.is_empty());
    let has_body = body.is_some() || declared_length.is_some_and(|n| n > 0);
    if !has_body {
        if declared.required {
            out.push(Violation {
                rule: "openapi.body_missing",
                field: "body".into(),
                reason: "is required".into(),
                status: 400,
            });
        }
        return;
    }
    if declared.media.is_empty() {
        return;
    }
    let allowed = || {
        declared
            .media
            .iter()
            .map(|m| m.range.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(content_type) = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        out.push(Violation {
            rule: "openapi.content_type",
            field: "header:content-type".into(),
            reason: format!("is required (one of {})", allowed()),
            status: 415,
        });
        return;
    };
    let essence = media_essence(content_type);
    let Some(media) = find_media(&declared.media, &essence) else {
        out.push(Violation {
            rule: "openapi.content_type",
            field: "header:content-type".into(),
            reason: format!("must be one of {}", allowed()),
            status: 415,
        });
        return;
    };
    let Some(validator) = &media.validator else {
        return;
    };
    let kind = match media.kind {
        // `*/*` with a schema: validate JSON as JSON, leave other types alone.
        BodyKind::Json if media.range == "*/*" && !is_json(&essence) => return,
        kind => kind,
    };
    let Some(body) = body else {
        // The body was not buffered: gRPC, or over the route's body limit (refused earlier).
        return;
    };
    if body.len() > body_limit {
        out.push(Violation {
            rule: "openapi.body_too_large",
            field: "body".into(),
            reason: format!("is larger than the {body_limit} bytes that can be validated"),
            status: 413,
        });
        return;
    }
    let value = match kind {
        BodyKind::Json => match serde_json::from_slice::<Value>(body) {
            Ok(value) => value,
            Err(_) => {
                out.push(Violation {
                    rule: "openapi.body",
                    field: "body".into(),
                    reason: "must be valid JSON".into(),
                    status: 400,
                });
                return;
            }
        },
        BodyKind::Form => form_value(media, body),
        BodyKind::Other => return,
    };
    schema_violations(validator, &value, "body", "openapi.body", out);
}

/// An `application/x-www-form-urlencoded` body as an object, each field coerced as its
/// property's schema says.
fn form_value(media: &Media, body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    let mut map = serde_json::Map::new();
    let mut repeated: Vec<(String, Vec<String>)> = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k, true), percent_decode(v, true));
        match repeated.iter_mut().find(|(name, _)| *name == k) {
            Some((_, values)) => values.push(v.into_owned()),
            None => repeated.push((k.into_owned(), vec![v.into_owned()])),
        }
    }
    for (name, values) in repeated {
        let shape = media
            .form_fields
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, s)| s.clone())
            .unwrap_or(Shape::Scalar(Scalar::Any));
        let value = match shape {
            Shape::Array(item) => Value::Array(
                values
                    .iter()
                    .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
                    .map(|v| coerce(item, &v))
                    .collect(),
            ),
            Shape::Scalar(scalar) => coerce(scalar, &values[0]),
            Shape::Object(_) => Value::String(values[0].clone()),
        };
        map.insert(name, value);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::path::split_path;
    use crate::openapi::spec::{Lookup, Spec};
    use apiguard_model::ClientInfo;

    const SPEC: &str = r#"
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /users/{id}:
    get:
      parameters:
        - {name: id, in: path, schema: {type: integer, minimum: 1}}
        - {name: fields, in: query, schema: {type: array, items: {type: string, enum: [name, email]}}, explode: false}
        - {name: tag, in: query, schema: {type: array, items: {type: integer}}}
        - {name: verbose, in: query, schema: {type: boolean}}
        - {name: X-Trace, in: header, required: true, schema: {type: string, pattern: "^[a-f0-9]{8}$"}}
        - {name: session, in: cookie, schema: {type: string, minLength: 4}}
        - {name: filter, in: query, style: deepObject, schema: {type: object, properties: {age: {type: integer}}, additionalProperties: false}}
        - {name: meta, in: query, content: {application/json: {schema: {type: object, required: [a]}}}}
        - {name: either, in: query, schema: {oneOf: [{type: integer}, {type: string, pattern: "^x"}]}}
      responses: {'200': {description: ok}}
  /users:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [name, email]
              additionalProperties: false
              properties:
                name: {type: string}
                email: {type: string, format: email}
                age: {type: integer, minimum: 0}
                id: {type: integer, readOnly: true}
          application/x-www-form-urlencoded:
            schema:
              type: object
              required: [name]
              properties:
                name: {type: string}
                age: {type: integer}
                tags: {type: array, items: {type: integer}}
          image/*: {}
      responses: {'201': {description: created}}
"#;

    struct Req {
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        client: ClientInfo,
        body: Option<bytes::Bytes>,
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: Option<&str>) -> Req {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Req {
            method: method.parse().unwrap(),
            uri: uri.parse().unwrap(),
            headers: map,
            client: ClientInfo {
                peer: "127.0.0.1:1".parse().unwrap(),
                tls: false,
                client_cert_subject: None,
                client_cert_sans: Vec::new(),
            },
            body: body.map(|b| bytes::Bytes::from(b.to_owned())),
        }
    }

    fn check(spec: &Spec, r: &Req) -> Vec<(String, String, u16)> {
        let view = RequestView {
            method: &r.method,
            uri: &r.uri,
            version: http::Version::HTTP_11,
            headers: &r.headers,
            client: &r.client,
            route: "r",
            request_id: "i",
            body: r.body.as_ref(),
        };
        let segments = split_path(view.path());
        let Lookup::Operation(op, captures) = spec.lookup(view.method.as_str(), &segments) else {
            panic!("no operation for {}", view.uri);
        };
        validate_request(op, &view, &captures, 1024)
            .into_iter()
            .map(|v| (v.field, v.reason, v.status))
            .collect()
    }

    fn fields(v: &[(String, String, u16)]) -> Vec<&str> {
        v.iter().map(|(f, _, _)| f.as_str()).collect()
    }

    #[test]
    fn valid_parameters_pass() {
        let spec = Spec::parse(SPEC, None).unwrap();
        let ok = req(
            "GET",
            "/users/7?fields=name,email&tag=1&tag=2&verbose=true&filter[age]=30&meta=%7B%22a%22%3A1%7D&either=x1",
            &[("x-trace", "deadbeef"), ("cookie", "a=b; session=abcdef")],
            None,
        );
        assert_eq!(check(&spec, &ok), vec![]);
        let either = req(
            "GET",
            "/users/7?either=12",
            &[("x-trace", "deadbeef")],
            None,
        );
        assert_eq!(check(&spec, &either), vec![]);
    }

    #[test]
    fn each_parameter_kind_names_its_failure() {
        let spec = Spec::parse(SPEC, None).unwrap();
        let bad = req(
            "GET",
            "/users/abc?fields=name,phone&tag=1&tag=x&verbose=yes&filter[age]=old&filter[zip]=1&meta=nope&either=y",
            &[("cookie", "session=ab")],
            None,
        );
        let v = check(&spec, &bad);
        assert_eq!(
            fields(&v),
            [
                "path:id",
                "query:fields[1]",
                "query:tag[1]",
                "query:verbose",
                "header:X-Trace",
                "cookie:session",
                "query:filter.age",
                "query:filter.zip",
                "query:meta",
                "query:either",
            ],
            "{v:?}"
        );
        assert_eq!(v[0].1, "must be of type integer");
        assert_eq!(v[1].1, "must be one of \"name\", \"email\"");
        assert_eq!(v[4].1, "is required");
        assert_eq!(v[5].1, "must be at least 4 characters long");
        assert_eq!(v[7].1, "is not a declared property");
        assert!(
            v.iter()
                .all(|(_, reason, status)| *status == 400 && !reason.contains("abc"))
        );
        let zero = req("GET", "/users/0", &[("x-trace", "deadbeef")], None);
        assert_eq!(check(&spec, &zero)[0].1, "must be at least 1");
        let twice = req(
            "GET",
            "/users/1?verbose=true&verbose=false",
            &[("x-trace", "deadbeef")],
            None,
        );
        assert_eq!(check(&spec, &twice)[0].1, "must be given once");
    }

    #[test]
    fn bodies_are_checked_for_presence_type_and_schema() {
        let spec = Spec::parse(SPEC, None).unwrap();
        let json = [("content-type", "application/json; charset=utf-8")];
        let ok = req(
            "POST",
            "/users",
            &json,
            Some(r#"{"name":"a","email":"a@example.com"}"#),
        );
        assert_eq!(check(&spec, &ok), vec![]);
        let v = check(
            &spec,
            &req(
                "POST",
                "/users",
                &json,
                Some(r#"{"name":1,"age":-1,"id":5,"x":1}"#),
            ),
        );
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(
            v.iter()
                .any(|(f, r, _)| f == "body.email" && r == "is required"),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|(f, r, _)| f == "body.name" && r == "must be of type string"),
            "{v:?}"
        );
        assert!(v.iter().any(|(f, _, _)| f == "body.age"), "{v:?}");
        assert!(
            v.iter()
                .any(|(f, r, _)| f == "body.x" && r == "is not a declared property"),
            "{v:?}"
        );
        assert_eq!(
            check(
                &spec,
                &req(
                    "POST",
                    "/users",
                    &json,
                    Some(r#"{"name":"a","email":"nope"}"#)
                )
            ),
            [(
                "body.email".to_owned(),
                "must be a valid email".to_owned(),
                400
            )]
        );
        assert_eq!(
            check(&spec, &req("POST", "/users", &json, Some("{oops"))),
            [("body".to_owned(), "must be valid JSON".to_owned(), 400)]
        );
        assert_eq!(
            check(&spec, &req("POST", "/users", &json, None)),
            [("body".to_owned(), "is required".to_owned(), 400)]
        );
        let v = check(
            &spec,
            &req(
                "POST",
                "/users",
                &[("content-type", "text/plain")],
                Some("hi"),
            ),
        );
        assert_eq!(v[0].0, "header:content-type");
        assert_eq!(v[0].2, 415);
        assert!(v[0].1.contains("application/json"), "{v:?}");
        assert_eq!(
            check(
                &spec,
                &req(
                    "POST",
                    "/users",
                    &[("content-type", "image/png")],
                    Some("\u{1}")
                )
            ),
            vec![]
        );
        let form = [("content-type", "application/x-www-form-urlencoded")];
        assert_eq!(
            check(
                &spec,
                &req("POST", "/users", &form, Some("name=a+b&age=3&tags=1,2"))
            ),
            vec![]
        );
        let v = check(
            &spec,
            &req("POST", "/users", &form, Some("age=old&tags=1,x")),
        );
        assert_eq!(fields(&v).len(), 3, "{v:?}");
        let big = "x".repeat(2000);
        let v = check(&spec, &req("POST", "/users", &json, Some(&big)));
        assert_eq!(v[0].2, 413);
    }

    #[test]
    fn coercion() {
        assert_eq!(coerce(Scalar::Integer, "-3"), Value::from(-3));
        assert_eq!(coerce(Scalar::Integer, "3.0"), Value::from("3.0"));
        assert_eq!(coerce(Scalar::Number, "2.5e3"), serde_json::json!(2500.0));
        assert_eq!(coerce(Scalar::Number, "inf"), Value::from("inf"));
        assert_eq!(coerce(Scalar::Boolean, "True"), Value::from("True"));
        assert_eq!(coerce(Scalar::Any, "false"), Value::Bool(false));
    }
}
