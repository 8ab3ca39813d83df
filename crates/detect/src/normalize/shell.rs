//! Shell normalisation: undoes the quoting and escaping tricks that keep a command word from
//! looking like one (`w'h'o'am'i`, `c\at`, `w^h^o^a^m^i`, `cat$IFS/etc/passwd`, `pi$()ng`,
//! `{cat,/etc/passwd}`), then lowercases (Windows commands are case-insensitive).

/// Returns the normalised command line.
pub fn normalize_shell(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        // Field separators spelled as variables.
        if let Some(len) = ifs_len(rest) {
            out.push(' ');
            i += len;
            continue;
        }
        match bytes[i] {
            b'\'' | b'"' | b'^' => {}
            b'\\' => {
                // `\` + newline is a line continuation; `\x` is just `x`.
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            // Special parameters that expand to nothing useful inside a word (`c$@at`,
            // `c$!at`, `c$?at`, `c$_at`, `c$-at`).
            b'$' if matches!(
                bytes.get(i + 1),
                Some(b'@' | b'*' | b'$' | b'0'..=b'9' | b'!' | b'?' | b'-' | b'_' | b'#')
            ) && (bytes.get(i + 1) != Some(&b'_')
                || out.ends_with(|c: char| c.is_alphanumeric())) =>
            {
                i += 1
            }
            // An unset one- or two-letter variable glued to a word (`uname$u -a`).
            b'$' if out.ends_with(|c: char| c.is_ascii_alphanumeric())
                && !out.rsplit(' ').next().unwrap_or("").contains('$')
                && short_var_len(&bytes[i + 1..]).is_some() =>
            {
                i += short_var_len(&bytes[i + 1..]).unwrap_or(0);
            }
            b'$' if rest.starts_with("$()") || rest.starts_with("${}") => i += 2,
            b'`' if bytes.get(i + 1) == Some(&b'`') => i += 1,
            b'{' => {
                // Brace expansion `{cat,/etc/passwd}` runs `cat /etc/passwd`.
                if let Some(end) = brace_expansion_end(rest) {
                    let inner = &rest[1..end];
                    let glued = out.ends_with(|c: char| c.is_alphanumeric())
                        || rest[end + 1..].starts_with(|c: char| c.is_alphanumeric());
                    if glued {
                        // `c{a,oun}t` is `cat count`: keep the first word, it is the command.
                        out.push_str(inner.split(',').find(|a| !a.is_empty()).unwrap_or(""));
                    } else {
                        out.push(' ');
                        out.push_str(&inner.replace(',', " "));
                        out.push(' ');
                    }
                    i += end + 1;
                    continue;
                }
                out.push('{');
            }
            _ => {
                let c = rest.chars().next().unwrap_or(' ');
                out.extend(c.to_lowercase());
                i += c.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Length of a one- or two-letter lowercase variable name at the start of `b` that ends the
/// word (followed by a non-alphanumeric byte or the end).
fn short_var_len(b: &[u8]) -> Option<usize> {
    let n = b
        .iter()
        .take(3)
        .take_while(|c| c.is_ascii_lowercase())
        .count();
    ((1..=2).contains(&n) && b.get(n).is_none_or(|c| !c.is_ascii_alphanumeric())).then_some(n)
}

/// Length of an `$IFS` spelling at the start of `s` (`$IFS`, `${IFS}`, `$IFS$9`, `${IFS%??}`).
fn ifs_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'$') {
        return None;
    }
    // Byte comparisons: `s` may hold multi-byte characters right after the `$`.
    let len = if b.len() >= 4 && b[1..4].eq_ignore_ascii_case(b"ifs") {
        4
    } else if b.len() >= 6 && b[1..5].eq_ignore_ascii_case(b"{ifs") {
        match s[5..].find('}') {
            Some(close) if close <= 4 => 6 + close,
            _ => return None,
        }
    } else {
        return None;
    };
    // `$IFS$9`: the trailing positional parameter is empty.
    let tail = &b[len..];
    Some(
        if tail.first() == Some(&b'$') && tail.get(1).is_some_and(u8::is_ascii_digit) {
            len + 2
        } else {
            len
        },
    )
}

/// The index of the `}` closing a brace expansion that starts at `s[0] == '{'`: a comma inside,
/// no whitespace, and short.
fn brace_expansion_end(s: &str) -> Option<usize> {
    let end = s[..crate::evidence::floor_char_boundary(s, 256)].find('}')?;
    let inner = &s[1..end];
    (inner.contains(',') && !inner.contains(char::is_whitespace) && !inner.contains('{'))
        .then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoes_evasions() {
        assert_eq!(normalize_shell("w'h'o'am'i"), "whoami");
        assert_eq!(normalize_shell("c\\at /et\\c/pa\\sswd"), "cat /etc/passwd");
        assert_eq!(normalize_shell("W^H^O^A^M^I"), "whoami");
        assert_eq!(normalize_shell("cat$IFS/etc/passwd"), "cat /etc/passwd");
        assert_eq!(normalize_shell("cat${IFS}/etc/passwd"), "cat /etc/passwd");
        assert_eq!(normalize_shell(";getent$IFS$9hosts"), ";getent hosts");
        assert_eq!(normalize_shell("pi$()ng 127.0.0.1"), "ping 127.0.0.1");
        assert_eq!(normalize_shell("{cat,/etc/passwd}"), " cat /etc/passwd ");
    }

    #[test]
    fn multi_byte_characters_after_a_dollar_do_not_panic() {
        // Found by the `engine` fuzz target: `$` followed by a two-byte character.
        for input in ["a$iք", "$ք", "${iք}", "$\u{10348}xx"] {
            let _ = normalize_shell(input);
        }
    }

    #[test]
    fn long_brace_candidates_with_multi_byte_characters_do_not_panic() {
        // Found by the `decoders` fuzz target: the 256-byte window cut a character.
        let mut bytes = b"{{{".to_vec();
        bytes.extend([0xba; 34]);
        bytes.extend([0; 4]);
        bytes.extend([0xba; 60]);
        let _ = normalize_shell(&String::from_utf8_lossy(&bytes));
        let _ = normalize_shell(&format!("{{x{}", "\u{fffd}".repeat(100)));
    }
}
