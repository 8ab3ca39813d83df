//! JavaScript/JSON/CSS-style backslash escapes (`\u0027`, `\u{27}`, `\x27`), which reach
//! applications that unescape a value a second time.

use std::borrow::Cow;

use super::url::{hex, hex4, push_code_point};

/// Decodes `\uXXXX`, `\u{X..}` and `\xXX`; other backslashes are kept.
pub fn decode_js_escapes(input: &str) -> Cow<'_, str> {
    if !input.contains('\\') {
        return Cow::Borrowed(input);
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            match bytes.get(i + 1) {
                Some(b'u') => {
                    if let Some(code) = hex4(&bytes[i + 2..]) {
                        push_code_point(&mut out, code);
                        i += 6;
                        changed = true;
                        continue;
                    }
                    if bytes.get(i + 2) == Some(&b'{') {
                        let digits = bytes[i + 3..]
                            .iter()
                            .take(7)
                            .take_while(|b| b.is_ascii_hexdigit())
                            .count();
                        if digits > 0 && bytes.get(i + 3 + digits) == Some(&b'}') {
                            let text = &input[i + 3..i + 3 + digits];
                            let code = u32::from_str_radix(text, 16).unwrap_or(0xfffd);
                            push_code_point(&mut out, code);
                            i += 4 + digits;
                            changed = true;
                            continue;
                        }
                    }
                }
                Some(b'x') => {
                    if let (Some(h), Some(l)) = (hex(bytes.get(i + 2)), hex(bytes.get(i + 3))) {
                        push_code_point(&mut out, u32::from(h << 4 | l));
                        i += 4;
                        changed = true;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    if !changed {
        return Cow::Borrowed(input);
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode_js_escapes(r"aaaa\u0027+b"), "aaaa'+b");
        assert_eq!(decode_js_escapes(r"\x3cscript\u{3e}"), "<script>");
        assert_eq!(decode_js_escapes(r"C:\users\xyz"), r"C:\users\xyz");
    }
}
