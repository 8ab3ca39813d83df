//! Path templating for routes that match many paths (a catch-all or a prefix): segments that
//! look like identifiers (numbers, UUIDs, long hex strings, long mixed tokens) become `{id}`,
//! so `/users/42/orders/7` and `/users/9/orders/1` are one endpoint, `/users/{id}/orders/{id}`.

/// A templated path and the identifier values it replaced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templated {
    pub template: String,
    /// `(segment index, value)` of every segment replaced by `{id}`.
    pub ids: Vec<(usize, String)>,
}

/// The placeholder written for an identifier segment.
pub const ID: &str = "{id}";

/// Whether a path segment (still percent-encoded) is an identifier.
pub fn is_identifier(segment: &str) -> bool {
    let len = segment.len();
    if len == 0 {
        return false;
    }
    let bytes = segment.as_bytes();
    if bytes.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    let hex = bytes.iter().all(u8::is_ascii_hexdigit);
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    if hex && len >= 8 && has_digit {
        return true;
    }
    // Long opaque tokens (base64url ids, ULIDs): letters and digits mixed, 16 or more.
    let token = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let has_alpha = bytes.iter().any(u8::is_ascii_alphabetic);
    token && len >= 16 && has_digit && has_alpha
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Templates a path: `/users/42` → `/users/{id}` with the id `42` at segment 1.
pub fn template(path: &str) -> Templated {
    let mut template = String::with_capacity(path.len());
    let mut ids = Vec::new();
    for (index, segment) in path.split('/').enumerate().skip(1) {
        template.push('/');
        if is_identifier(segment) {
            template.push_str(ID);
            ids.push((index, segment.to_owned()));
        } else {
            template.push_str(segment);
        }
    }
    if template.is_empty() {
        template.push('/');
    }
    Templated { template, ids }
}

/// The templates `path`'s template could also be, with one more literal segment taken as an
/// identifier: `/users/abc` → `/users/{id}`. Used to find the learned endpoint a request with an
/// unexpected identifier belongs to. The first segment is never replaced.
pub fn widenings(templated: &Templated) -> impl Iterator<Item = (usize, String)> + '_ {
    let segments: Vec<&str> = templated.template.split('/').collect();
    (2..segments.len()).filter_map(move |i| {
        if segments[i] == ID || segments[i].is_empty() {
            return None;
        }
        let mut widened = String::with_capacity(templated.template.len());
        for (j, s) in segments.iter().enumerate().skip(1) {
            widened.push('/');
            widened.push_str(if j == i { ID } else { s });
        }
        Some((i, widened))
    })
}

/// Whether a path looks like a static asset (crawling counts only the rest, as CrowdSec's
/// `http-crawl-non_statics` does).
pub fn is_static(path: &str) -> bool {
    const STATIC: &[&str] = &[
        ".css", ".js", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".woff", ".woff2", ".ttf",
        ".map", ".webp",
    ];
    let last = path.rsplit('/').next().unwrap_or("");
    let lower = last.to_ascii_lowercase();
    STATIC.iter().any(|ext| lower.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_placeholders_and_words_stay() {
        let t = template("/users/42/orders/7");
        assert_eq!(t.template, "/users/{id}/orders/{id}");
        assert_eq!(t.ids, vec![(2, "42".into()), (4, "7".into())]);
        assert_eq!(
            template("/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301").template,
            "/items/{id}"
        );
        assert_eq!(template("/blobs/deadbeef01").template, "/blobs/{id}");
        assert_eq!(template("/blobs/deadbeef").template, "/blobs/deadbeef");
        assert_eq!(template("/api/v2/users").template, "/api/v2/users");
        assert_eq!(template("/t/01HZX3K9M2Q7R8S9T0V1W2").template, "/t/{id}");
        assert_eq!(template("/").template, "/");
        assert_eq!(template("").template, "/");
    }

    #[test]
    fn widening_tries_each_literal_segment_but_the_first() {
        let t = template("/users/abc/profile");
        let w: Vec<_> = widenings(&t).collect();
        assert_eq!(
            w,
            vec![
                (2, "/users/{id}/profile".to_owned()),
                (3, "/users/abc/{id}".to_owned())
            ]
        );
    }

    #[test]
    fn statics_are_recognised() {
        assert!(is_static("/assets/app.JS"));
        assert!(!is_static("/api/users"));
    }
}
