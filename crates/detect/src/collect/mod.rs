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
use crate::gate::Features;
use crate::rules::RuleSet;
use crate::rules::fast::{LOWER, UPPER};
use crate::target::{LiteralMask, TargetKind, TargetName, TargetRef};
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

/// What collection leaves besides the targets it handed to the visitor.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub anomalies: Vec<Anomaly>,
    pub body: BodyFacts,
}

/// Receives the targets of a request as they are collected, in request order.
pub(crate) trait Visit {
    fn target(&mut self, target: &TargetRef<'_>);

    /// Whether the visitor settles plain keys and values of JSON bodies itself (see
    /// [`Visit::settle`]): `None` when it wants every target handed over; otherwise whether
    /// the per-target protocol checks have nothing to say about any JSON key for now (they
    /// look at keys only to find a session identifier sent from a foreign page).
    fn settles(&self) -> Option<bool> {
        None
    }

    /// Offered a key or value of a JSON body before it becomes a target: the visitor may
    /// settle it here, from its bytes (`features`) and the literals found in it as the
    /// document was read, when it would find nothing in it as a target; the collector counts it as
    /// handed over and moves on. Most keys and values of a document end here, without the
    /// cost of a target; the plainest do not even get here (see [`Collector::json`]).
    /// False (the default): hand it over.
    fn settle(
        &mut self,
        _kind: TargetKind,
        _value: &str,
        _features: &Features,
        _literals: LiteralMask,
    ) -> bool {
        false
    }
}

struct Collector<'c, 'v> {
    out: Collected,
    config: &'c EngineConfig,
    /// The prefilter whose literals the keys and values of a JSON document are classified
    /// with as the document is read, so that one walk serves all of them (see
    /// [`TargetRef::literals`]); none without a prefilter.
    prefilter: Option<&'c RuleSet>,
    visitor: &'v mut dyn Visit,
    graphql_endpoint: bool,
    /// Targets handed over so far.
    count: usize,
    targets_capped: bool,
}

/// Breaks `request` into targets, handing each to `visitor` as it is found; the keys and
/// values of JSON documents come with what `prefilter`'s literals say of them.
pub(crate) fn collect(
    request: &RequestView<'_>,
    config: &EngineConfig,
    prefilter: Option<&RuleSet>,
    visitor: &mut dyn Visit,
) -> Collected {
    let path = request.path();
    let mut c = Collector {
        out: Collected::default(),
        config,
        prefilter,
        visitor,
        graphql_endpoint: contains_ignore_ascii_case(path, "graphql"),
        count: 0,
        targets_capped: false,
    };
    c.push(TargetKind::Method, "", request.method.as_str());
    let decoded_path = crate::normalize::url::percent_decode(path, false);
    c.push(TargetKind::Path, "", &decoded_path);
    if let Some(query) = request.query() {
        c.query(query);
    }
    for (name, value) in request.headers.iter() {
        let value = utf8_lossy(value.as_bytes());
        if name == COOKIE {
            for (cookie, cookie_value) in cookie::cookies(&value) {
                c.push(TargetKind::CookieName, cookie, cookie);
                c.push(TargetKind::Cookie, cookie, cookie_value);
            }
        } else {
            c.push(TargetKind::Header, name.as_str(), &value);
        }
    }
    if let Some(body) = request.body.filter(|b| !b.is_empty()) {
        let content_type = request
            .headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        c.body(body, content_type.as_deref());
    }
    c.out
}

/// `bytes` as text, borrowed when it is valid UTF-8 (the common case, checked fast), with
/// replacement characters otherwise.
fn utf8_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

impl Collector<'_, '_> {
    fn push(&mut self, kind: TargetKind, name: &str, value: &str) {
        self.push_target(TargetRef::new(kind, name, value));
    }

    fn push_target(&mut self, mut target: TargetRef<'_>) {
        if self.count >= self.config.limits.max_targets {
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
        self.count += 1;
        let max = self.config.limits.max_value_len;
        if target.value.len() > max {
            let cut = crate::evidence::floor_char_boundary(target.value, max);
            target.value = &target.value[..cut];
            // Literals found in the whole value may end differently in the cut one.
            target.literals = None;
            self.anomaly(Anomaly::new(
                "limits.value_length",
                "limits",
                Severity::Notice,
                target.display(),
                format!("value longer than {max} bytes; inspected up to the limit"),
            ));
        }
        self.visitor.target(&target);
    }

    fn anomaly(&mut self, anomaly: Anomaly) {
        self.out.anomalies.push(anomaly);
    }

    /// Reports argument counts above the limit and argument names longer than allowed (the
    /// first such name's decoded length).
    fn argument_limits(&mut self, source: &str, count: usize, long_name: Option<usize>) {
        let limits = &self.config.limits;
        if count > limits.max_args {
            let why = format!("{count} arguments, more than {}", limits.max_args);
            self.anomaly(Anomaly::new(
                "limits.argument_count",
                "limits",
                Severity::Critical,
                source.to_string(),
                why,
            ));
        }
        if let Some(len) = long_name {
            let why = format!(
                "argument name of {len} bytes, more than {}",
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

    /// Counts the arguments of `text` (at most `max_targets`) and reports the bounds, before
    /// any of them is handed over; returns how many to read.
    fn count_arguments(&mut self, text: &str, source: &str, why: &'static str) -> usize {
        let limits = &self.config.limits;
        let (mut count, mut truncated, mut long_name) = (0usize, false, None);
        for (name, _) in urlencoded::raw_pairs(text) {
            if count >= limits.max_targets {
                truncated = true;
                break;
            }
            count += 1;
            // Decoding only shortens a name.
            if long_name.is_none() && name.len() > limits.max_name_len {
                let len = crate::normalize::url::percent_decode(name, true).len();
                long_name = (len > limits.max_name_len).then_some(len);
            }
        }
        if truncated {
            self.anomaly(Anomaly::new(
                "limits.arguments",
                "limits",
                Severity::Critical,
                source.to_string(),
                why,
            ));
        }
        self.argument_limits(source, count, long_name);
        count
    }

    fn query(&mut self, query: &str) {
        let count = self.count_arguments(query, "query", "too many query arguments");
        for (name, value) in urlencoded::pairs(query).take(count) {
            if self.graphql_endpoint && name == "query" {
                self.graphql_document(&value);
                continue;
            }
            if self.graphql_endpoint
                && name == "variables"
                && self.json("variables", &value, TargetKind::QueryValue)
            {
                continue;
            }
            if !name.is_empty() {
                self.push(TargetKind::QueryName, &name, &name);
            }
            self.push(TargetKind::QueryValue, &name, &value);
        }
    }

    fn form(&mut self, text: &str) {
        let count = self.count_arguments(text, "body", "too many form fields");
        for (name, value) in urlencoded::pairs(text).take(count) {
            if !name.is_empty() {
                self.push(TargetKind::FormName, &name, &name);
            }
            self.push(TargetKind::FormValue, &name, &value);
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
        let parsed =
            self.structured_body(body, media_type.as_deref(), content_type.unwrap_or(""), 0);
        self.out.body.media_type = media_type;
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
        let text = utf8_lossy(body);
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
            self.push(TargetKind::Body, "", &text);
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
            self.push(TargetKind::Body, "", &text);
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
            self.push(TargetKind::Body, "", &text);
        }
        false
    }

    /// Walks JSON text; a `$.query` of a GraphQL request becomes a GraphQL document. Returns
    /// false when the text is not JSON. `prefix` names an embedding (a query parameter).
    fn json(&mut self, prefix: &str, text: &str, value_kind: TargetKind) -> bool {
        let max_items = self
            .config
            .limits
            .max_targets
            .saturating_sub(self.count)
            .max(1);
        // One pass reads the document and classifies its keys and values.
        let prefilter = self.prefilter;
        let Ok(doc) = json::scan(text, self.config.limits.max_depth, max_items, prefilter) else {
            return false;
        };
        // Whether the visitor settles plain items, and may be spared the call for the
        // plainest (see below).
        let settles = self.visitor.settles();
        let (value_kind, key_kind) = if value_kind == TargetKind::JsonValue {
            (TargetKind::JsonValue, TargetKind::JsonKey)
        } else {
            (value_kind, TargetKind::QueryName)
        };
        match doc.issue {
            Some(JsonIssue::TooDeep) => self.anomaly(Anomaly::new(
                "limits.json_depth",
                "limits",
                Severity::Error,
                "body",
                format!("JSON nested deeper than {}", self.config.limits.max_depth),
            )),
            Some(JsonIssue::TooMany) => self.anomaly(Anomaly::new(
                "limits.json_items",
                "limits",
                Severity::Error,
                "body",
                "too many JSON items",
            )),
            Some(JsonIssue::Invalid) | None => {}
        }
        // Loop invariants, read once (the visitor's calls could change nothing of them, but
        // the compiler cannot tell).
        let settles = settles.filter(|_| value_kind == TargetKind::JsonValue);
        let (max_targets, max_len) = (
            self.config.limits.max_targets,
            self.config.limits.max_value_len,
        );
        let graphql_query = self.graphql_endpoint && prefix.is_empty();
        let (key_bit, value_bit) = (key_kind.group().bit(), value_kind.group().bit());
        for item in &doc.items {
            let span = item.span;
            // A body document's plain keys and values (no escapes, within the bounds) are
            // settled during collection when possible.
            if let Some(classified) = &item.classified
                && let Some(keys_silent) = settles
                && self.count < max_targets
                && span.end - span.start <= max_len
            {
                let (kind, bit) = match item.item {
                    JsonItem::Key => (key_kind, key_bit),
                    JsonItem::Value => (value_kind, value_bit),
                };
                let raw = &text.as_bytes()[span.start..span.end];
                let f = &classified.features;
                // The plainest items are settled here, without a call: no byte and no
                // literal that could arm anything (`RuleSet::plainly_silent`), too short or
                // of one letter case for base64, and nothing for the protocol checks (a key
                // while they look at none, a value that does not start like a URL). What is
                // settled here, the visitor would settle too. The others are offered to the
                // visitor.
                let plain = || {
                    prefilter.is_some_and(|rules| rules.plainly_silent(bit, f, classified.literals))
                        && (raw.len() < 8 || !f.intersects(&UPPER) || !f.intersects(&LOWER))
                        && match item.item {
                            JsonItem::Key => keys_silent,
                            JsonItem::Value => !matches!(
                                raw.first(),
                                Some(
                                    b'h' | b'H'
                                        | b'f'
                                        | b'F'
                                        | b' '
                                        | b'\t'
                                        | b'\n'
                                        | b'\r'
                                        | 0x0b
                                        | 0x0c
                                        | 0x80..
                                )
                            ),
                        }
                };
                // A GraphQL request's `$.query` is a document of its own.
                let graphql = item.item == JsonItem::Value
                    && graphql_query
                    && doc.is_top_level_key(item.node, "query");
                // The span lies between ASCII delimiters, so it is a slice of the text.
                if !graphql
                    && (plain()
                        || text.get(span.start..span.end).is_some_and(|value| {
                            self.visitor.settle(kind, value, f, classified.literals)
                        }))
                {
                    self.count += 1;
                    continue;
                }
            }
            let literals = item.classified.as_ref().map(|c| c.literals);
            let value = doc.value(span);
            let target = |kind| TargetRef {
                kind,
                name: TargetName::Json {
                    prefix,
                    doc: &doc,
                    node: item.node,
                },
                value: &value,
                literals,
            };
            match item.item {
                JsonItem::Key => self.push_target(target(key_kind)),
                JsonItem::Value
                    if self.graphql_endpoint
                        && prefix.is_empty()
                        && doc.is_top_level_key(item.node, "query") =>
                {
                    self.graphql_document(&value)
                }
                JsonItem::Value => self.push_target(target(value_kind)),
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
            self.push(TargetKind::GraphqlArgument, name, value);
        }
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
        for item in &items {
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
            let name = part.name.as_deref().unwrap_or_default();
            if !name.is_empty() {
                self.push(TargetKind::MultipartName, name, name);
            }
            for (header, value) in &part.headers {
                if header != "content-disposition" {
                    self.push(TargetKind::PartHeader, header, value);
                }
            }
            if let Some(filename) = &part.filename {
                self.push(TargetKind::MultipartFilename, name, filename);
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
                let text = utf8_lossy(part.body);
                if mostly_text(&text) {
                    self.push(TargetKind::MultipartValue, name, &text);
                }
            }
        }
    }
}

/// Every target of `request` as an owned [`Target`](crate::target::Target), with the literal
/// mask the collector derived for it when `rules` prescan JSON documents (for tests).
#[cfg(test)]
pub(crate) fn collect_owned(
    request: &RequestView<'_>,
    config: &EngineConfig,
    rules: Option<&crate::rules::RuleSet>,
) -> (Vec<(crate::target::Target, Option<LiteralMask>)>, Collected) {
    struct Owned {
        targets: Vec<(crate::target::Target, Option<LiteralMask>)>,
    }
    impl Visit for Owned {
        fn target(&mut self, target: &TargetRef<'_>) {
            self.targets.push((target.to_target(), target.literals));
        }
    }
    let mut owned = Owned {
        targets: Vec::new(),
    };
    let collected = collect(request, config, rules, &mut owned);
    (owned.targets, collected)
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
