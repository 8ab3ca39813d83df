//! Loading an OpenAPI 3.0 or 3.1 document (YAML or JSON) and compiling it: path templates,
//! operations, parameters with their JSON Schemas, request bodies and responses.
//!
//! The document is walked as a `serde_json::Value` rather than through a typed OpenAPI model:
//! the typed crates cover one of the two versions each (`openapiv3` 3.0, `oas3` 3.1), and the
//! schemas have to end up as JSON for the validator anyway.

use std::collections::HashMap;
use std::fmt;

use jsonschema::{Registry, Validator};
use serde_json::Value;

use super::path::PathTemplate;
use super::schema::{self, Direction, OpenApiVersion, pointer_token};

/// Largest specification file accepted.
pub const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;
/// Most `$ref` hops followed for one reference (parameters, bodies, responses, path items).
const MAX_REF_HOPS: usize = 32;

const REQUEST_URI: &str = "urn:apiguard:openapi:request";
const RESPONSE_URI: &str = "urn:apiguard:openapi:response";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A problem with a specification file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// 1-based line and column of a syntax error.
    pub position: Option<(u64, u64)>,
    /// Where in the document (a JSON pointer such as `/paths/~1users/get/parameters/0`).
    pub pointer: Option<String>,
    pub message: String,
}

impl SpecError {
    fn at(pointer: &str, message: impl Into<String>) -> Self {
        SpecError {
            position: None,
            pointer: Some(pointer.to_owned()),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.position {
            write!(f, "{line}:{column}: ")?;
        }
        if let Some(pointer) = &self.pointer {
            write!(f, "at #{pointer}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
    Header,
    Cookie,
}

impl ParamIn {
    pub fn prefix(self) -> &'static str {
        match self {
            ParamIn::Path => "path",
            ParamIn::Query => "query",
            ParamIn::Header => "header",
            ParamIn::Cookie => "cookie",
        }
    }
}

/// How a parameter is serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Simple,
    Form,
    Label,
    Matrix,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

/// The JSON type a string is coerced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
    /// No single type (compositions): numbers and booleans are tried before strings.
    Any,
}

/// The shape of a parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Scalar(Scalar),
    Array(Scalar),
    Object(Vec<(String, Scalar)>),
}

/// One compiled parameter.
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub location: ParamIn,
    pub required: bool,
    pub style: Style,
    pub explode: bool,
    pub shape: Shape,
    /// Declared with `content: {application/json: ...}`: the value is JSON text.
    pub json_content: bool,
    pub validator: Option<Validator>,
}

/// How a request or response body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    /// Only the content type is checked.
    Other,
}

/// One media type of a body.
#[derive(Debug)]
pub struct Media {
    /// The media range as declared, lower case without parameters: `application/json`,
    /// `image/*`, `*/*`.
    pub range: String,
    pub kind: BodyKind,
    pub validator: Option<Validator>,
    /// For form bodies: how each property's text is coerced.
    pub form_fields: Vec<(String, Shape)>,
    /// The schema's pointer in the response document (undeclared-field checks).
    pub schema_pointer: Option<String>,
}

/// A request body declaration.
#[derive(Debug)]
pub struct RequestBody {
    pub required: bool,
    pub media: Vec<Media>,
}

/// Which statuses a response declaration covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKey {
    Exact(u16),
    /// `2XX`: the hundreds digit.
    Range(u16),
    Default,
}

/// A response declaration.
#[derive(Debug)]
pub struct ResponseSpec {
    pub status: StatusKey,
    pub media: Vec<Media>,
}

/// One operation (method + path).
#[derive(Debug)]
pub struct Operation {
    /// Upper-case method.
    pub method: String,
    pub template: PathTemplate,
    pub params: Vec<Param>,
    pub body: Option<RequestBody>,
    pub responses: Vec<ResponseSpec>,
}

impl Operation {
    /// `GET /users/{id}`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.template.text)
    }

    /// The response declaration for `status`: exact, then range, then default.
    pub fn response(&self, status: u16) -> Option<&ResponseSpec> {
        self.responses
            .iter()
            .find(|r| r.status == StatusKey::Exact(status))
            .or_else(|| {
                self.responses
                    .iter()
                    .find(|r| r.status == StatusKey::Range(status / 100))
            })
            .or_else(|| {
                self.responses
                    .iter()
                    .find(|r| r.status == StatusKey::Default)
            })
    }
}

/// A path and its operations.
#[derive(Debug)]
pub struct PathItem {
    pub template: PathTemplate,
    /// (method, index into `operations`).
    pub operations: Vec<(String, usize)>,
}

/// A compiled specification.
#[derive(Debug)]
pub struct Spec {
    pub version: OpenApiVersion,
    /// The path prefix the spec's paths are under (`/v1`), or "".
    pub base_path: String,
    pub title: String,
    pub operations: Vec<Operation>,
    pub paths: Vec<PathItem>,
    /// Path item indices by segment count, most specific first.
    by_len: HashMap<usize, Vec<usize>>,
    /// The document as rewritten for responses (undeclared-field checks walk it).
    pub(crate) response_doc: Value,
}

/// What a request path and method are in the specification.
pub enum Lookup<'s, 'p> {
    Operation(&'s Operation, Vec<(&'s str, &'p str)>),
    /// The path is declared, not with this method.
    MethodNotAllowed(&'s PathItem),
    NotFound,
}

impl Spec {
    /// Reads and compiles a specification file. `base_path` replaces the one taken from the
    /// first `servers` URL.
    pub fn load(path: &str, base_path: Option<&str>) -> Result<Spec, SpecError> {
        let general = |message: String| SpecError {
            position: None,
            pointer: None,
            message,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| general(format!("cannot read the file: {e}")))?
            .len();
        if size > MAX_SPEC_BYTES {
            return Err(general(format!(
                "the file is {size} bytes; the limit is {MAX_SPEC_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| general(format!("cannot read the file: {e}")))?;
        Spec::parse(&text, base_path)
    }

    /// Compiles a specification from its text (YAML or JSON).
    pub fn parse(text: &str, base_path: Option<&str>) -> Result<Spec, SpecError> {
        let doc = parse_document(text)?;
        Spec::compile(doc, base_path)
    }

    /// Compiles a parsed document.
    pub fn compile(doc: Value, base_path: Option<&str>) -> Result<Spec, SpecError> {
        if doc.get("swagger").is_some() {
            return Err(SpecError::at(
                "/swagger",
                "Swagger 2.0 is not supported: convert it to OpenAPI 3",
            ));
        }
        let version = match doc.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") || v == "3.0" => OpenApiVersion::V30,
            Some(v) if v.starts_with("3.1.") || v == "3.1" => OpenApiVersion::V31,
            Some(v) => {
                return Err(SpecError::at(
                    "/openapi",
                    format!("OpenAPI `{v}` is not supported (3.0.x and 3.1.x are)"),
                ));
            }
            None => {
                return Err(SpecError::at(
                    "",
                    "not an OpenAPI document: the `openapi` version field is missing",
                ));
            }
        };
        let base_path = match base_path {
            Some(b) => b.trim_end_matches('/').to_owned(),
            None => server_base_path(&doc),
        };
        if !base_path.is_empty() && !base_path.starts_with('/') {
            return Err(SpecError::at(
                "/servers",
                format!("the base path `{base_path}` must start with `/`"),
            ));
        }
        let title = doc["info"]["title"].as_str().unwrap_or("").to_owned();
        let mut request_doc = doc.clone();
        schema::rewrite(&mut request_doc, version, Direction::Request)
            .map_err(|m| SpecError::at("", m))?;
        let mut response_doc = doc;
        schema::rewrite(&mut response_doc, version, Direction::Response)
            .map_err(|m| SpecError::at("", m))?;
        let draft = version.draft();
        let request_registry = Registry::new()
            .draft(draft)
            .add(REQUEST_URI, request_doc.clone())
            .and_then(|b| b.prepare())
            .map_err(|e| SpecError::at("", format!("cannot index the document: {e}")))?;
        let response_registry = Registry::new()
            .draft(draft)
            .add(RESPONSE_URI, response_doc.clone())
            .and_then(|b| b.prepare())
            .map_err(|e| SpecError::at("", format!("cannot index the document: {e}")))?;
        let mut compiler = Compiler {
            version,
            request: &request_doc,
            request_registry: &request_registry,
            response: &response_doc,
            response_registry: &response_registry,
        };
        let (operations, paths) = compiler.operations()?;
        let mut by_len: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, item) in paths.iter().enumerate() {
            by_len.entry(item.template.len()).or_default().push(i);
        }
        for list in by_len.values_mut() {
            // Stable: file order breaks ties.
            list.sort_by_key(|i| std::cmp::Reverse(paths[*i].template.specificity()));
        }
        drop(request_registry);
        drop(response_registry);
        Ok(Spec {
            version,
            base_path,
            title,
            operations,
            paths,
            by_len,
            response_doc,
        })
    }

    /// Whether any operation has a body schema (then the body is buffered for validation).
    pub fn validates_bodies(&self) -> bool {
        self.operations.iter().any(|op| {
            op.body.as_ref().is_some_and(|b| {
                b.media
                    .iter()
                    .any(|m| m.kind != BodyKind::Other && m.validator.is_some())
            })
        })
    }

    /// Finds the operation for `method` on `path` (already without the base path).
    pub fn lookup<'s, 'p>(&'s self, method: &str, segments: &[&'p str]) -> Lookup<'s, 'p> {
        let Some(candidates) = self.by_len.get(&segments.len()) else {
            return Lookup::NotFound;
        };
        let mut path_match = None;
        for &i in candidates {
            let item = &self.paths[i];
            let Some(captures) = item.template.matches(segments) else {
                continue;
            };
            let op = item
                .operations
                .iter()
                .find(|(m, _)| m == method)
                .or_else(|| {
                    // HEAD is GET without the body.
                    (method == "HEAD")
                        .then(|| item.operations.iter().find(|(m, _)| m == "GET"))
                        .flatten()
                });
            if let Some((_, op)) = op {
                return Lookup::Operation(&self.operations[*op], captures);
            }
            path_match.get_or_insert(item);
        }
        match path_match {
            Some(item) => Lookup::MethodNotAllowed(item),
            None => Lookup::NotFound,
        }
    }

    /// The path relative to the base path, or None when it is outside it.
    pub fn relative<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.base_path.is_empty() {
            return Some(path);
        }
        let rest = path.strip_prefix(self.base_path.as_str())?;
        if rest.is_empty() {
            Some("/")
        } else if rest.starts_with('/') {
            Some(rest)
        } else {
            None
        }
    }
}

/// Parses YAML or JSON text into a JSON value.
pub fn parse_document(text: &str) -> Result<Value, SpecError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| SpecError {
            position: Some((e.line() as u64, e.column() as u64)),
            pointer: None,
            message: format!("invalid JSON: {e}"),
        });
    }
    let yaml: YamlValue = serde_saphyr::from_str(text).map_err(|e| {
        let position = e
            .location()
            .map(|l| (l.line(), l.column()))
            .filter(|(line, _)| *line > 0);
        let rendered = e.to_string();
        SpecError {
            position,
            pointer: None,
            message: format!(
                "invalid YAML: {}",
                rendered.lines().next().unwrap_or("syntax error").trim()
            ),
        }
    })?;
    Ok(yaml.0)
}

/// A YAML value as JSON: mapping keys that YAML reads as numbers or booleans (`200:` under
/// `responses`) become strings, as OpenAPI means them.
struct YamlValue(Value);

impl<'de> serde::Deserialize<'de> for YamlValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor).map(YamlValue)
    }
}

struct YamlKey(String);

impl<'de> serde::Deserialize<'de> for YamlKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = deserializer.deserialize_any(YamlVisitor)?;
        match value {
            Value::String(s) => Ok(YamlKey(s)),
            Value::Number(n) => Ok(YamlKey(n.to_string())),
            Value::Bool(b) => Ok(YamlKey(b.to_string())),
            Value::Null => Ok(YamlKey("null".into())),
            _ => Err(serde::de::Error::custom(
                "a mapping key must be a scalar in an OpenAPI document",
            )),
        }
    }
}

struct YamlVisitor;

impl<'de> serde::de::Visitor<'de> for YamlVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(YamlValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((YamlKey(key), YamlValue(value))) = map.next_entry()? {
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The path of the first server URL (`https://api.example.com/v1` → `/v1`), with variables
/// replaced by their defaults; "" when there is none.
fn server_base_path(doc: &Value) -> String {
    let Some(server) = doc["servers"].as_array().and_then(|s| s.first()) else {
        return String::new();
    };
    let Some(url) = server["url"].as_str() else {
        return String::new();
    };
    let mut url = url.to_owned();
    if let Some(vars) = server["variables"].as_object() {
        for (name, var) in vars {
            if let Some(default) = var["default"].as_str() {
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
    }
    let path = match url.find("://") {
        Some(scheme_end) => {
            let after = &url[scheme_end + 3..];
            after.find('/').map_or("", |i| &after[i..])
        }
        None if url.starts_with("//") => url[2..].find('/').map_or("", |i| &url[2 + i..]),
        None => url.as_str(),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.contains('{') {
        return String::new();
    }
    path.trim_end_matches('/').to_owned()
}

/// The lower-case media type without parameters.
pub fn media_essence(text: &str) -> String {
    text.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn body_kind(range: &str) -> BodyKind {
    if range == "application/json" || range.ends_with("+json") || range == "*/*" {
        // `*/*` with a schema is read as JSON when the request says JSON (see validate).
        BodyKind::Json
    } else if range == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

struct Compiler<'d> {
    version: OpenApiVersion,
    request: &'d Value,
    request_registry: &'d Registry<'d>,
    response: &'d Value,
    response_registry: &'d Registry<'d>,
}

/// Follows `$ref`s from `value` (at `pointer`) to the referenced object within `doc`.
fn deref<'d>(
    doc: &'d Value,
    mut value: &'d Value,
    mut pointer: String,
) -> Result<(&'d Value, String), SpecError> {
    for _ in 0..MAX_REF_HOPS {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return Ok((value, pointer));
        };
        let Some(target) = reference.strip_prefix('#') else {
            return Err(SpecError::at(
                &pointer,
                format!("`$ref: {reference}` points outside the document, which is not supported"),
            ));
        };
        let decoded = super::path::percent_decode(target, false);
        value = doc.pointer(&decoded).ok_or_else(|| {
            SpecError::at(&pointer, format!("`$ref: {reference}` points to nothing"))
        })?;
        pointer = decoded.into_owned();
    }
    Err(SpecError::at(
        &pointer,
        format!("more than {MAX_REF_HOPS} `$ref` hops (a reference cycle?)"),
    ))
}

impl Compiler<'_> {
    fn operations(&mut self) -> Result<(Vec<Operation>, Vec<PathItem>), SpecError> {
        let mut operations = Vec::new();
        let mut items = Vec::new();
        let Some(paths) = self.request.get("paths") else {
            return Ok((operations, items));
        };
        let paths = paths
            .as_object()
            .ok_or_else(|| SpecError::at("/paths", "`paths` must be an object"))?;
        for (path, item) in paths {
            if path.starts_with("x-") {
                continue;
            }
            let item_pointer = format!("/paths/{}", pointer_token(path));
            let template =
                PathTemplate::parse(path).map_err(|m| SpecError::at(&item_pointer, m))?;
            let (item, item_pointer) = deref(self.request, item, item_pointer)?;
            let shared = item.get("parameters");
            let mut methods = Vec::new();
            for method in METHODS {
                let Some(op) = item.get(method) else {
                    continue;
                };
                let op_pointer = format!("{item_pointer}/{method}");
                let operation =
                    self.operation(method, &template, op, &op_pointer, shared, &item_pointer)?;
                methods.push((method.to_ascii_uppercase(), operations.len()));
                operations.push(operation);
            }
            let names = template.param_names();
            for (_, op) in &methods {
                for name in &names {
                    let declared = operations[*op]
                        .params
                        .iter()
                        .any(|p| p.location == ParamIn::Path && p.name == *name);
                    if !declared {
                        // OpenAPI requires it; validate it as a non-empty string.
                        operations[*op].params.push(Param {
                            name: (*name).to_owned(),
                            location: ParamIn::Path,
                            required: true,
                            style: Style::Simple,
                            explode: false,
                            shape: Shape::Scalar(Scalar::String),
                            json_content: false,
                            validator: None,
                        });
                    }
                }
            }
            items.push(PathItem {
                template,
                operations: methods,
            });
        }
        Ok((operations, items))
    }

    fn operation(
        &self,
        method: &str,
        template: &PathTemplate,
        op: &Value,
        pointer: &str,
        shared: Option<&Value>,
        item_pointer: &str,
    ) -> Result<Operation, SpecError> {
        let mut params: Vec<Param> = Vec::new();
        // Operation parameters first: they override path-level ones with the same name+in.
        let lists = [
            (op.get("parameters"), format!("{pointer}/parameters")),
            (shared, format!("{item_pointer}/parameters")),
        ];
        for (list, list_pointer) in lists {
            let Some(list) = list else { continue };
            let list = list
                .as_array()
                .ok_or_else(|| SpecError::at(&list_pointer, "`parameters` must be a list"))?;
            for (i, param) in list.iter().enumerate() {
                let param = self.param(param, format!("{list_pointer}/{i}"))?;
                if !params
                    .iter()
                    .any(|p| p.name == param.name && p.location == param.location)
                {
                    params.push(param);
                }
            }
        }
        let body = match op.get("requestBody") {
            Some(body) => Some(self.request_body(body, format!("{pointer}/requestBody"))?),
            None => None,
        };
        let mut responses = Vec::new();
        if let Some(map) = op.get("responses").and_then(Value::as_object) {
            for (key, response) in map {
                if key.starts_with("x-") {
                    continue;
                }
                let rp = format!("{pointer}/responses/{}", pointer_token(key));
                let status = parse_status(key).ok_or_else(|| {
                    SpecError::at(
                        &rp,
                        format!("`{key}` is not a status code, a range such as 2XX, or default"),
                    )
                })?;
                let (response, rp) = deref(
                    self.response,
                    self.response.pointer(&rp).unwrap_or(response),
                    rp,
                )?;
                let media = match response.get("content").and_then(Value::as_object) {
                    Some(content) => self.media_list(content, &format!("{rp}/content"), false)?,
                    None => Vec::new(),
                };
                responses.push(ResponseSpec { status, media });
            }
        }
        Ok(Operation {
            method: method.to_ascii_uppercase(),
            template: template.clone(),
            params,
            body,
            responses,
        })
    }

    fn param(&self, param: &Value, pointer: String) -> Result<Param, SpecError> {
        let (param, pointer) = deref(self.request, param, pointer)?;
        let name = param
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| SpecError::at(&pointer, "a parameter needs a `name`"))?
            .to_owned();
        let location = match param.get("in").and_then(Value::as_str) {
            Some("path") => ParamIn::Path,
            Some("query") => ParamIn::Query,
            Some("header") => ParamIn::Header,
            Some("cookie") => ParamIn::Cookie,
            other => {
                return Err(SpecError::at(
                    &pointer,
                    format!(
                        "parameter `{name}`: `in` must be path, query, header or cookie, not {other:?}"
                    ),
                ));
            }
        };
        let required =
            location == ParamIn::Path || param.get("required") == Some(&Value::Bool(true));
        let style = match param.get("style").and_then(Value::as_str) {
            None => match location {
                ParamIn::Query | ParamIn::Cookie => Style::Form,
                ParamIn::Path | ParamIn::Header => Style::Simple,
            },
            Some("simple") => Style::Simple,
            Some("form") => Style::Form,
            Some("label") => Style::Label,
            Some("matrix") => Style::Matrix,
            Some("spaceDelimited") => Style::SpaceDelimited,
            Some("pipeDelimited") => Style::PipeDelimited,
            Some("deepObject") => Style::DeepObject,
            Some(other) => {
                return Err(SpecError::at(
                    &pointer,
                    format!("parameter `{name}`: unknown style `{other}`"),
                ));
            }
        };
        let explode = param
            .get("explode")
            .and_then(Value::as_bool)
            .unwrap_or(style == Style::Form);
        let (schema_pointer, json_content) = if param.get("schema").is_some() {
            (Some(format!("{pointer}/schema")), false)
        } else if let Some(content) = param.get("content").and_then(Value::as_object) {
            match content.iter().next() {
                Some((media, m)) if m.get("schema").is_some() => (
                    Some(format!("{pointer}/content/{}/schema", pointer_token(media))),
                    body_kind(&media_essence(media)) == BodyKind::Json,
                ),
                _ => (None, false),
            }
        } else {
            (None, false)
        };
        let (shape, validator) = match &schema_pointer {
            Some(sp) => (
                self.shape(sp)?,
                Some(
                    schema::compile(self.request_registry, REQUEST_URI, sp, self.version.draft())
                        .map_err(|m| SpecError::at(sp, m))?,
                ),
            ),
            None => (Shape::Scalar(Scalar::String), None),
        };
        Ok(Param {
            name,
            location,
            required,
            style,
            explode,
            shape: if json_content {
                Shape::Scalar(Scalar::String)
            } else {
                shape
            },
            json_content,
            validator,
        })
    }

    fn request_body(&self, body: &Value, pointer: String) -> Result<RequestBody, SpecError> {
        let (body, pointer) = deref(self.request, body, pointer)?;
        let required = body.get("required") == Some(&Value::Bool(true));
        let media = match body.get("content").and_then(Value::as_object) {
            Some(content) => self.media_list(content, &format!("{pointer}/content"), true)?,
            None => Vec::new(),
        };
        Ok(RequestBody { required, media })
    }

    fn media_list(
        &self,
        content: &serde_json::Map<String, Value>,
        pointer: &str,
        request: bool,
    ) -> Result<Vec<Media>, SpecError> {
        let mut list = Vec::new();
        for (range, media) in content {
            let range_essence = media_essence(range);
            let kind = body_kind(&range_essence);
            let schema_pointer = format!("{pointer}/{}/schema", pointer_token(range));
            let has_schema = media.get("schema").is_some();
            let (registry, uri) = if request {
                (self.request_registry, REQUEST_URI)
            } else {
                (self.response_registry, RESPONSE_URI)
            };
            let validator = if has_schema && kind != BodyKind::Other {
                Some(
                    schema::compile(registry, uri, &schema_pointer, self.version.draft())
                        .map_err(|m| SpecError::at(&schema_pointer, m))?,
                )
            } else {
                None
            };
            let form_fields = if kind == BodyKind::Form && has_schema {
                self.form_fields(&schema_pointer)?
            } else {
                Vec::new()
            };
            list.push(Media {
                range: range_essence,
                kind,
                validator,
                form_fields,
                schema_pointer: (has_schema && !request).then_some(schema_pointer),
            });
        }
        Ok(list)
    }

    /// The schema at `pointer` of the request document, with `$ref`s followed.
    fn schema_at(&self, pointer: &str) -> Result<(&Value, String), SpecError> {
        let value = self
            .request
            .pointer(pointer)
            .ok_or_else(|| SpecError::at(pointer, "no schema here"))?;
        deref(self.request, value, pointer.to_owned())
    }

    fn scalar(&self, schema: &Value) -> Scalar {
        let kind = match schema.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null"),
            _ => None,
        };
        match kind {
            Some("integer") => Scalar::Integer,
            Some("number") => Scalar::Number,
            Some("boolean") => Scalar::Boolean,
            Some("string") => Scalar::String,
            _ if schema.get("enum").is_some_and(|e| {
                e.as_array()
                    .is_some_and(|l| l.iter().all(|v| v.is_string() || v.is_null()))
            }) =>
            {
                Scalar::String
            }
            _ => Scalar::Any,
        }
    }

    fn kind_of(schema: &Value) -> Option<&str> {
        match schema.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null"),
            _ => None,
        }
    }

    fn shape(&self, pointer: &str) -> Result<Shape, SpecError> {
        let (schema, at) = self.schema_at(pointer)?;
        Ok(match Self::kind_of(schema) {
            Some("array") => {
                let items = match schema.get("items") {
                    Some(items) => {
                        let (items, _) = deref(self.request, items, format!("{at}/items"))?;
                        self.scalar(items)
                    }
                    None => Scalar::Any,
                };
                Shape::Array(items)
            }
            Some("object") => {
                let mut fields = Vec::new();
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (name, prop) in props {
                        let (prop, _) = deref(
                            self.request,
                            prop,
                            format!("{at}/properties/{}", pointer_token(name)),
                        )?;
                        fields.push((name.clone(), self.scalar(prop)));
                    }
                }
                Shape::Object(fields)
            }
            _ => Shape::Scalar(self.scalar(schema)),
        })
    }

    fn form_fields(&self, pointer: &str) -> Result<Vec<(String, Shape)>, SpecError> {
        let (schema, at) = self.schema_at(pointer)?;
        let mut fields = Vec::new();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for name in props.keys() {
                let field_pointer = format!("{at}/properties/{}", pointer_token(name));
                fields.push((name.clone(), self.shape(&field_pointer)?));
            }
        }
        Ok(fields)
    }
}

fn parse_status(key: &str) -> Option<StatusKey> {
    if key == "default" {
        return Some(StatusKey::Default);
    }
    let bytes = key.as_bytes();
    if bytes.len() != 3 || !(b'1'..=b'5').contains(&bytes[0]) {
        return None;
    }
    if bytes[1..].eq_ignore_ascii_case(b"XX") {
        return Some(StatusKey::Range(u16::from(bytes[0] - b'0')));
    }
    key.parse().ok().map(StatusKey::Exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETS: &str = r#"
openapi: 3.0.3
info: {title: Pets, version: "1"}
servers:
  - url: https://{host}/api/{version}
    variables:
      host: {default: example.com}
      version: {default: v1}
paths:
  /pets/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: integer}}
    get:
      parameters:
        - {name: verbose, in: query, schema: {type: boolean}}
      responses:
        200:
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Pet'}
        4XX: {description: client error}
    delete:
      responses: {default: {description: gone}}
  /pets/mine:
    get:
      responses: {'200': {description: ok}}
components:
  schemas:
    Pet:
      type: object
      properties:
        id: {type: integer}
"#;

    #[test]
    fn a_yaml_spec_compiles_with_base_path_refs_and_numeric_keys() {
        let spec = Spec::parse(PETS, None).unwrap();
        assert_eq!(spec.base_path, "/api/v1");
        assert_eq!(spec.title, "Pets");
        assert_eq!(spec.relative("/api/v1/pets/1"), Some("/pets/1"));
        assert_eq!(spec.relative("/api/v10/pets"), None);
        let segs = super::super::path::split_path("/pets/mine");
        match spec.lookup("GET", &segs) {
            Lookup::Operation(op, captures) => {
                assert_eq!(op.template.text, "/pets/mine", "the concrete path wins");
                assert!(captures.is_empty());
            }
            _ => panic!("not found"),
        }
        let segs = super::super::path::split_path("/pets/7");
        match spec.lookup("GET", &segs) {
            Lookup::Operation(op, captures) => {
                assert_eq!(op.describe(), "GET /pets/{id}");
                assert_eq!(captures, [("id", "7")]);
                assert_eq!(op.params.len(), 2, "path-level parameters are inherited");
                assert!(matches!(
                    op.response(200).unwrap().status,
                    StatusKey::Exact(200)
                ));
                assert!(matches!(
                    op.response(404).unwrap().status,
                    StatusKey::Range(4)
                ));
                assert!(op.response(500).is_none());
            }
            _ => panic!("not found"),
        }
        assert!(matches!(spec.lookup("HEAD", &segs), Lookup::Operation(..)));
        assert!(matches!(
            spec.lookup("PUT", &segs),
            Lookup::MethodNotAllowed(_)
        ));
        assert!(matches!(spec.lookup("GET", &["nope"]), Lookup::NotFound));
    }

    #[test]
    fn broken_specs_say_where() {
        let err = Spec::parse("swagger: '2.0'\n", None).unwrap_err();
        assert!(err.message.contains("Swagger 2.0"), "{err}");
        let err = Spec::parse("openapi: 3.0.0\npaths:\n  /a:\n    get:\n      parameters:\n        - $ref: '#/components/parameters/Nope'\n", None).unwrap_err();
        assert_eq!(
            err.pointer.as_deref(),
            Some("/paths/~1a/get/parameters/0"),
            "{err}"
        );
        assert!(err.message.contains("points to nothing"), "{err}");
        let err = Spec::parse("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      requestBody:\n        content:\n          application/json:\n            schema: {$ref: 'other.yaml#/X'}\n", None).unwrap_err();
        assert!(
            err.to_string()
                .contains("/requestBody/content/application~1json/schema"),
            "{err}"
        );
        let err = Spec::parse("openapi: 3.0.0\npaths: [\n", None).unwrap_err();
        assert!(err.position.is_some(), "{err}");
        let err = Spec::parse("{\"openapi\": \"3.0.0\",}", None).unwrap_err();
        assert_eq!(err.position, Some((1, 21)), "{err}");
        let err = Spec::parse("openapi: 2.9.0\n", None).unwrap_err();
        assert!(err.message.contains("not supported"), "{err}");
    }

    #[test]
    fn a_ref_cycle_is_refused() {
        let doc = r##"{"openapi":"3.0.0","paths":{"/a":{"get":{"parameters":[{"$ref":"#/components/parameters/A"}]}}},
            "components":{"parameters":{"A":{"$ref":"#/components/parameters/B"},"B":{"$ref":"#/components/parameters/A"}}}}"##;
        let err = Spec::parse(doc, None).unwrap_err();
        assert!(err.message.contains("hops"), "{err}");
    }

    #[test]
    fn server_paths() {
        for (url, expected) in [
            ("https://api.example.com/v1/", "/v1"),
            ("https://api.example.com", ""),
            ("/v2", "/v2"),
            ("//cdn.example.com/x", "/x"),
            ("https://{region}.example.com/{ver}", ""),
        ] {
            let doc = serde_json::json!({"servers": [{"url": url}]});
            assert_eq!(server_base_path(&doc), expected, "{url}");
        }
        assert_eq!(parse_status("2XX"), Some(StatusKey::Range(2)));
        assert_eq!(parse_status("204"), Some(StatusKey::Exact(204)));
        assert_eq!(parse_status("20"), None);
        assert_eq!(parse_status("6XX"), None);
    }
}
