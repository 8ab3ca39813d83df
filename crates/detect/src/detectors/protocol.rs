//! Request-level HTTP protocol checks: the method, version and framing headers, header
//! semantics and the Content-Type. These look at the request as a whole rather than at one
//! target, so they are code with fixed rule ids (documented in `docs/detection.md`) rather
//! than rule-file entries; exclusions apply to them like to any rule.

use apiguard_model::{RequestView, Severity};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{Method, Version};

use crate::collect::multipart::parameters;
use crate::collect::{Anomaly, Collected};
use crate::normalize::url::{has_invalid_escape, percent_decode};
use crate::target::TargetKind;
use crate::target::TargetRef;

/// Methods a REST/GraphQL API gateway expects.
const STANDARD_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Charsets a request body may declare; EBCDIC (`ibm037`, `cp500`) and UTF-7 are classic
/// filter evasions, and anything else is noise no client sends.
const ALLOWED_CHARSETS: &[&str] = &[
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    "iso-8859-1",
    "iso-8859-2",
    "iso-8859-15",
    "latin1",
    "windows-1250",
    "windows-1251",
    "windows-1252",
    "shift_jis",
    "euc-jp",
    "euc-kr",
    "gb2312",
    "gbk",
    "gb18030",
    "big5",
    "koi8-r",
];

/// Request headers with no business in a request to an API (httpoxy, WebDAV locking, the
/// Next.js middleware bypass).
const RESTRICTED_HEADERS: &[&str] = &["proxy", "lock-token", "if", "x-middleware-subrequest"];

/// Media types whose subtype must be one we know how to parse.
const KNOWN_MULTIPART: &[&str] = &[
    "multipart/form-data",
    "multipart/mixed",
    "multipart/related",
    "multipart/alternative",
];

fn anomaly(
    rule: &'static str,
    severity: Severity,
    target: impl Into<String>,
    evidence: impl Into<String>,
) -> Anomaly {
    Anomaly::new(rule, "protocol", severity, target, evidence)
}

/// Runs every protocol check and appends findings to `out`; `targets` holds what the checks of
/// single targets found while the request was collected.
pub(crate) fn check(
    request: &RequestView<'_>,
    collected: &Collected,
    targets: TargetChecks,
    out: &mut Vec<Anomaly>,
) {
    let TargetChecks {
        fixation_from: _,
        part_headers,
        part_names,
        control,
        method_override,
        session_fixation,
        remote_include,
        parameter_names,
    } = targets;
    let present = present_headers(request);
    method_and_version(request, out);
    framing(request, out);
    headers(request, present, out);
    content_type(request, part_headers, part_names, out);
    encodings(request, collected, out);
    out.extend(control);
    out.extend(method_override);
    out.extend(session_fixation);
    header_grammar(request, present, out);
    cookie_smuggling(request, out);
    out.extend(remote_include);
    out.extend(parameter_names);
}

/// The checks that look at one target at a time, run as each target is collected. Their
/// findings wait here, per check, so that the request's findings keep one fixed order.
#[derive(Debug, Default)]
pub(crate) struct TargetChecks {
    /// The Referer's host when it names another host than the request's (session fixation).
    fixation_from: Option<String>,
    part_headers: Vec<Anomaly>,
    part_names: Vec<Anomaly>,
    control: Vec<Anomaly>,
    method_override: Vec<Anomaly>,
    session_fixation: Option<Anomaly>,
    remote_include: Vec<Anomaly>,
    parameter_names: Vec<Anomaly>,
}

impl TargetChecks {
    pub(crate) fn new(request: &RequestView<'_>) -> TargetChecks {
        TargetChecks {
            fixation_from: foreign_referer(request),
            ..TargetChecks::default()
        }
    }

    /// Runs the single-target checks on `t`.
    pub(crate) fn target(&mut self, method: &Method, t: &TargetRef<'_>) {
        match t.kind {
            TargetKind::QueryName | TargetKind::FormName => {
                control_characters(t, &mut self.control);
                self.session_fixation(t);
                parameter_name(t, &mut self.parameter_names);
            }
            TargetKind::JsonKey => self.session_fixation(t),
            TargetKind::MultipartName => {
                multipart_name(t, &mut self.part_names);
                self.session_fixation(t);
            }
            TargetKind::MultipartFilename => multipart_name(t, &mut self.part_names),
            TargetKind::PartHeader => part_header(t, &mut self.part_headers),
            TargetKind::QueryValue | TargetKind::FormValue => {
                if t.kind == TargetKind::FormValue {
                    form_charset(t, &mut self.part_names);
                }
                control_characters(t, &mut self.control);
                method_override(method, t, &mut self.method_override);
                remote_include_base(t, &mut self.remote_include);
            }
            TargetKind::MultipartValue => {
                form_charset(t, &mut self.part_names);
                remote_include_base(t, &mut self.remote_include);
            }
            TargetKind::JsonValue => remote_include_base(t, &mut self.remote_include),
            TargetKind::Header => {
                control_characters(t, &mut self.control);
                method_override(method, t, &mut self.method_override);
            }
            TargetKind::Cookie => {
                control_characters(t, &mut self.control);
                remote_include_base(t, &mut self.remote_include);
            }
            TargetKind::CookieName | TargetKind::Path => control_characters(t, &mut self.control),
            _ => {}
        }
    }

    /// Whether [`TargetChecks::target`] would certainly neither report nor remember anything
    /// for a JSON key or value (of a body document) equal to `value`, so that the collector
    /// may skip handing it over (see `Visit::settle`). Conservative: false when unsure.
    pub(crate) fn silent_on_json(&self, kind: TargetKind, value: &str) -> bool {
        match kind {
            TargetKind::JsonKey => self.fixation_from.is_none() || self.session_fixation.is_some(),
            // `remote_include_base` looks only at values starting with a URL scheme.
            TargetKind::JsonValue => !matches!(
                value
                    .bytes()
                    .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')),
                Some(b'h' | b'H' | b'f' | b'F' | 0x80..)
            ),
            _ => false,
        }
    }

    fn session_fixation(&mut self, t: &TargetRef<'_>) {
        if self.session_fixation.is_some() {
            return;
        }
        let Some(referer_host) = &self.fixation_from else {
            return;
        };
        if SESSION_ID_NAMES
            .iter()
            .any(|n| n.eq_ignore_ascii_case(t.value))
        {
            let name = t.value.to_ascii_lowercase();
            self.session_fixation = Some(Anomaly::new(
                "session.fixation",
                "session_fixation",
                Severity::Critical,
                t.display(),
                format!("session identifier {name} sent from {referer_host}"),
            ));
        }
    }
}

/// `foo[1]a[2]`: text after a closing bracket is dropped by PHP and kept by others, so the
/// parameter the backend builds is not the one inspected. (`items[0].name`, the binding syntax
/// of Spring and ASP.NET, continues with a dot.)
fn parameter_name(t: &TargetRef<'_>, out: &mut Vec<Anomaly>) {
    if t.value.contains('[')
        && t.value
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b']' && w[1].is_ascii_alphanumeric())
    {
        out.push(anomaly(
            "protocol.parameter_name_brackets",
            Severity::Critical,
            t.display(),
            t.value,
        ));
    }
}

/// Names under which web frameworks carry a session identifier.
const SESSION_ID_NAMES: &[&str] = &[
    "jsessionid",
    "phpsessid",
    "phpsession",
    "aspsessionid",
    "asp.net_sessionid",
    "sessionid",
    "session_id",
    "session-id",
    "_session_id",
    "sessid",
    "cfid",
    "cftoken",
    "cfsid",
    "jservsession",
    "jwsession",
    "weblogicsession",
    "laravel_session",
    "connect.sid",
    "sails.sid",
    "koa.sess",
    "koa:sess",
    "rack.session",
    "play_session",
    "_flask_session",
    "_rails_session",
    "next-auth.session-token",
    "__host-next-auth.session-token",
    "__secure-next-auth.session-token",
    "zend_session_id",
    "cakephp",
    "shiny-token",
    "meteor_login_token",
];

/// The host of a URL (or of a bare `host/path`), lowercase, without port or credentials.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    host.split(':').next().unwrap_or("").to_ascii_lowercase()
}

/// Session fixation: a session identifier planted through a request argument (a link or a form
/// on another site), recognised by a Referer naming another host than the one addressed. The
/// Referer's host, when it is foreign; the arguments are checked as they are collected.
fn foreign_referer(request: &RequestView<'_>) -> Option<String> {
    let referer = request
        .headers
        .get(http::header::REFERER)
        .and_then(|v| v.to_str().ok())?;
    let referer_host = url_host(referer);
    let host = request
        .headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri.host())
        .unwrap_or("");
    let host = url_host(host);
    (!referer_host.is_empty() && referer_host != host).then_some(referer_host)
}

fn method_and_version(request: &RequestView<'_>, out: &mut Vec<Anomaly>) {
    let method = request.method.as_str();
    if *request.method == Method::TRACE || method == "TRACK" {
        out.push(anomaly(
            "protocol.method_trace",
            Severity::Critical,
            "method",
            method,
        ));
    } else if *request.method == Method::CONNECT {
        out.push(anomaly(
            "protocol.method_connect",
            Severity::Error,
            "method",
            method,
        ));
    } else if !STANDARD_METHODS.contains(&method) {
        out.push(anomaly(
            "protocol.method_unknown",
            Severity::Critical,
            "method",
            method,
        ));
    }
    // An origin server must accept the absolute form (RFC 9112, 3.2.2), and HTTP/2 always
    // carries scheme and authority. What is suspect is an HTTP/1 absolute form naming a
    // scheme other than http(s), or another host than the Host header: the backend and the
    // gateway might then disagree on which site the request is for.
    let host_header = request
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.trim().to_ascii_lowercase());
    let absolute_suspect = request.version < Version::HTTP_2
        && request.uri.scheme().is_some()
        && (!matches!(request.uri.scheme_str(), Some("http" | "https"))
            || request.uri.authority().is_some_and(|a| {
                host_header
                    .as_deref()
                    .is_some_and(|h| strip_port(h) != strip_port(&a.as_str().to_ascii_lowercase()))
            }));
    if absolute_suspect {
        out.push(anomaly(
            "protocol.absolute_uri",
            Severity::Critical,
            "path",
            request.uri.to_string(),
        ));
    }
    if request.version == Version::HTTP_09 {
        out.push(anomaly(
            "protocol.http09",
            Severity::Critical,
            "request",
            "HTTP/0.9",
        ));
    }
}

fn framing(request: &RequestView<'_>, out: &mut Vec<Anomaly>) {
    let lengths: Vec<&str> = request
        .headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let encodings: Vec<String> = request
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .collect();
    if !lengths.is_empty() && !encodings.is_empty() {
        out.push(anomaly(
            "protocol.cl_and_te",
            Severity::Critical,
            "header:content-length",
            "Content-Length with Transfer-Encoding",
        ));
    }
    let distinct: Vec<&str> = lengths
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if distinct.len() > 1 {
        out.push(anomaly(
            "protocol.duplicate_content_length",
            Severity::Critical,
            "header:content-length",
            distinct.join(","),
        ));
    }
    if distinct
        .iter()
        .any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
    {
        out.push(anomaly(
            "protocol.invalid_content_length",
            Severity::Critical,
            "header:content-length",
            lengths.join(","),
        ));
    }
    for te in &encodings {
        if te.trim() != "chunked" {
            out.push(anomaly(
                "protocol.invalid_transfer_encoding",
                Severity::Critical,
                "header:transfer-encoding",
                te.clone(),
            ));
        }
    }
    if !encodings.is_empty() && request.version == Version::HTTP_10 {
        out.push(anomaly(
            "protocol.te_http10",
            Severity::Error,
            "header:transfer-encoding",
            "Transfer-Encoding on HTTP/1.0",
        ));
    }
    let has_body = request.body.is_some_and(|b| !b.is_empty())
        || !encodings.is_empty()
        || distinct
            .iter()
            .any(|v| v.parse::<u64>().is_ok_and(|n| n > 0));
    // A GET body is legitimate for a few APIs (search engines) but a desync vector everywhere
    // else; HEAD and chunked GET bodies have no legitimate use.
    if has_body && *request.method == Method::HEAD
        || (*request.method == Method::GET && !encodings.is_empty())
    {
        out.push(anomaly(
            "protocol.get_with_body",
            Severity::Critical,
            "body",
            format!("{} request with a body", request.method),
        ));
    } else if has_body && *request.method == Method::GET {
        out.push(anomaly(
            "protocol.get_with_body",
            Severity::Error,
            "body",
            "GET request with a body",
        ));
    }
    if *request.method == Method::POST
        && lengths.is_empty()
        && encodings.is_empty()
        && request.version != Version::HTTP_2
    {
        // A notice only: clients send bodiless POSTs (`POST /orders/7/cancel`) without
        // Content-Length every day.
        out.push(anomaly(
            "protocol.post_without_length",
            Severity::Notice,
            "header:content-length",
            "POST without Content-Length or Transfer-Encoding",
        ));
    }
}

/// `host[:port]` or `[v6]:port` without the port.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        authority.split(']').next().unwrap_or(authority)
    } else {
        authority.split(':').next().unwrap_or(authority)
    }
}

/// Bits of [`present_headers`]: the restricted headers (in [`RESTRICTED_HEADERS`] order), then
/// the others the checks look up.
const REQUEST_RANGE: u32 = 1 << 4;
const CACHE_CONTROL: u32 = 1 << 5;
const ACCEPT_ENCODING: u32 = 1 << 6;
const ACCEPT: u32 = 1 << 7;
const UP_DEVCAP_CHARSET: u32 = 1 << 8;
/// Then the headers of [`SEC_FETCH_VALUES`], in its order.
const SEC_FETCH: u32 = 9;

/// Which of the headers the request-level checks look up are present: one pass over the
/// request's headers instead of a lookup (and a name parse) per check.
fn present_headers(request: &RequestView<'_>) -> u32 {
    let mut present = 0;
    for name in request.headers.keys() {
        let name = name.as_str();
        present |= match name {
            "cache-control" => CACHE_CONTROL,
            "accept-encoding" => ACCEPT_ENCODING,
            "accept" => ACCEPT,
            "x-up-devcap-post-charset" => UP_DEVCAP_CHARSET,
            "request-range" => REQUEST_RANGE,
            _ => RESTRICTED_HEADERS
                .iter()
                .position(|h| *h == name)
                .map(|i| 1 << i)
                .or_else(|| {
                    SEC_FETCH_VALUES
                        .iter()
                        .position(|(h, _)| *h == name)
                        .map(|i| 1 << (SEC_FETCH + i as u32))
                })
                .unwrap_or(0),
        };
    }
    present
}

fn headers(request: &RequestView<'_>, present: u32, out: &mut Vec<Anomaly>) {
    match request
        .headers
        .get(HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
    {
        None if request.version == Version::HTTP_11 && request.uri.authority().is_none() => {
            out.push(anomaly(
                "protocol.host_missing",
                Severity::Warning,
                "header:host",
                "no Host header",
            ));
        }
        Some(host) if host.trim().is_empty() => out.push(anomaly(
            "protocol.host_empty",
            Severity::Critical,
            "header:host",
            "empty Host header",
        )),
        Some(host) => {
            let name = if host.starts_with('[') {
                host.split(']').next().unwrap_or("").trim_start_matches('[')
            } else {
                host.split(':').next().unwrap_or("")
            };
            // Internal clients, health checks, load generators and service meshes address
            // APIs by IP every day: a notice, and only from paranoia level 2, so that it
            // never tips ordinary requests (a large upload, a bodiless POST) over the
            // threshold at the default level.
            if name.parse::<std::net::IpAddr>().is_ok() {
                out.push(
                    anomaly(
                        "protocol.host_is_ip",
                        Severity::Notice,
                        "header:host",
                        host.clone(),
                    )
                    .at_paranoia(2),
                );
            }
        }
        None => {}
    }
    for (i, name) in RESTRICTED_HEADERS.iter().enumerate() {
        if present & (1 << i) != 0 {
            out.push(anomaly(
                "protocol.restricted_header",
                Severity::Critical,
                format!("header:{name}"),
                *name,
            ));
        }
    }
    if present & REQUEST_RANGE != 0 {
        out.push(anomaly(
            "protocol.request_range",
            Severity::Critical,
            "header:request-range",
            "obsolete Request-Range header",
        ));
    }
    if let Some(range) = request
        .headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let ranges: Vec<&str> = range
            .trim_start_matches("bytes=")
            .split(',')
            .map(str::trim)
            .collect();
        // The first range's end before its start is malformed; later ranges are left to the
        // backend, which merges or ignores them.
        let descending = ranges.first().is_some_and(|r| match r.split_once('-') {
            Some((a, b)) => matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(a), Ok(b)) if b < a),
            None => false,
        });
        // PDF viewers fetch many ranges of one document; anything else asking for more than five
        // is a range amplification attempt.
        let most = if request.uri.path().to_ascii_lowercase().ends_with(".pdf") {
            62
        } else {
            5
        };
        if ranges.len() > most || descending {
            out.push(anomaly(
                "protocol.range_abuse",
                Severity::Critical,
                "header:range",
                range.to_string(),
            ));
        }
    }
    if let Some(value) = request
        .headers
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        && !valid_content_range(value)
    {
        out.push(anomaly(
            "protocol.invalid_content_range",
            Severity::Critical,
            "header:content-range",
            value.to_string(),
        ));
    }
    for value in request.headers.get_all(http::header::CONNECTION) {
        let tokens: Vec<String> = String::from_utf8_lossy(value.as_bytes())
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        let duplicated = tokens
            .iter()
            .enumerate()
            .any(|(i, t)| tokens[..i].contains(t));
        let conflicting =
            tokens.iter().any(|t| t == "close") && tokens.iter().any(|t| t == "keep-alive");
        if duplicated || conflicting {
            out.push(anomaly(
                "protocol.connection_header",
                Severity::Critical,
                "header:connection",
                tokens.join(","),
            ));
        }
    }
}

fn valid_content_range(value: &str) -> bool {
    let Some(rest) = value.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((range, total)) = rest.split_once('/') else {
        return false;
    };
    let total_ok = total == "*" || total.bytes().all(|b| b.is_ascii_digit()) && !total.is_empty();
    let range_ok = range == "*"
        || range.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        });
    total_ok && range_ok
}

/// The Content-Type header; then, when it is well formed, what the multipart checks found in
/// part headers (`part_headers`) and in part names and form charsets (`part_names`).
fn content_type(
    request: &RequestView<'_>,
    part_headers: Vec<Anomaly>,
    part_names: Vec<Anomaly>,
    out: &mut Vec<Anomaly>,
) {
    let values: Vec<String> = request
        .headers
        .get_all(CONTENT_TYPE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let has_body = request.body.is_some_and(|b| !b.is_empty());
    if values.len() > 1 && has_body {
        out.push(anomaly(
            "protocol.duplicate_content_type",
            Severity::Critical,
            "header:content-type",
            values.join(" | "),
        ));
    }
    let Some(ct) = values.first() else {
        // A body announced by Content-Length (a chunked body without a type is a stream the
        // backend reads as bytes).
        if request.body.is_some_and(|b| !b.is_empty())
            && request.headers.contains_key(CONTENT_LENGTH)
        {
            // Without a type the backend guesses, and its guess is not the one inspected.
            // A notice, as in CRS: scripts and internal clients often omit the type. It
            // adds to real evidence in the body without refusing such clients outright.
            out.push(anomaly(
                "protocol.body_without_content_type",
                Severity::Notice,
                "header:content-type",
                "body without Content-Type",
            ));
        }
        return;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let well_formed = media
        .split_once('/')
        .is_some_and(|(t, s)| is_token(t) && is_token(s));
    if !well_formed {
        out.push(anomaly(
            "protocol.invalid_content_type",
            Severity::Critical,
            "header:content-type",
            ct.clone(),
        ));
        return;
    }
    if media.starts_with("multipart/") && !KNOWN_MULTIPART.contains(&media.as_str()) {
        out.push(anomaly(
            "protocol.unknown_multipart",
            Severity::Critical,
            "header:content-type",
            ct.clone(),
        ));
    }
    if !media.starts_with("multipart/") && ct.to_ascii_lowercase().contains("boundary=") {
        out.push(anomaly(
            "protocol.boundary_without_multipart",
            Severity::Critical,
            "header:content-type",
            ct.clone(),
        ));
    }
    // Parameters: each must be `name=value`, charset once and allowed.
    let params = parameters(ct);
    let rest = ct.split_once(';').map_or("", |(_, r)| r);
    let malformed = rest
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| !p.contains('='));
    if malformed {
        out.push(anomaly(
            "protocol.content_type_params",
            Severity::Critical,
            "header:content-type",
            ct.clone(),
        ));
    }
    let charsets: Vec<&String> = params
        .iter()
        .filter(|(k, _)| k == "charset")
        .map(|(_, v)| v)
        .collect();
    if charsets.len() > 1 || ct.to_ascii_lowercase().matches("charset").count() > 1 {
        out.push(anomaly(
            "protocol.multiple_charsets",
            Severity::Critical,
            "header:content-type",
            ct.clone(),
        ));
    }
    for charset in charsets.into_iter().filter(|_| has_body) {
        let cs = charset
            .trim_matches(|c| c == '"' || c == '\'')
            .to_ascii_lowercase();
        if !ALLOWED_CHARSETS.contains(&cs.as_str()) {
            out.push(anomaly(
                "protocol.charset",
                Severity::Critical,
                "header:content-type",
                ct.clone(),
            ));
        }
    }
    // Struts2-style expressions in the header (CVE-2017-5638).
    if ct.contains("%{") || ct.contains("${") {
        out.push(anomaly(
            "protocol.content_type_expression",
            Severity::Critical,
            "header:content-type",
            ct.clone(),
        ));
    }
    out.extend(part_headers);
    out.extend(part_names);
}

/// Multipart part headers: charsets and the deprecated Content-Transfer-Encoding.
fn part_header(t: &TargetRef<'_>, out: &mut Vec<Anomaly>) {
    if t.name_is("content-type") {
        for (k, v) in parameters(t.value) {
            if k == "charset"
                && !ALLOWED_CHARSETS.contains(&v.trim_matches('"').to_ascii_lowercase().as_str())
            {
                out.push(anomaly(
                    "protocol.part_charset",
                    Severity::Critical,
                    t.display(),
                    t.value,
                ));
            }
        }
    } else if t.name_is("content-transfer-encoding") {
        out.push(anomaly(
            "protocol.part_transfer_encoding",
            Severity::Critical,
            t.display(),
            t.value,
        ));
    }
}

/// Quotes, semicolons and backslashes in part names and file names make parsers disagree on
/// where a name ends.
fn multipart_name(t: &TargetRef<'_>, out: &mut Vec<Anomaly>) {
    let suspicious = match t.kind {
        TargetKind::MultipartFilename => {
            t.value.contains(['"', ';', '\\']) || t.value.chars().any(char::is_control)
        }
        _ => t.value.contains(['"', ';', '\\', '\'', '=']) || t.value.chars().any(char::is_control),
    };
    if suspicious {
        out.push(anomaly(
            "protocol.multipart_name_chars",
            Severity::Critical,
            t.display(),
            t.value,
        ));
    }
}

/// A form's `_charset_` field outside the allowed charsets.
fn form_charset(t: &TargetRef<'_>, out: &mut Vec<Anomaly>) {
    if t.name_is("_charset_")
        && !ALLOWED_CHARSETS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(t.value))
    {
        out.push(anomaly(
            "protocol.form_charset",
            Severity::Critical,
            t.display(),
            t.value,
        ));
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Encoding abuse in the raw query string and form body: malformed `%` escapes, IIS `%u`,
/// overlong UTF-8, null bytes and other control characters.
fn encodings(request: &RequestView<'_>, collected: &Collected, out: &mut Vec<Anomaly>) {
    let form_body = request
        .body
        .filter(|_| {
            collected.body.media_type.as_deref() == Some("application/x-www-form-urlencoded")
        })
        .map(|body| String::from_utf8_lossy(body));
    let raw_sources = [
        ("query", request.query()),
        ("path", Some(request.path())),
        ("body", form_body.as_deref()),
    ];
    for (target, raw) in raw_sources {
        // Every check below is about `%` escapes (the text itself is valid UTF-8).
        let Some(raw) = raw.filter(|raw| raw.contains('%')) else {
            continue;
        };
        let lower = raw.to_ascii_lowercase();
        if has_malformed_escape(raw) {
            out.push(anomaly(
                "protocol.invalid_url_encoding",
                Severity::Critical,
                target,
                raw,
            ));
        }
        let double_encoded = lower
            .match_indices("%25")
            .filter(|(i, _)| {
                lower
                    .get(i + 3..i + 5)
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    // `%25%37%33`: the hex digits of the inner escape encoded as well.
                    || lower.get(i + 3..i + 6).is_some_and(is_encoded_hex_digit)
            })
            .count();
        if double_encoded > 0 {
            let severity = if double_encoded >= 3 {
                Severity::Critical
            } else {
                Severity::Error
            };
            out.push(anomaly(
                "protocol.double_url_encoding",
                severity,
                target,
                raw,
            ));
        }
        if lower.contains("%u")
            && crate::normalize::url::percent_decode(raw, false) != raw
            && has_iis_escape(&lower)
        {
            out.push(anomaly(
                "protocol.iis_unicode_encoding",
                Severity::Critical,
                target,
                raw,
            ));
        }
        let decoded_bytes = percent_decode_bytes(raw);
        if has_overlong_utf8(&decoded_bytes) {
            out.push(anomaly(
                "protocol.overlong_utf8",
                Severity::Critical,
                target,
                raw,
            ));
        } else if target != "body" && std::str::from_utf8(&decoded_bytes).is_err() {
            // URLs are UTF-8; a form body may legitimately declare another charset.
            out.push(anomaly(
                "protocol.invalid_utf8",
                Severity::Error,
                target,
                raw,
            ));
        }
    }
}

/// Null bytes and control characters in values, names, headers and cookies.
fn control_characters(t: &TargetRef<'_>, out: &mut Vec<Anomaly>) {
    // Most values have no escape and no byte of a control character (C0, DEL, or the lead
    // byte 0xC2 of the C1 controls): nothing to decode or look at.
    if !t
        .value
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b == 0xc2 || b == b'%')
    {
        return;
    }
    // A Host is a name or an address, never percent-encoded: `%00` there is text.
    let decoded = if t.kind == TargetKind::Header && t.name_is("host") {
        std::borrow::Cow::Borrowed(t.value)
    } else {
        percent_decode(t.value, false)
    };
    if let Some(c) = decoded
        .chars()
        .find(|&c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    {
        let rule = if c == '\0' {
            "protocol.null_byte"
        } else {
            "protocol.control_character"
        };
        out.push(anomaly(
            rule,
            Severity::Critical,
            t.display(),
            format!("U+{:04X}", c as u32),
        ));
    }
}

/// A `%` followed by one hex digit and a non-hex character, or by a letter that is not `u`:
/// a broken escape aimed at a lenient decoder. A `%` followed by a space or punctuation is a
/// literal percent sign some clients forget to encode.
fn has_malformed_escape(raw: &str) -> bool {
    has_invalid_escape(raw)
        && raw.as_bytes().windows(3).any(|w| {
            w[0] == b'%'
                && ((w[1].is_ascii_hexdigit() && !w[2].is_ascii_hexdigit() && w[2] != b'%')
                    || (w[1].is_ascii_alphabetic()
                        && !w[1].is_ascii_hexdigit()
                        && w[1] != b'u'
                        && w[1] != b'U'))
        })
}

/// `%30`-`%39`, `%41`-`%46`, `%61`-`%66` (lowercase input): a percent-encoded hex digit.
fn is_encoded_hex_digit(escape: &str) -> bool {
    match escape.as_bytes() {
        [b'%', b'3', d] => d.is_ascii_digit(),
        [b'%', b'4' | b'6', d] => (b'1'..=b'6').contains(d),
        _ => false,
    }
}

fn has_iis_escape(lower: &str) -> bool {
    lower.match_indices("%u").any(|(i, _)| {
        lower
            .get(i + 2..i + 6)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

fn percent_decode_bytes(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (
                (b[i + 1] as char).to_digit(16),
                (b[i + 2] as char).to_digit(16),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Overlong UTF-8 encodings (`%c0%af` for `/`, `%e0%80%ae` for `.`): never sent by a real
/// client, only by someone hiding a character from a filter.
fn has_overlong_utf8(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .any(|w| matches!(w[0], 0xc0 | 0xc1) && (0x80..0xc0).contains(&w[1]))
        || bytes
            .windows(2)
            .any(|w| w[0] == 0xe0 && (0x80..0xa0).contains(&w[1]))
        || bytes
            .windows(2)
            .any(|w| w[0] == 0xf0 && (0x80..0x90).contains(&w[1]))
}

/// `_method` overrides (query or form) and the override headers: a way around method-based
/// authorisation.
/// A method override (`_method`, `X-HTTP-Method-Override`) to anything but `post` on a POST.
fn method_override(method: &Method, t: &TargetRef<'_>, out: &mut Vec<Anomaly>) {
    let is_override = match t.kind {
        TargetKind::QueryValue | TargetKind::FormValue => t.name_is("_method"),
        _ => {
            t.name_is("x-http-method-override")
                || t.name_is("x-http-method")
                || t.name_is("x-method-override")
        }
    };
    if !is_override {
        return;
    }
    let value = t.value.trim();
    let method_like =
        (3..=10).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphabetic());
    // Rails-style forms send `_method=post` on a POST; turning a GET into a POST is how a
    // link forges a state-changing request.
    let harmless = value.eq_ignore_ascii_case("post") && *method == Method::POST;
    if method_like && !harmless {
        out.push(anomaly(
            "protocol.method_override",
            Severity::Critical,
            t.display(),
            value.to_string(),
        ));
    }
}

/// Cache-Control directives a client may send (RFC 9111, 5.2.1), with whether each takes a
/// value: `Some(true)` a delta-seconds is required, `Some(false)` optional, `None` none allowed.
const REQUEST_CACHE_DIRECTIVES: &[(&str, Option<bool>)] = &[
    ("max-age", Some(true)),
    ("max-stale", Some(false)),
    ("min-fresh", Some(true)),
    ("no-cache", None),
    ("no-store", None),
    ("no-transform", None),
    ("only-if-cached", None),
    ("stale-if-error", Some(true)),
    // A response directive, but `no-cache, no-store, must-revalidate` is an idiom clients copy
    // from response headers into requests every day.
    ("must-revalidate", None),
];

/// Content codings a client may offer (IANA HTTP Content Coding Registry, plus the historic
/// and experimental ones real clients still list).
const CONTENT_CODINGS: &[&str] = &[
    "*",
    "identity",
    "gzip",
    "x-gzip",
    "deflate",
    "compress",
    "x-compress",
    "br",
    "zstd",
    "dcb",
    "dcz",
    "aes128gcm",
    "exi",
    "pack200-gzip",
    "sdch",
    "bzip2",
    "lzma",
    "xz",
    "lz4",
    "snappy",
];

/// Fixed vocabularies of the fetch-metadata and client-hint headers browsers set themselves
/// (scripts cannot): any other value was written by a tool, not a browser.
const SEC_FETCH_VALUES: &[(&str, &[&str])] = &[
    (
        "sec-fetch-site",
        &["cross-site", "same-origin", "same-site", "none"],
    ),
    (
        "sec-fetch-mode",
        &["cors", "navigate", "no-cors", "same-origin", "websocket"],
    ),
    (
        "sec-fetch-dest",
        &[
            "audio",
            "audioworklet",
            "document",
            "embed",
            "empty",
            "fencedframe",
            "font",
            "frame",
            "iframe",
            "image",
            "json",
            "manifest",
            "object",
            "paintworklet",
            "report",
            "script",
            "serviceworker",
            "sharedworker",
            "style",
            "track",
            "video",
            "webidentity",
            "worker",
            "xslt",
        ],
    ),
    // Structured-field booleans.
    ("sec-fetch-user", &["?1", "?0"]),
    ("sec-ch-ua-mobile", &["?1", "?0"]),
];

/// Headers with a fixed grammar: a value that does not fit is not something a client library
/// or browser produces, so it was crafted (to reach a parser the gateway does not model, to
/// poison a cache, or to make the response unreadable to response inspection).
fn header_grammar(request: &RequestView<'_>, present: u32, out: &mut Vec<Anomaly>) {
    // The values of a header the request has (`bit` of `present`), none otherwise.
    let values = |name: &'static str, bit: u32| {
        (present & bit != 0)
            .then(|| request.headers.get_all(name).iter())
            .into_iter()
            .flatten()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    for value in values("cache-control", CACHE_CONTROL) {
        if let Some(why) = invalid_cache_control(&value) {
            out.push(anomaly(
                "protocol.cache_control",
                Severity::Critical,
                "header:cache-control",
                format!("{why}: {value}"),
            ));
        }
    }
    for value in values("accept-encoding", ACCEPT_ENCODING) {
        if let Some(why) = invalid_accept_encoding(&value) {
            out.push(anomaly(
                "protocol.accept_encoding",
                Severity::Critical,
                "header:accept-encoding",
                format!("{why}: {value}"),
            ));
        }
    }
    for (i, (name, allowed)) in SEC_FETCH_VALUES.iter().enumerate() {
        for value in values(name, 1 << (SEC_FETCH + i as u32)) {
            let v = value.trim().to_ascii_lowercase();
            if !allowed.contains(&v.as_str()) {
                out.push(anomaly(
                    "protocol.fetch_metadata",
                    Severity::Critical,
                    format!("header:{name}"),
                    value,
                ));
            }
        }
    }
    // A charset parameter in Accept asks for the response in that charset: EBCDIC, UTF-16 or
    // UTF-7 responses slip past response inspection (and reflect payloads in a form filters
    // do not read).
    for value in values("accept", ACCEPT) {
        let bad = value.split(',').any(|range| {
            range.split(';').skip(1).any(|param| {
                param.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("charset") && !allowed_charset(v)
                })
            })
        });
        if bad {
            out.push(anomaly(
                "protocol.accept_charset",
                Severity::Critical,
                "header:accept",
                value,
            ));
        }
    }
    // ASP.NET decodes a form body in the charset this header names when the User-Agent is an
    // `UP` (Openwave) browser: an EBCDIC body then reads differently to the backend than to
    // the gateway.
    let up_browser = request
        .headers
        .get(http::header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(b"UP"));
    if up_browser {
        for value in values("x-up-devcap-post-charset", UP_DEVCAP_CHARSET) {
            if !allowed_charset(&value) {
                out.push(anomaly(
                    "protocol.charset",
                    Severity::Critical,
                    "header:x-up-devcap-post-charset",
                    value,
                ));
            }
        }
    }
}

fn allowed_charset(value: &str) -> bool {
    let cs = value
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase();
    ALLOWED_CHARSETS.contains(&cs.as_str())
}

/// Why a request Cache-Control value does not fit RFC 9111 (request directives only, values
/// where they belong, no empty list elements), if it does not.
fn invalid_cache_control(value: &str) -> Option<&'static str> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    for element in value.split(',') {
        let element = element.trim();
        if element.is_empty() {
            // Tolerated by recipients (RFC 9110, 5.6.1.2), produced by no client.
            return Some("empty list element");
        }
        let (name, arg) = match element.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (element, None),
        };
        let name = name.to_ascii_lowercase();
        let Some((_, takes)) = REQUEST_CACHE_DIRECTIVES.iter().find(|(n, _)| *n == name) else {
            return Some("not a request directive");
        };
        let seconds = |a: &str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit());
        let ok = match (takes, arg) {
            (None, None) | (Some(false), None) => true,
            (Some(_), Some(a)) => seconds(a),
            (None, Some(_)) | (Some(true), None) => false,
        };
        if !ok {
            return Some("directive argument");
        }
    }
    None
}

/// Why an Accept-Encoding value does not fit RFC 9110, 12.5.3 (`coding [; q=weight]` list of
/// registered codings), if it does not. An empty value is valid (identity only).
fn invalid_accept_encoding(value: &str) -> Option<&'static str> {
    for element in value.split(',') {
        let mut parts = element.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if coding.is_empty() {
            if element.trim().is_empty() {
                continue;
            }
            return Some("weight without a coding");
        }
        if !is_token(coding) {
            return Some("coding is not a token");
        }
        if !CONTENT_CODINGS.contains(&coding.to_ascii_lowercase().as_str()) {
            return Some("unknown content coding");
        }
        for param in parts {
            let Some((k, v)) = param.split_once('=') else {
                return Some("parameter without a value");
            };
            if !k.trim().eq_ignore_ascii_case("q") || !is_qvalue(v.trim()) {
                return Some("invalid weight");
            }
        }
    }
    None
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, leniently allowing a
/// missing leading zero (`.5`), which some clients send.
fn is_qvalue(v: &str) -> bool {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    matches!(int, "" | "0" | "1")
        && !(int.is_empty() && frac.is_empty())
        && frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int != "1" || frac.bytes().all(|b| b == b'0'))
}

/// Cookie smuggling with the legacy `$Version` attribute: RFC 2109 parsers (Tomcat, Jetty,
/// Undertow) then read a double-quoted value up to its closing quote, across `;`, so cookies
/// hidden inside the quotes (`session="x; PHPSESSID=evil; a=b"`) reach the application while
/// any other parser sees different cookies.
fn cookie_smuggling(request: &RequestView<'_>, out: &mut Vec<Anomaly>) {
    for value in request.headers.get_all(http::header::COOKIE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        if !text
            .split(';')
            .any(|c| c.trim_start().to_ascii_lowercase().starts_with("$version"))
        {
            continue;
        }
        let smuggles = text.split(';').any(|c| {
            c.split_once('=').is_some_and(|(_, v)| {
                let v = v.trim_start().trim_start_matches('\\');
                v.starts_with('"') && !v[1..].contains('"')
            })
        });
        if smuggles {
            out.push(anomaly(
                "protocol.cookie_smuggling",
                Severity::Critical,
                "header:cookie",
                text.into_owned(),
            ));
        }
    }
}

/// The last word of an argument name: `mosConfig_absolute_path` → `path`, `_CONF[path]` →
/// `path`, `$.settings.templateDir` → `dir`, lowercase.
fn last_name_word(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let start = trimmed
        .char_indices()
        .rev()
        .find(|&(i, c)| {
            !c.is_ascii_alphanumeric()
                // A camelCase boundary: an upper-case letter after a lower-case one.
                || (c.is_ascii_uppercase()
                    && trimmed[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|p| p.is_ascii_lowercase()))
        })
        .map_or(0, |(i, c)| {
            if c.is_ascii_alphanumeric() {
                i
            } else {
                i + c.len_utf8()
            }
        });
    trimmed[start..].to_ascii_lowercase()
}

/// Words that make an argument a file-system location the application builds file names on.
const PATH_NAME_WORDS: &[&str] = &[
    "path",
    "dir",
    "directory",
    "basedir",
    "abspath",
    "include",
    "inc",
    "require",
];

/// Remote file inclusion through a base path: an argument named as a directory or path
/// (`mosConfig_absolute_path`, `_CONF[path]`, `include_dir`) whose value is a remote URL to a
/// directory (no path, or one ending in `/`). The application appends a file name and includes
/// `http://attacker/` + `config.php`; a real path argument never holds a remote base URL.
fn remote_include_base(t: &TargetRef<'_>, out: &mut Vec<Anomaly>) {
    // The value first: it is cheaper to look at than the name (a JSON path is written out).
    // Most values are settled by their first byte (after ASCII whitespace; other whitespace
    // is left to `trim`).
    let first = t
        .value
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'));
    if !matches!(first, Some(b'h' | b'H' | b'f' | b'F' | 0x80..)) {
        return;
    }
    let value = t.value.trim();
    let Some(rest) = ["http://", "https://", "ftp://", "ftps://"]
        .iter()
        .find_map(|s| {
            value
                .get(..s.len())
                .filter(|p| p.eq_ignore_ascii_case(s))
                .map(|_| &value[s.len()..])
        })
    else {
        return;
    };
    let path = rest.find('/').map_or("", |p| &rest[p..]);
    if !(path.is_empty() || path.ends_with('/')) {
        return;
    }
    if PATH_NAME_WORDS.contains(&last_name_word(&t.name()).as_str()) {
        out.push(Anomaly::new(
            "rfi.remote_base_path",
            "rfi",
            Severity::Critical,
            t.display(),
            t.value,
        ));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;

    use apiguard_model::{ClientInfo, RequestView};
    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

    use crate::{Engine, EngineConfig};

    /// The rule ids an engine at `paranoia` reports for a request.
    pub(crate) fn rule_ids(
        paranoia: u8,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Vec<String> {
        let engine = Engine::new(
            EngineConfig {
                paranoia,
                ..EngineConfig::default()
            },
            &[],
        )
        .expect("engine builds");
        let mut map = HeaderMap::new();
        map.insert("host", HeaderValue::from_static("api.example.com"));
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        if !body.is_empty() {
            map.insert("content-length", HeaderValue::from(body.len()));
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri = uri.parse().unwrap();
        let body = Bytes::from(body.to_string());
        let client = ClientInfo {
            peer: SocketAddr::from(([192, 0, 2, 1], 5555)),
            tls: true,
            client_cert_subject: None,
            client_cert_sans: vec![],
        };
        let view = RequestView {
            method: &method,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &map,
            client: &client,
            route: "test",
            request_id: "t",
            body: Some(&body),
        };
        engine
            .inspect(&view)
            .findings
            .into_iter()
            .map(|f| f.rule_id.to_string())
            .collect()
    }

    fn header_rules(name: &str, value: &str) -> Vec<String> {
        rule_ids(1, "GET", "/", &[(name, value)], "")
    }

    #[test]
    fn cache_control_grammar() {
        for bad in [
            "private",
            "foo=bar",
            "max-age=1, foo=bar",
            "max-age=1,,,max-stale=2",
            "max-age=abc",
            "no-cache=1",
            "min-fresh",
        ] {
            assert!(
                header_rules("cache-control", bad).contains(&"protocol.cache_control".into()),
                "missed: {bad}"
            );
        }
        for good in [
            "no-cache",
            "max-age=0",
            "max-age=123, max-stale, no-cache",
            "no-cache, no-store, must-revalidate",
            "max-stale=60",
            "only-if-cached",
            "",
        ] {
            assert!(
                !header_rules("cache-control", good).contains(&"protocol.cache_control".into()),
                "false positive: {good}"
            );
        }
    }

    #[test]
    fn accept_encoding_grammar() {
        for bad in [
            "foobar",
            "AAAA,AAAA&AA&**AAAA**A",
            "gzip;q=2",
            "gzip;level=9",
            ";q=0.5",
        ] {
            assert!(
                header_rules("accept-encoding", bad).contains(&"protocol.accept_encoding".into()),
                "missed: {bad}"
            );
        }
        for good in [
            "gzip, deflate, br, zstd",
            "gzip,deflate",
            "",
            "gzip;q=1.0, identity; q=0.5, *;q=0",
            "compress;q=0.5, gzip;q=1.0",
            "aes128gcm, br, compress, deflate, exi, identity, pack200-gzip, x-compress, x-gzip",
            "br;q=.5",
        ] {
            assert!(
                !header_rules("accept-encoding", good).contains(&"protocol.accept_encoding".into()),
                "false positive: {good}"
            );
        }
    }

    #[test]
    fn fetch_metadata_vocabularies() {
        for (name, bad) in [
            ("sec-fetch-user", "foo"),
            ("sec-ch-ua-mobile", "foo"),
            ("sec-fetch-site", "evil.com"),
            ("sec-fetch-mode", "navigate'"),
            ("sec-fetch-dest", "<script>"),
        ] {
            assert!(
                header_rules(name, bad).contains(&"protocol.fetch_metadata".into()),
                "missed: {name}: {bad}"
            );
        }
        for (name, good) in [
            ("sec-fetch-user", "?1"),
            ("sec-fetch-user", "?0"),
            ("sec-ch-ua-mobile", "?0"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            // Client hints with a free grammar are not judged.
            ("sec-ch-ua", "Test?"),
        ] {
            assert!(
                header_rules(name, good).is_empty(),
                "false positive: {name}: {good}"
            );
        }
    }

    #[test]
    fn accept_charsets_and_devcap_charset() {
        for bad in [
            "text/html;q=0.9;charset=CP1026,*/*;q=0.8",
            "text/html; charset=\"CP1026\"",
            "text/html;q=0.9;charset=\"iso-8859-1\",*/*;q=0.8;charset=utf-16",
        ] {
            assert!(
                header_rules("accept", bad).contains(&"protocol.accept_charset".into()),
                "missed: {bad}"
            );
        }
        for good in [
            "text/html;q=0.9;charset=\"windows-1252\";,*/*;q=0.8",
            "text/html;q=0.9;charset=utf-8, *;q=0.1",
            "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2",
            "",
        ] {
            assert!(
                header_rules("accept", good).is_empty(),
                "false positive: {good}"
            );
        }
        let body = "%89%95%97%A4%A3%F1=%A7%A7%A7";
        let form = ("content-type", "application/x-www-form-urlencoded");
        let devcap = ("x-up-devcap-post-charset", "ibm500");
        let up = rule_ids(
            1,
            "POST",
            "/",
            &[form, devcap, ("user-agent", "UP.Browser/6")],
            body,
        );
        assert!(up.contains(&"protocol.charset".into()), "{up:?}");
        // Without an UP browser, the header is not honoured by anything.
        let other = rule_ids(
            1,
            "POST",
            "/",
            &[form, devcap, ("user-agent", "curl/8")],
            body,
        );
        assert!(!other.contains(&"protocol.charset".into()), "{other:?}");
    }

    #[test]
    fn cookie_smuggling_with_version() {
        for bad in [
            "$Version=1; session=\"deadbeef; PHPSESSID=secret; dummy=qaz\"",
            "$Version=1; session=\\\"deadbeef; PHPSESSID=secret; dummy=qaz\\\"",
        ] {
            assert!(
                header_rules("cookie", bad).contains(&"protocol.cookie_smuggling".into()),
                "missed: {bad}"
            );
        }
        for good in [
            "session=\"deadbeef\"; PHPSESSID=abc",
            "$existingUser=admin",
            "$Version=1; a=\"quoted\"; b=2",
        ] {
            assert!(
                !header_rules("cookie", good).contains(&"protocol.cookie_smuggling".into()),
                "false positive: {good}"
            );
        }
    }

    #[test]
    fn double_encoding_of_hex_digits() {
        let ids = rule_ids(
            1,
            "GET",
            "/?p=%25%37%33%25%36%46%25%36%44%25%36%35",
            &[],
            "",
        );
        assert!(
            ids.contains(&"protocol.double_url_encoding".into()),
            "{ids:?}"
        );
        let ids = rule_ids(1, "GET", "/?discount=25%25&q=%3Ca%3E", &[], "");
        assert!(
            !ids.contains(&"protocol.double_url_encoding".into()),
            "{ids:?}"
        );
    }

    #[test]
    fn remote_base_path_arguments() {
        for uri in [
            "/x.php?mosConfig_absolute_path=https://foo.bar",
            "/x.php?_CONF[path]=https://foo.bar/",
            "/x.php?includeDir=ftp://10.1.1.1/",
        ] {
            assert!(
                rule_ids(1, "GET", uri, &[], "").contains(&"rfi.remote_base_path".into()),
                "missed: {uri}"
            );
        }
        for uri in [
            "/x?image_path=https://cdn.example.com/a.png",
            "/x?redirect=https://example.com/",
            "/x?path=/home/user/docs/",
            "/x?callback_url=https://example.com/",
        ] {
            assert!(
                !rule_ids(1, "GET", uri, &[], "").contains(&"rfi.remote_base_path".into()),
                "false positive: {uri}"
            );
        }
        assert_eq!(super::last_name_word("mosConfig_absolute_path"), "path");
        assert_eq!(super::last_name_word("_CONF[path]"), "path");
        assert_eq!(super::last_name_word("$.settings.templateDir"), "dir");
        assert_eq!(super::last_name_word("pathé"), "path");
    }

    #[test]
    fn bracket_names_that_parsers_read_differently() {
        let ids = rule_ids(1, "GET", "/?foo[1]a[2]=bar", &[], "");
        assert!(
            ids.contains(&"protocol.parameter_name_brackets".into()),
            "{ids:?}"
        );
        for uri in [
            "/?foo[1]=bar",
            "/?a[b][c]=1",
            "/?items[0].name=x",
            "/?ids[]=1",
        ] {
            assert!(
                rule_ids(1, "GET", uri, &[], "").is_empty(),
                "false positive: {uri}"
            );
        }
    }
}
