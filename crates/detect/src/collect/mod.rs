//! Target collection: a request broken into named values, with the body parsed by its content
//! type. Every parser is bounded; reaching a bound or meeting a malformed body is reported as an
//! [`Anomaly`] rather than silently skipping data.

pub mod cookie;
pub mod graphql;
pub mod json;
pub mod multipart;
pub mod urlencoded;
pub mod xml;

use apiguard_model::{RequestView, Severity};
use http::header::{CONTENT_TYPE, COOKIE};

use crate::config::EngineConfig;
use crate::target::{Target, TargetKind};
use json::{JsonIssue, JsonItem};
use multipart::MultipartIssue;
use xml::{XmlIssue, XmlItem};

/// Most GraphQL tokens read per document.
const MAX_GRAPHQL_TOKENS: usize = 20_000;

/// A finding made while collecting (a parser bound or a malformed body), before scoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Anomaly {
    pub rule_id: &'static str,
    pub class: &'static str,
    pub severity: Severity,
    /// The lowest paranoia level at which this anomaly is reported.
    pub paranoia: u8,
    pub target: String,
    pub evidence: String,
}

impl Anomaly {
    pub(crate) fn new(
        rule_id: &'static str,
        class: &'static str,
        severity: Severity,
        target: impl Into<String>,
        evidence: impl Into<String>,
    ) -> Anomaly {
        Anomaly {
            rule_id,
            class,
            severity,
            paranoia: 1,
            target: target.into(),
            evidence: evidence.into(),
        }
    }

    pub(crate) fn at_paranoia(mut self, level: u8) -> Anomaly {
        self.paranoia = level;
        self
    }
}

/// Facts about the body that the protocol checks need.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyFacts {
    /// The media type (lowercase, without parameters), when a Content-Type was sent.
    pub media_type: Option<String>,
    /// Whether the body was parsed as a known structured type.
    pub parsed: bool,
}

/// Everything collected from one request.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub targets: Vec<Target>,
    pub anomalies: Vec<Anomaly>,
    pub body: BodyFacts,
    /// The GraphQL document of the request, if it is a GraphQL request.
    pub graphql: Option<graphql::GraphqlInfo>,
}

struct Collector<'c> {
    out: Collected,
    config: &'c EngineConfig,
    graphql_endpoint: bool,
    targets_capped: bool,
}

/// Breaks `request` into targets.
pub(crate) fn collect(request: &RequestView<'_>, config: &EngineConfig) -> Collected {
    let path = request.path();
    let mut c = Collector {
        out: Collected::default(),
        config,
        graphql_endpoint: path.to_ascii_lowercase().contains("graphql"),
        targets_capped: false,
    };
    c.push(TargetKind::Method, "", request.method.as_str());
    c.push(
        TargetKind::Path,
        "",
        crate::normalize::url::percent_decode(path, false).into_owned(),
    );
    if let Some(query) = request.query() {
        c.query(query);
    }
    for (name, value) in request.headers.iter() {
        let value = String::from_utf8_lossy(value.as_bytes());
        if name == COOKIE {
            for (cookie, cookie_value) in cookie::parse_cookies(&value) {
                c.push(TargetKind::CookieName, cookie.clone(), cookie.clone());
                c.push(TargetKind::Cookie, cookie, cookie_value);
            }
        } else {
            c.push(TargetKind::Header, name.as_str(), value.into_owned());
        }
    }
    if let Some(body) = request.body.filter(|b| !b.is_empty()) {
        let content_type = request
            .headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        c.body(body, content_type.as_deref());
    }
    c.out
}

impl Collector<'_> {
    fn push(&mut self, kind: TargetKind, name: impl Into<String>, value: impl Into<String>) {
        if self.out.targets.len() >= self.config.limits.max_targets {
            if !self.targets_capped {
                self.targets_capped = true;
                self.anomaly(Anomaly::new(
                    "limits.targets",
                    "limits",
                    Severity::Error,
                    "request",
                    format!(
                        "more than {} values; the rest was not inspected",
                        self.config.limits.max_targets
                    ),
                ));
            }
            return;
        }
        let mut value: String = value.into();
        let max = self.config.limits.max_value_len;
        if value.len() > max {
            let cut = crate::evidence::floor_char_boundary(&value, max);
            value.truncate(cut);
            let target = Target::new(kind, name.into(), value);
            self.anomaly(Anomaly::new(
                "limits.value_length",
                "limits",
                Severity::Notice,
                target.to_string(),
                format!("value longer than {max} bytes; inspected up to the limit"),
            ));
            self.out.targets.push(target);
            return;
        }
        self.out.targets.push(Target::new(kind, name.into(), value));
    }

    fn anomaly(&mut self, anomaly: Anomaly) {
        self.out.anomalies.push(anomaly);
    }

    /// Reports argument names longer than allowed and argument counts above the limit.
    fn argument_limits(&mut self, source: &str, pairs: &[(String, String)]) {
        let limits = &self.config.limits;
        if pairs.len() > limits.max_args {
            let why = format!("{} arguments, more than {}", pairs.len(), limits.max_args);
            self.anomaly(Anomaly::new(
                "limits.argument_count",
                "limits",
                Severity::Critical,
                source.to_string(),
                why,
            ));
        }
        if let Some((name, _)) = pairs.iter().find(|(n, _)| n.len() > limits.max_name_len) {
            let why = format!(
                "argument name of {} bytes, more than {}",
                name.len(),
                limits.max_name_len
            );
            self.anomaly(Anomaly::new(
                "limits.argument_name_length",
                "limits",
                Severity::Critical,
                source.to_string(),
                why,
            ));
        }
    }

    fn query(&mut self, query: &str) {
        let (pairs, truncated) =
            urlencoded::parse_urlencoded(query, self.config.limits.max_targets);
        if truncated {
            self.anomaly(Anomaly::new(
                "limits.arguments",
                "limits",
                Severity::Critical,
                "query",
                "too many query arguments",
            ));
        }
        self.argument_limits("query", &pairs);
        for (name, value) in pairs {
            if self.graphql_endpoint && name == "query" {
                self.graphql_document(&value);
                continue;
            }
            if self.graphql_endpoint && name == "variables" {
                self.json("variables", &value, TargetKind::QueryValue);
                continue;
            }
            if !name.is_empty() {
                self.push(TargetKind::QueryName, name.clone(), name.clone());
            }
            self.push(TargetKind::QueryValue, name, value);
        }
    }

    fn form(&mut self, text: &str) {
        let (pairs, truncated) = urlencoded::parse_urlencoded(text, self.config.limits.max_targets);
        if truncated {
            self.anomaly(Anomaly::new(
                "limits.arguments",
                "limits",
                Severity::Critical,
                "body",
                "too many form fields",
            ));
        }
        self.argument_limits("body", &pairs);
        for (name, value) in pairs {
            if !name.is_empty() {
                self.push(TargetKind::FormName, name.clone(), name.clone());
            }
            self.push(TargetKind::FormValue, name, value);
        }
    }

    fn body(&mut self, body: &[u8], content_type: Option<&str>) {
        let limit = self.config.max_body_inspect;
        let body = if body.len() > limit {
            self.anomaly(Anomaly::new(
                "limits.body_size",
                "limits",
                Severity::Notice,
                "body",
                format!("body of {} bytes; inspected up to {limit}", body.len()),
            ));
            &body[..limit]
        } else {
            body
        };
        let media_type = content_type.map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        self.out.body.media_type = media_type.clone();
        let parsed =
            self.structured_body(body, media_type.as_deref(), content_type.unwrap_or(""), 0);
        self.out.body.parsed = parsed;
    }

    /// Parses `body` by media type (sniffing when the type says nothing useful); returns whether
    /// it was parsed as a structured type. `level` bounds recursion through multipart parts.
    fn structured_body(
        &mut self,
        body: &[u8],
        media_type: Option<&str>,
        content_type: &str,
        level: usize,
    ) -> bool {
        let text = String::from_utf8_lossy(body);
        let media = media_type.unwrap_or("");
        if media == "application/x-www-form-urlencoded" {
            self.form(&text);
            return true;
        }
        if media.starts_with("multipart/") {
            if level == 0 {
                let boundary = multipart::parameters(content_type)
                    .into_iter()
                    .find(|(k, _)| k == "boundary")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                self.multipart(body, &boundary);
                return true;
            }
            self.push(TargetKind::Body, "", text.into_owned());
            return false;
        }
        if media.ends_with("json") || media.contains("+json") || media == "application/csp-report" {
            if self.json("", &text, TargetKind::JsonValue) {
                return true;
            }
            self.anomaly(Anomaly::new(
                "protocol.body_invalid",
                "protocol",
                Severity::Warning,
                "body",
                "body is not the JSON its Content-Type says",
            ));
            self.push(TargetKind::Body, "", text.into_owned());
            return false;
        }
        if media.ends_with("xml") {
            self.xml(&text);
            return true;
        }
        if media == "application/graphql" {
            self.graphql_document(&text);
            return true;
        }
        // Unknown or generic type: sniff, because backends often do.
        let trimmed = text.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && self.json("", &text, TargetKind::JsonValue)
        {
            return true;
        }
        if trimmed.starts_with('<') && (trimmed.starts_with("<?xml") || trimmed.ends_with('>')) {
            self.xml(&text);
            return true;
        }
        if looks_urlencoded(&text) {
            self.form(&text);
            return true;
        }
        if mostly_text(&text) {
            self.push(TargetKind::Body, "", text.into_owned());
        }
        false
    }

    /// Walks JSON text; a `$.query` of a GraphQL request becomes a GraphQL document. Returns
    /// false when the text is not JSON. `prefix` names an embedding (a query parameter).
    fn json(&mut self, prefix: &str, text: &str, value_kind: TargetKind) -> bool {
        let mut items: Vec<(JsonItem, String, String)> = Vec::new();
        let max_items = self
            .config
            .limits
            .max_targets
            .saturating_sub(self.out.targets.len());
        let result = json::walk_json(
            text,
            self.config.limits.max_depth,
            max_items.max(1),
            &mut |item, path, value| {
                items.push((item, path.to_string(), value.to_string()));
            },
        );
        let (value_kind, key_kind) = if value_kind == TargetKind::JsonValue {
            (TargetKind::JsonValue, TargetKind::JsonKey)
        } else {
            (value_kind, TargetKind::QueryName)
        };
        match result {
            Err(JsonIssue::Invalid) => return false,
            Err(JsonIssue::TooDeep) => self.anomaly(Anomaly::new(
                "limits.json_depth",
                "limits",
                Severity::Error,
                "body",
                format!("JSON nested deeper than {}", self.config.limits.max_depth),
            )),
            Err(JsonIssue::TooMany) => self.anomaly(Anomaly::new(
                "limits.json_items",
                "limits",
                Severity::Error,
                "body",
                "too many JSON items",
            )),
            Ok(()) => {}
        }
        for (item, path, value) in items {
            let name = if prefix.is_empty() {
                path
            } else {
                format!("{prefix}{}", &path[1..])
            };
            match item {
                JsonItem::Key => self.push(key_kind, name, value),
                JsonItem::Value if self.graphql_endpoint && name == "$.query" => {
                    self.graphql_document(&value)
                }
                JsonItem::Value => self.push(value_kind, name, value),
            }
        }
        true
    }

    fn graphql_document(&mut self, doc: &str) {
        // gotestwaf-style clients wrap the document in JSON even in a GET parameter.
        let trimmed = doc.trim_start();
        if trimmed.starts_with('{')
            && trimmed.contains("\"query\"")
            && self.json("", doc, TargetKind::JsonValue)
        {
            return;
        }
        let info = graphql::parse_graphql_document(doc, MAX_GRAPHQL_TOKENS);
        if info.truncated {
            self.anomaly(Anomaly::new(
                "limits.graphql_tokens",
                "limits",
                Severity::Error,
                "graphql:query",
                "GraphQL document too long",
            ));
        }
        self.push(TargetKind::GraphqlQuery, "query", doc);
        for (name, value) in &info.arguments {
            self.push(TargetKind::GraphqlArgument, name.clone(), value.clone());
        }
        self.out.graphql = Some(info);
    }

    fn xml(&mut self, text: &str) {
        let (items, issues) = xml::parse_xml(
            text,
            self.config.limits.max_depth,
            self.config.limits.max_targets,
        );
        for issue in issues {
            let (rule, severity, why) = match issue {
                XmlIssue::TooDeep => ("limits.xml_depth", Severity::Error, "XML nested too deep"),
                XmlIssue::TooMany => ("limits.xml_items", Severity::Error, "too many XML nodes"),
                XmlIssue::Malformed => {
                    ("protocol.xml_malformed", Severity::Notice, "malformed XML")
                }
            };
            let class = if rule.starts_with("limits") {
                "limits"
            } else {
                "protocol"
            };
            self.anomaly(
                Anomaly::new(rule, class, severity, "body", why)
                    .at_paranoia(if class == "protocol" { 2 } else { 1 }),
            );
        }
        for item in items {
            match item {
                XmlItem::Text { path, text } => self.push(TargetKind::XmlValue, path, text),
                XmlItem::Attribute { path, value } => self.push(TargetKind::XmlValue, path, value),
                XmlItem::Declaration(decl) => self.push(TargetKind::XmlDeclaration, "", decl),
            }
        }
    }

    fn multipart(&mut self, body: &[u8], boundary: &str) {
        let (parts, issues) =
            multipart::parse_multipart(body, boundary, self.config.limits.max_parts);
        for issue in issues {
            let (rule, severity, why) = match issue {
                MultipartIssue::NoParts => (
                    "protocol.multipart_no_parts",
                    Severity::Critical,
                    "multipart body without a part using the declared boundary",
                ),
                MultipartIssue::Unterminated => (
                    "protocol.multipart_unterminated",
                    Severity::Warning,
                    "multipart body without its closing boundary",
                ),
                MultipartIssue::BadHeader => (
                    "protocol.multipart_bad_header",
                    Severity::Critical,
                    "multipart part header is not a valid `name: value` line",
                ),
                MultipartIssue::MissingDisposition => (
                    "protocol.multipart_no_disposition",
                    Severity::Warning,
                    "multipart part without Content-Disposition: form-data",
                ),
                MultipartIssue::TooManyParts => (
                    "limits.multipart_parts",
                    Severity::Error,
                    "too many multipart parts",
                ),
                MultipartIssue::MixedLineEnds => (
                    "protocol.multipart_line_ends",
                    Severity::Warning,
                    "multipart part mixes CRLF and LF line ends",
                ),
            };
            let class = if rule.starts_with("limits") {
                "limits"
            } else {
                "protocol"
            };
            self.anomaly(Anomaly::new(rule, class, severity, "body", why));
        }
        for part in parts {
            let name = part.name.clone().unwrap_or_default();
            if !name.is_empty() {
                self.push(TargetKind::MultipartName, name.clone(), name.clone());
            }
            for (header, value) in &part.headers {
                if header != "content-disposition" {
                    self.push(TargetKind::PartHeader, header.clone(), value.clone());
                }
            }
            if let Some(filename) = &part.filename {
                self.push(
                    TargetKind::MultipartFilename,
                    name.clone(),
                    filename.clone(),
                );
            }
            let part_type = part.content_type.as_deref().map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
            let structured = matches!(part_type.as_deref(), Some(t) if t.ends_with("json") || t.ends_with("xml"));
            if structured {
                self.structured_body(
                    part.body,
                    part_type.as_deref(),
                    part.content_type.as_deref().unwrap_or(""),
                    1,
                );
            } else {
                let text = String::from_utf8_lossy(part.body);
                if mostly_text(&text) {
                    self.push(TargetKind::MultipartValue, name, text.into_owned());
                }
            }
        }
    }
}

/// `a=b&c=d` without whitespace: a form body sent with the wrong Content-Type.
fn looks_urlencoded(text: &str) -> bool {
    let first = text.split('&').next().unwrap_or("");
    match first.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.contains(char::is_whitespace)
                && !text.trim_end().contains('\n')
        }
        None => false,
    }
}

/// At most a few replacement characters (the body was mostly valid UTF-8 text).
fn mostly_text(text: &str) -> bool {
    let total = text.chars().count().max(1);
    let bad = text
        .chars()
        .filter(|&c| c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()))
        .count();
    bad * 10 < total
}
