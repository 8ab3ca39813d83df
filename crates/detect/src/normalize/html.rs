//! HTML/XML character references, decoded the way browsers do: named entities, decimal and
//! hex references with or without the trailing `;`, and any number of leading zeros.

use std::borrow::Cow;

/// Named entities attackers use to hide syntax; the full HTML5 table is not needed because
/// letters and digits gain nothing from being hidden.
const NAMED: &[(&str, char)] = &[
    ("lt", '<'),
    ("gt", '>'),
    ("amp", '&'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", ' '),
    ("tab", '\t'),
    ("newline", '\n'),
    ("colon", ':'),
    ("semi", ';'),
    ("comma", ','),
    ("period", '.'),
    ("excl", '!'),
    ("quest", '?'),
    ("num", '#'),
    ("dollar", '$'),
    ("percnt", '%'),
    ("equals", '='),
    ("plus", '+'),
    ("ast", '*'),
    ("commat", '@'),
    ("grave", '`'),
    ("hat", '^'),
    ("lowbar", '_'),
    ("vert", '|'),
    ("verbar", '|'),
    ("sol", '/'),
    ("bsol", '\\'),
    ("lpar", '('),
    ("rpar", ')'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lbrack", '['),
    ("rbrack", ']'),
    ("lcub", '{'),
    ("rcub", '}'),
    ("lbrace", '{'),
    ("rbrace", '}'),
    ("Tab", '\t'),
    ("NewLine", '\n'),
];

/// Decodes character references. Unknown names are kept.
pub fn decode_entities(input: &str) -> Cow<'_, str> {
    if !input.contains('&') {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        match decode_one(rest) {
            Some((c, used)) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes the reference at the start of `s` (which starts with `&`): the character and the
/// number of bytes consumed.
fn decode_one(s: &str) -> Option<(char, usize)> {
    let bytes = s.as_bytes();
    if bytes.get(1) == Some(&b'#') {
        let (radix, start) = if matches!(bytes.get(2), Some(b'x' | b'X')) {
            (16, 3)
        } else {
            (10, 2)
        };
        let mut i = start;
        let mut value: u32 = 0;
        let mut digits = 0;
        while let Some(d) = bytes.get(i).and_then(|&b| (b as char).to_digit(radix)) {
            // Saturate instead of overflowing: a huge reference is invalid anyway.
            value = value.saturating_mul(radix).saturating_add(d);
            digits += 1;
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        if bytes.get(i) == Some(&b';') {
            i += 1;
        }
        let c = char::from_u32(value)
            .filter(|&c| c != '\0')
            .unwrap_or('\u{fffd}');
        return Some((c, i));
    }
    let name_len = bytes[1..]
        .iter()
        .take(12)
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if name_len == 0 {
        return None;
    }
    let name = &s[1..1 + name_len];
    let &(_, c) = NAMED
        .iter()
        .find(|(n, _)| *n == name || n.eq_ignore_ascii_case(name))?;
    let mut used = 1 + name_len;
    if bytes.get(used) == Some(&b';') {
        used += 1;
    }
    Some((c, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_references() {
        assert_eq!(decode_entities("&lt;script&gt;"), "<script>");
        assert_eq!(
            decode_entities("&#x24;&#00000000000000000123;jndi"),
            "${jndi"
        );
        assert_eq!(decode_entities("&#106&#97"), "ja");
        assert_eq!(decode_entities("AT&T &unknown; &"), "AT&T &unknown; &");
        assert_eq!(decode_entities("$&lcub;x&rcub;"), "${x}");
    }
}
