//! Targets: the pieces of a request that rules inspect, each named so that a finding says
//! exactly where it was made and an exclusion can point at exactly one of them.

use std::borrow::Cow;
use std::fmt;

use crate::collect::json::JsonDoc;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Method,
    /// The percent-decoded path.
    Path,
    QueryName,
    QueryValue,
    FormName,
    FormValue,
    JsonKey,
    JsonValue,
    MultipartName,
    MultipartValue,
    MultipartFilename,
    /// A header of one multipart part (`Content-Type`, `Content-Disposition`, ...).
    PartHeader,
    /// An XML text node or attribute value.
    XmlValue,
    /// An XML DOCTYPE / ENTITY / processing-instruction declaration.
    XmlDeclaration,
    /// A whole GraphQL document.
    GraphqlQuery,
    /// A literal argument inside a GraphQL document.
    GraphqlArgument,
    /// A string field of a decoded gRPC (protobuf) request message, named by its field path.
    GrpcField,
    Header,
    CookieName,
    Cookie,
    /// A body that is neither form, multipart, JSON nor XML, inspected as text.
    Body,
}

impl TargetKind {
    /// The prefix of the target's display form (`query:`, `json:`, ...).
    pub fn prefix(self) -> &'static str {
        match self {
            TargetKind::Method => "method",
            TargetKind::Path => "path",
            TargetKind::QueryName => "query_name",
            TargetKind::QueryValue => "query",
            TargetKind::FormName => "form_name",
            TargetKind::FormValue => "form",
            TargetKind::JsonKey => "json_key",
            TargetKind::JsonValue => "json",
            TargetKind::MultipartName => "multipart_name",
            TargetKind::MultipartValue => "multipart",
            TargetKind::MultipartFilename => "filename",
            TargetKind::PartHeader => "part_header",
            TargetKind::XmlValue => "xml",
            TargetKind::XmlDeclaration => "xml_dtd",
            TargetKind::GraphqlQuery => "graphql",
            TargetKind::GraphqlArgument => "graphql_arg",
            TargetKind::GrpcField => "grpc",
            TargetKind::Header => "header",
            TargetKind::CookieName => "cookie_name",
            TargetKind::Cookie => "cookie",
            TargetKind::Body => "body",
        }
    }

    /// The rule-file group this kind belongs to (see `docs/detection.md`).
    pub(crate) fn group(self) -> TargetGroup {
        match self {
            TargetKind::Method => TargetGroup::Method,
            TargetKind::Path => TargetGroup::Path,
            TargetKind::QueryName
            | TargetKind::FormName
            | TargetKind::JsonKey
            | TargetKind::MultipartName => TargetGroup::ArgNames,
            TargetKind::QueryValue
            | TargetKind::FormValue
            | TargetKind::JsonValue
            | TargetKind::MultipartValue
            | TargetKind::XmlValue
            | TargetKind::GraphqlArgument
            | TargetKind::GrpcField
            | TargetKind::Body => TargetGroup::Args,
            TargetKind::MultipartFilename => TargetGroup::Files,
            TargetKind::PartHeader => TargetGroup::PartHeaders,
            TargetKind::XmlDeclaration => TargetGroup::XmlDeclarations,
            TargetKind::GraphqlQuery => TargetGroup::Graphql,
            TargetKind::Header => TargetGroup::Headers,
            TargetKind::CookieName => TargetGroup::CookieNames,
            TargetKind::Cookie => TargetGroup::Cookies,
        }
    }
}

/// Coarse groups of targets that rules select (`targets: [args, cookies]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TargetGroup {
    Method,
    Path,
    Args,
    ArgNames,
    Files,
    PartHeaders,
    XmlDeclarations,
    Graphql,
    Headers,
    /// Headers with a fixed grammar (`Accept*`, `Cache-Control`, `Range`, ...), which the
    /// protocol checks validate; only rules that look for payloads in any header (Log4Shell)
    /// inspect them.
    StructuredHeaders,
    CookieNames,
    Cookies,
}

/// Headers whose values follow a fixed grammar.
const STRUCTURED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "cache-control",
    "connection",
    "content-type",
    "content-length",
    "content-encoding",
    "content-range",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "keep-alive",
    "proxy-connection",
    "pragma",
    "te",
    "transfer-encoding",
    "upgrade-insecure-requests",
    "dnt",
    "priority",
    "host",
    "date",
    "expect",
    "upgrade",
    "authorization",
];

/// Every target kind.
pub(crate) const ALL_KINDS: [TargetKind; 21] = [
    TargetKind::Method,
    TargetKind::Path,
    TargetKind::QueryName,
    TargetKind::QueryValue,
    TargetKind::FormName,
    TargetKind::FormValue,
    TargetKind::JsonKey,
    TargetKind::JsonValue,
    TargetKind::MultipartName,
    TargetKind::MultipartValue,
    TargetKind::MultipartFilename,
    TargetKind::PartHeader,
    TargetKind::XmlValue,
    TargetKind::XmlDeclaration,
    TargetKind::GraphqlQuery,
    TargetKind::GraphqlArgument,
    TargetKind::GrpcField,
    TargetKind::Header,
    TargetKind::CookieName,
    TargetKind::Cookie,
    TargetKind::Body,
];

/// The bit set of the target groups whose targets an exact-target selector (`header:referer`,
/// `query:*`; see `rules::selector_matches`) may name; every group when unsure.
pub(crate) fn selector_groups(selector: &str) -> u16 {
    let all = u16::MAX;
    let lower = selector.to_ascii_lowercase();
    let (prefix, name) = match lower.split_once(':') {
        Some(pair) => pair,
        // `method`, `path`, `body`, or a prefix pattern such as `json*`.
        None => return all,
    };
    let Some(kind) = ALL_KINDS.iter().find(|k| k.prefix() == prefix) else {
        return all;
    };
    if *kind != TargetKind::Header {
        return kind.group().bit();
    }
    match name.strip_suffix('*') {
        Some(_) => TargetGroup::Headers.bit() | TargetGroup::StructuredHeaders.bit(),
        None if name.contains('*') => all,
        None => Target::new(TargetKind::Header, name, "").group().bit(),
    }
}

impl TargetGroup {
    pub(crate) fn parse(name: &str) -> Option<TargetGroup> {
        Some(match name {
            "method" => TargetGroup::Method,
            "path" => TargetGroup::Path,
            "args" => TargetGroup::Args,
            "arg_names" => TargetGroup::ArgNames,
            "files" => TargetGroup::Files,
            "part_headers" => TargetGroup::PartHeaders,
            "xml_declarations" => TargetGroup::XmlDeclarations,
            "graphql" => TargetGroup::Graphql,
            "headers" => TargetGroup::Headers,
            "structured_headers" => TargetGroup::StructuredHeaders,
            "cookie_names" => TargetGroup::CookieNames,
            "cookies" => TargetGroup::Cookies,
            _ => return None,
        })
    }

    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Whether a header of this name has a fixed grammar (see [`TargetGroup::StructuredHeaders`]).
fn structured_header(name: &str) -> bool {
    STRUCTURED_HEADERS.contains(&name) || name.starts_with("sec-")
}

/// One inspected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    /// The argument name, JSON path, header name (lowercase), ...; empty for `method`, `path`
    /// and `body`.
    pub name: String,
    /// The value as the application would see it (query and form values once URL-decoded,
    /// JSON strings unescaped, XML entities resolved); further decoding is normalisation's job.
    pub value: String,
}

impl Target {
    /// The rule-file group of this target.
    pub(crate) fn group(&self) -> TargetGroup {
        group_of(self.kind, &self.name)
    }

    pub fn new(kind: TargetKind, name: impl Into<String>, value: impl Into<String>) -> Target {
        Target {
            kind,
            name: name.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(self.kind.prefix())
        } else {
            write!(f, "{}:{}", self.kind.prefix(), self.name)
        }
    }
}

fn group_of(kind: TargetKind, name: &str) -> TargetGroup {
    if kind == TargetKind::Header && structured_header(name) {
        return TargetGroup::StructuredHeaders;
    }
    kind.group()
}

/// A target as the collector hands it to the engine: borrowed from the request (or from the
/// collector's decoded copy), its name written out only when needed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TargetRef<'a> {
    pub kind: TargetKind,
    pub name: TargetName<'a>,
    pub value: &'a str,
    /// For a piece of a larger text that was scanned for prefilter literals as a whole (the
    /// keys and values of a JSON document): which literals occur in the value.
    pub literals: Option<LiteralMask>,
}

/// Target groups (as [`TargetGroup::bit`] masks) for which a prefilter literal arms a rule in
/// a value: unconditionally, only if the value also contains `(` (SQL function names), or only
/// if it has shell syntax (command words that are not the value's first word).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LiteralMask {
    pub groups: u16,
    pub call_groups: u16,
    pub shell_groups: u16,
}

impl LiteralMask {
    /// Whether a literal arms a rule of target group `bit` in a value with features `f`.
    pub(crate) fn arms(&self, bit: u16, f: &crate::gate::Features) -> bool {
        self.groups & bit != 0
            || (self.call_groups & bit != 0 && f.has(b'('))
            || (self.shell_groups & bit != 0 && crate::engine::shell_syntax(f))
    }
}

/// The name of a [`TargetRef`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum TargetName<'a> {
    Text(&'a str),
    /// A JSON path, written from the document's path links (after `prefix` when the document
    /// is embedded in an argument: `variables.a.b`; `$.a.b` otherwise).
    Json {
        prefix: &'a str,
        doc: &'a JsonDoc<'a>,
        node: u32,
    },
}

impl<'a> TargetRef<'a> {
    pub(crate) fn new(kind: TargetKind, name: &'a str, value: &'a str) -> TargetRef<'a> {
        TargetRef {
            kind,
            name: TargetName::Text(name),
            value,
            literals: None,
        }
    }

    /// The rule-file group of this target.
    #[inline]
    pub(crate) fn group(&self) -> TargetGroup {
        match self.name {
            TargetName::Text(name) => group_of(self.kind, name),
            TargetName::Json { .. } => self.kind.group(),
        }
    }

    /// The name: the argument name, JSON path, header name, ...
    pub(crate) fn name(&self) -> Cow<'a, str> {
        match self.name {
            TargetName::Text(name) => Cow::Borrowed(name),
            TargetName::Json { .. } => {
                let mut out = String::new();
                self.write_name(&mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Whether the name is exactly `name` (without writing out a JSON path).
    pub(crate) fn name_is(&self, name: &str) -> bool {
        match self.name {
            TargetName::Text(own) => own == name,
            TargetName::Json { .. } => self.name() == name,
        }
    }

    fn write_name(&self, out: &mut String) {
        match self.name {
            TargetName::Text(name) => out.push_str(name),
            TargetName::Json { prefix, doc, node } => {
                if prefix.is_empty() {
                    out.push('$');
                } else {
                    out.push_str(prefix);
                }
                doc.write_path(node, out);
            }
        }
    }

    /// The display form, `kind:name` (see [`Target`]'s `Display`).
    pub(crate) fn display(&self) -> String {
        let mut out = String::from(self.kind.prefix());
        if !matches!(self.name, TargetName::Text("")) {
            out.push(':');
            self.write_name(&mut out);
        }
        out
    }

    /// An owned copy.
    #[cfg(test)]
    pub(crate) fn to_target(self) -> Target {
        Target::new(self.kind, self.name().into_owned(), self.value)
    }
}

impl fmt::Display for TargetRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}
