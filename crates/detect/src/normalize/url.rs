//! Percent-decoding as lenient servers do it: `%XX`, IIS-style `%uXXXX`, and (for form and
//! query data) `+` as a space. Malformed escapes are kept as they are.

use std::borrow::Cow;

/// Decodes one layer of percent-encoding. Bytes that do not form UTF-8 become U+FFFD.
pub fn percent_decode(input: &str, plus_as_space: bool) -> Cow<'_, str> {
    let bytes = input.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_as_space && b == b'+'))
    {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' && plus_as_space {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b == b'%' {
            if let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if matches!(bytes.get(i + 1), Some(b'u' | b'U'))
                && let Some(code) = hex4(&bytes[i + 2..])
            {
                push_code_point(&mut out, code);
                i += 6;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

pub(crate) fn hex(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    (b as char).to_digit(16).map(|d| d as u8)
}

pub(crate) fn hex4(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 4 {
        return None;
    }
    let mut code = 0u32;
    for b in &bytes[..4] {
        code = code << 4 | (*b as char).to_digit(16)?;
    }
    Some(code)
}

pub(crate) fn push_code_point(out: &mut Vec<u8>, code: u32) {
    let c = char::from_u32(code).unwrap_or('\u{fffd}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Whether the input has a percent sign that does not start a valid escape.
pub(crate) fn has_invalid_escape(input: &str) -> bool {
    let bytes = input.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !(hex(bytes.get(i + 1)).is_some() && hex(bytes.get(i + 2)).is_some())
            && !(matches!(bytes.get(i + 1), Some(b'u' | b'U'))
                && hex4(bytes.get(i + 2..).unwrap_or(&[])).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_all_forms() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+c", false), "a+c");
        assert_eq!(percent_decode("%u003cscript%U003E", false), "<script>");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%252e", false), "%2e");
        assert!(has_invalid_escape("param=%1G"));
        assert!(!has_invalid_escape("a%20b%u0041"));
    }
}
