//! LDAP filter injection: a value that closes the filter it is pasted into (`admin)(|(uid=*`,
//! `*)(&`) — a `)` that the value never opened, followed by a new filter component — or that
//! opens a boolean filter around a wildcard (`*(|(objectclass=*))`). A complete, balanced filter
//! (`(&(objectCategory=computer)(cn=x))`) is what LDAP search forms legitimately carry.

use super::Match;

/// Classifies `input` (decoded).
pub fn is_ldap_injection(input: &str) -> Option<Match> {
    if !input.contains(')') && !input.contains('(') {
        return None;
    }
    let bytes = input.as_bytes();
    let mut depth = 0i32;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    // A close the value never opened: is a new filter component next?
                    let rest = input[i + 1..]
                        .trim_start()
                        .trim_start_matches([')', ' ', '\t']);
                    if filter_component(rest) {
                        let start = input[..i]
                            .rfind(|c: char| c.is_whitespace())
                            .map_or(0, |p| p + 1);
                        return Some(Match {
                            reason: "filter closed and reopened",
                            start,
                            end: (i + 16).min(input.len()),
                        });
                    }
                    depth = 0;
                }
            }
            _ => {}
        }
    }
    // `*(|(objectclass=*))`, `*)(uid=*`: a wildcard glued to filter syntax.
    if !input.contains('*') {
        return None;
    }
    let compact: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    for pattern in ["*(|(", "*(&(", "*(!(", "*)(", "=*)(|", "=*)(&"] {
        if let Some(pos) = compact.find(pattern) {
            return Some(Match {
                reason: "wildcard filter component",
                start: pos.min(input.len()),
                end: (pos + 24).min(input.len()),
            });
        }
    }
    None
}

/// Whether `rest` starts a filter component: `(|`, `(&`, `(!`, `(attr=`, `!(attr=`, or a
/// bare boolean operator.
fn filter_component(rest: &str) -> bool {
    let rest = rest.trim_start();
    let (negated, rest) = match rest.strip_prefix(['!', '|', '&']) {
        Some(r) => (true, r.trim_start()),
        None => (false, rest),
    };
    let Some(inner) = rest.strip_prefix('(') else {
        // `x)(&)` handled above; `x)|` alone is a bare operator right after the close.
        return negated && rest.is_empty();
    };
    let inner = inner.trim_start();
    if inner.starts_with(['|', '&', '!']) {
        return true;
    }
    let name_len = inner
        .find(|c: char| !(c.is_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | ';')))
        .unwrap_or(inner.len());
    name_len > 0
        && inner[name_len..]
            .trim_start()
            .trim_start_matches(['~', '<', '>'])
            .starts_with('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_attacks() {
        for attack in [
            "admin)(|(password=*",
            "bar)(&)",
            "*)(uid=*))(|(uid=*",
            "test) ( & ",
            "*(|(objectclass=*))",
            "void)(objectClass=users))(&(objectClass=void)",
            "eb9adbd87d)!(sn=*",
            "test))(&(objectClass=*",
        ] {
            assert!(is_ldap_injection(attack).is_some(), "missed: {attack}");
        }
    }

    #[test]
    fn passes_benign() {
        for benign in [
            "(&(objectCategory=computer)(userAccountControl:1.2.840.113556.1.4.803:=8))",
            "(a+b)*c",
            "(1+2)+(3+4)",
            "smile :) (really)",
            "foo|bar",
        ] {
            assert!(
                is_ldap_injection(benign).is_none(),
                "false positive: {benign}"
            );
        }
    }
}
