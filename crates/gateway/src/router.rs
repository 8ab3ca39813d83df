//! Route matching. Routes are sorted once, most specific first, so that a request takes the
//! first route that matches and the answer never depends on the order of the file except to
//! break exact ties.
//!
//! Specificity, compared in this order (docs/configuration.md, "Route matching"):
//! 1. host: exact name > wildcard (`*.example.com`, longer suffix first) > no host condition;
//! 2. path: exact > template > prefix > no path condition; within a kind, more literal
//!    characters first (for templates: more literal segments, then more characters);
//! 3. more header conditions first;
//! 4. a method list before no method list;
//! 5. earlier in the file first.

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// How a route's host condition is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// The suffix including the dot: `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

impl HostMatch {
    pub fn parse(host: Option<&str>) -> Result<Self, String> {
        let Some(host) = host else {
            return Ok(HostMatch::Any);
        };
        let host = host.trim().to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && !s.starts_with('.')
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if !valid(suffix) {
                return Err(format!("`{host}` is not a valid wildcard host"));
            }
            Ok(HostMatch::Wildcard(format!(".{suffix}")))
        } else if valid(&host) {
            Ok(HostMatch::Exact(host))
        } else {
            Err(format!(
                "`{host}` is not a valid host name (no port, no scheme)"
            ))
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(name) => (2, name.len()),
            HostMatch::Wildcard(suffix) => (1, suffix.len()),
            HostMatch::Any => (0, 0),
        }
    }
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param,
}

/// A compiled path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatcher {
    Any,
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
}

impl PathMatcher {
    pub fn exact(path: &str) -> Result<Self, String> {
        check_path(path)?;
        Ok(PathMatcher::Exact(path.to_owned()))
    }

    pub fn prefix(path: &str) -> Result<Self, String> {
        check_path(path)?;
        // `/api/` and `/api` mean the same: the segment boundary is implied.
        let trimmed = path.trim_end_matches('/');
        Ok(PathMatcher::Prefix(trimmed.to_owned()))
    }

    pub fn template(path: &str) -> Result<Self, String> {
        check_path(path)?;
        let mut segments = Vec::new();
        for segment in path[1..].split('/') {
            if segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2 {
                let name = &segment[1..segment.len() - 1];
                if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "template parameter `{{{name}}}` must be a plain name"
                    ));
                }
                segments.push(Segment::Param);
            } else if segment.contains(['{', '}']) {
                return Err(format!(
                    "template segment `{segment}`: a parameter must be a whole segment, like `{{id}}`"
                ));
            } else {
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        Ok(PathMatcher::Template(segments))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/' || p.is_empty())
            }
            PathMatcher::Template(segments) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for segment in segments {
                    match (segment, parts.next()) {
                        (Segment::Literal(l), Some(p)) if l == p => {}
                        (Segment::Param, Some(p)) if !p.is_empty() => {}
                        _ => return false,
                    }
                }
                parts.next().is_none()
            }
        }
    }

    fn rank(&self) -> (u8, usize, usize) {
        match self {
            PathMatcher::Exact(p) => (3, p.len(), 0),
            PathMatcher::Template(segments) => {
                let literals: Vec<&String> = segments
                    .iter()
                    .filter_map(|s| match s {
                        Segment::Literal(l) => Some(l),
                        Segment::Param => None,
                    })
                    .collect();
                (2, literals.len(), literals.iter().map(|l| l.len()).sum())
            }
            PathMatcher::Prefix(p) => (1, p.len(), 0),
            PathMatcher::Any => (0, 0, 0),
        }
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` must start with `/`"));
    }
    if path.contains(['?', '#', ' ']) {
        return Err(format!("path `{path}` must not contain `?`, `#` or spaces"));
    }
    Ok(())
}

/// A header condition.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub name: HeaderName,
    /// `None`: the header must be present with any value.
    pub value: Option<HeaderValue>,
}

/// A route's complete match condition.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    pub host: HostMatch,
    pub path: PathMatcher,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderCondition>,
}

impl RouteMatcher {
    fn matches(&self, method: &Method, host: &str, path: &str, headers: &HeaderMap) -> bool {
        self.host.matches(host)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.path.matches(path)
            && self.headers.iter().all(|c| match &c.value {
                None => headers.contains_key(&c.name),
                Some(v) => headers.get_all(&c.name).iter().any(|h| h == v),
            })
    }

    fn specificity(&self) -> ((u8, usize), (u8, usize, usize), usize, bool) {
        (
            self.host.rank(),
            self.path.rank(),
            self.headers.len(),
            !self.methods.is_empty(),
        )
    }
}

/// The compiled route table: route matchers with the index of the route they select.
#[derive(Debug, Default)]
pub struct Router {
    entries: Vec<(RouteMatcher, usize)>,
}

impl Router {
    /// Builds the table from matchers given in file order.
    pub fn new(matchers: Vec<RouteMatcher>) -> Self {
        let mut entries: Vec<(RouteMatcher, usize)> = matchers.into_iter().zip(0..).collect();
        // A stable sort keeps file order among equally specific routes.
        entries.sort_by_key(|(m, _)| Reverse(m.specificity()));
        Router { entries }
    }

    /// The index (in file order) of the route a request takes, if any.
    pub fn find(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<usize> {
        self.entries
            .iter()
            .find(|(m, _)| m.matches(method, host, path, headers))
            .map(|(_, i)| *i)
    }
}

/// The path as routed and forwarded: dot segments resolved (RFC 3986 section 5.2.4, also in
/// their percent-encoded forms) and repeated slashes merged, so `/api/../admin` cannot slip
/// past a route written for `/admin`. The pipeline still sees the path as sent.
pub fn normalize_path(path: &str) -> std::borrow::Cow<'_, str> {
    let suspicious = path.contains("//")
        || path.contains("/.")
        || path.contains('\\')
        || path
            .as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%2e"));
    if !suspicious {
        return std::borrow::Cow::Borrowed(path);
    }
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let is_dot_dot = |s: &str| {
        s == ".."
            || s.eq_ignore_ascii_case("%2e%2e")
            || s.eq_ignore_ascii_case(".%2e")
            || s.eq_ignore_ascii_case("%2e.")
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split(['/', '\\']).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            trailing_slash = i == last && i > 0;
            continue;
        }
        if is_dot(segment) {
            trailing_slash = i == last;
        } else if is_dot_dot(segment) {
            out.pop();
            trailing_slash = i == last;
        } else {
            out.push(segment);
            trailing_slash = false;
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || normalized.is_empty() {
        normalized.push('/');
    }
    std::borrow::Cow::Owned(normalized)
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header,
/// without the port.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> &'a str {
    let raw = uri
        .host()
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    strip_port(raw)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets' content.
        return host.split(']').next().map(|h| &h[1..]).unwrap_or(host);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: PathMatcher, methods: &[&str]) -> RouteMatcher {
        RouteMatcher {
            host: HostMatch::parse(host).unwrap(),
            path,
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            headers: vec![],
        }
    }

    fn find(router: &Router, method: &str, host: &str, path: &str) -> Option<usize> {
        router.find(&method.parse().unwrap(), host, path, &HeaderMap::new())
    }

    #[test]
    fn most_specific_path_wins_whatever_the_file_order() {
        let router = Router::new(vec![
            route(None, PathMatcher::Any, &[]),
            route(None, PathMatcher::prefix("/api").unwrap(), &[]),
            route(None, PathMatcher::template("/api/users/{id}").unwrap(), &[]),
            route(None, PathMatcher::exact("/api/users/me").unwrap(), &[]),
            route(None, PathMatcher::prefix("/api/users").unwrap(), &[]),
        ]);
        assert_eq!(find(&router, "GET", "x", "/api/users/me"), Some(3));
        assert_eq!(find(&router, "GET", "x", "/api/users/42"), Some(2));
        assert_eq!(find(&router, "GET", "x", "/api/users/42/orders"), Some(4));
        assert_eq!(find(&router, "GET", "x", "/api/orders"), Some(1));
        assert_eq!(find(&router, "GET", "x", "/apix"), Some(0));
        assert_eq!(find(&router, "GET", "x", "/"), Some(0));
    }

    #[test]
    fn host_outranks_path_and_wildcards_match_subdomains_only() {
        let router = Router::new(vec![
            route(None, PathMatcher::exact("/a").unwrap(), &[]),
            route(Some("*.example.com"), PathMatcher::Any, &[]),
            route(Some("api.example.com"), PathMatcher::Any, &[]),
        ]);
        assert_eq!(find(&router, "GET", "api.example.com", "/a"), Some(2));
        assert_eq!(find(&router, "GET", "API.Example.com", "/a"), Some(2));
        assert_eq!(find(&router, "GET", "www.example.com", "/a"), Some(1));
        assert_eq!(find(&router, "GET", "example.com", "/a"), Some(0));
        assert_eq!(find(&router, "GET", "example.com", "/b"), None);
    }

    #[test]
    fn methods_and_headers_narrow_a_route() {
        let mut with_header = route(None, PathMatcher::prefix("/v").unwrap(), &[]);
        with_header.headers.push(HeaderCondition {
            name: HeaderName::from_static("x-version"),
            value: Some(HeaderValue::from_static("2")),
        });
        let router = Router::new(vec![
            route(None, PathMatcher::prefix("/v").unwrap(), &[]),
            route(None, PathMatcher::prefix("/v").unwrap(), &["POST"]),
            with_header,
        ]);
        let mut headers = HeaderMap::new();
        assert_eq!(router.find(&Method::GET, "h", "/v/1", &headers), Some(0));
        assert_eq!(router.find(&Method::POST, "h", "/v/1", &headers), Some(1));
        headers.insert("x-version", HeaderValue::from_static("2"));
        assert_eq!(router.find(&Method::POST, "h", "/v/1", &headers), Some(2));
    }

    #[test]
    fn templates_match_whole_segments() {
        let t = PathMatcher::template("/users/{id}/orders").unwrap();
        assert!(t.matches("/users/7/orders"));
        assert!(!t.matches("/users//orders"));
        assert!(!t.matches("/users/7/orders/1"));
        assert!(!t.matches("/users/7"));
        assert!(PathMatcher::template("/users/x{id}").is_err());
        assert!(PathMatcher::exact("users").is_err());
    }

    #[test]
    fn paths_are_normalised_before_routing() {
        assert_eq!(normalize_path("/api/users/1"), "/api/users/1");
        assert_eq!(normalize_path("/api/../admin"), "/admin");
        assert_eq!(normalize_path("/api/%2e%2E/admin"), "/admin");
        assert_eq!(normalize_path("/a/./b//c/"), "/a/b/c/");
        assert_eq!(normalize_path("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize_path("/a\\..\\b"), "/b");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("//"), "/");
        assert!(matches!(
            normalize_path("/plain/path"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn host_ports_are_ignored() {
        let uri: http::Uri = "/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            HeaderValue::from_static("api.example.com:8443"),
        );
        assert_eq!(request_host(&uri, &headers), "api.example.com");
        headers.insert(http::header::HOST, HeaderValue::from_static("[::1]:8080"));
        assert_eq!(request_host(&uri, &headers), "::1");
    }
}
