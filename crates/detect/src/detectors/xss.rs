//! Cross-site scripting by lexical analysis: an HTML tag tokenizer that reads tags the lenient
//! way browsers do (`<svg/onload=...`, unquoted and unterminated attributes) and judges tag
//! names, attribute names and attribute values; plus a JavaScript scan for script URIs and
//! calls of the sinks injected script uses when it lands inside a script context.

use std::sync::LazyLock;

use regex::Regex;

use super::Match;

/// Tags whose mere presence runs or loads code.
const CODE_TAGS: &[&str] = &[
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "isindex",
    "style", "xss", "import", "vmlframe", "xml", "template", "portal", "noscript", "meta", "link",
    "svg", "math", "handler", "listener",
];

/// Attributes whose value is a URL the browser loads or navigates to.
const URL_ATTRIBUTES: &[&str] = &[
    "href",
    "src",
    "action",
    "formaction",
    "data",
    "xlink:href",
    "background",
    "lowsrc",
    "dynsrc",
    "poster",
    "code",
    "codebase",
    "from",
    "to",
    "values",
    "by",
    "srcdoc",
    "content",
    "http-equiv",
    "folder",
    "ping",
    "manifest",
    "xmlns",
];

static SCRIPT_URI: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:j\s*a\s*v\s*a|v\s*b|l\s*i\s*v\s*e)\s*s\s*c\s*r\s*i\s*p\s*t\s*:|data\s*:\s*(?:text/html|image/svg|application/x)")
        .expect("valid regex")
});

/// Calls of the functions injected script uses, and the objects it reads.
static JS_SINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?:\b(?:alert|confirm|prompt|print|eval|settimeout|setinterval|execscript|msgbox|fromcharcode|atob)\s*(?:\?\.\s*)?(?:\(|`|\)\s*\()",
        r"|\b(?:alert|confirm|prompt|eval)\s*\.\s*(?:call|apply|bind)\b",
        r"|\[\s*['`]\s*(?:al|con|pro|ev)[a-z'`+\s]*\]",
        r"|\bdocument\s*\??\.\s*(?:cookie|domain|write|writeln|location|body|createelement|queryselector\w*|getelementby\w*)\b|\bwindow\s*\.\s*location\b",
        r"|\bdocument\s*\)?\s*\[\s*['\x22`]|url\s*\(\s*['\x22]?\s*javascript|-moz-binding\s*:|\+AD[wx4]-|<\?import\b|(?:!!?\[\][\s+]*){2}",
        r"|\bconstructor\s*\.\s*constructor\b|\.\s*(?:call|apply)\s*`|\b(?:top|self|window|parent|this|globalThis)\s*\[",
        r"|\bimport\s*\(\s*['`]|\b(?:innerhtml|outerhtml)\s*=|\bsrcdoc\s*=",
        r")"
    ))
    .expect("valid regex")
});

/// Words of which one (or one of the bytes `<:=[`` ` ``) occurs in every value [`is_xss`]
/// flags: the prefilter's literals. Keep in step with the patterns above.
pub(crate) const GATE_WORDS: &[&str] = &[
    "alert",
    "confirm",
    "prompt",
    "print",
    "eval",
    "settimeout",
    "setinterval",
    "execscript",
    "msgbox",
    "fromcharcode",
    "atob",
    "document",
    "window",
    "constructor",
    "url",
    "import",
    "+ad",
];

/// Classifies `input` (already decoded); `None` when it does not read as XSS.
pub fn is_xss(input: &str) -> Option<Match> {
    if let Some(found) = is_xss_text(input) {
        return Some(found);
    }
    // Variants a filter or an old browser produces from the value:
    // `autof<x>ocus o<x>nfocus=alert<x>(1)` after a sanitizer strips the unknown short tags,
    // and `¼script¾` read in a 7-bit charset (US-ASCII drops the high bit: `¼` is `<`).
    let whole = |m: Match| Match {
        reason: m.reason,
        start: 0,
        end: input.len().min(48),
    };
    if input.contains('<')
        && let Some(stripped) = strip_short_tags(input)
        && let Some(found) = is_xss_text(&stripped)
    {
        return Some(whole(found));
    }
    if !input.is_ascii()
        && input.contains(SEVEN_BIT_MARKERS)
        && let Some(found) = is_xss_text(&seven_bit(input))
    {
        return Some(whole(found));
    }
    None
}

/// Characters that are `<`, `>` and `"` once their high bit is dropped, and the fraction slash
/// that Unicode compatibility normalisation leaves of `¼`, `½` and `¾` (`1⁄4`).
pub(crate) const SEVEN_BIT_MARKERS: [char; 4] = ['\u{bc}', '\u{be}', '\u{a2}', '\u{2044}'];

/// `input` with Latin-1 characters read as 7-bit ASCII (high bit dropped), UTF-8 lead bytes
/// decoded as Latin-1 (`Â¼`) removed.
fn seven_bit(input: &str) -> String {
    // NFKC spells `¼ ½ ¾` as `1⁄4 1⁄2 3⁄4`: undo that before dropping the high bit.
    let input = input
        .replace("1\u{2044}4", "\u{bc}")
        .replace("1\u{2044}2", "\u{bd}")
        .replace("3\u{2044}4", "\u{be}");
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::with_capacity(input.len());
    for (i, &c) in chars.iter().enumerate() {
        let code = c as u32;
        if (0xc2..=0xdf).contains(&code)
            && chars
                .get(i + 1)
                .is_some_and(|n| (0x80..=0xbf).contains(&(*n as u32)))
        {
            continue;
        }
        match char::from_u32(code.wrapping_sub(0x80)) {
            Some(low) if (0xa0..=0xff).contains(&code) => out.push(low),
            _ => out.push(c),
        }
    }
    out
}

/// `input` without short empty tags glued inside words (`o<x>nfocus`), or `None` when it has
/// none.
fn strip_short_tags(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let name = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            let close = i + 1 + name;
            let glued = i > 0 && bytes[i - 1].is_ascii_alphanumeric();
            if (1..=3).contains(&name) && bytes.get(close) == Some(&b'>') && glued {
                out.push_str(&input[last..i]);
                last = close + 1;
                i = close + 1;
                continue;
            }
        }
        i += 1;
    }
    if last == 0 {
        return None;
    }
    out.push_str(&input[last..]);
    Some(out)
}

fn is_xss_text(input: &str) -> Option<Match> {
    if input.contains('<')
        && let Some(found) = scan_tags(input)
    {
        return Some(found);
    }
    if let Some(found) = SCRIPT_URI.find(input) {
        // `javascript:` followed by code, not prose ("JavaScript: the good parts").
        let is_data_uri = found.as_str().to_ascii_lowercase().starts_with("data");
        // A scheme spelled with whitespace or control characters inside is obfuscated on purpose.
        let obfuscated = found
            .as_str()
            .trim_end_matches(':')
            .contains(|c: char| c.is_whitespace() || c.is_control());
        if is_data_uri || obfuscated || followed_by_code(&input[found.end()..]) {
            return Some(Match {
                reason: "script URI",
                start: found.start(),
                end: (found.end() + 16).min(input.len()),
            });
        }
    }
    if let Some(found) = attribute_breakout(input) {
        return Some(found);
    }
    if let Some(found) = JS_SINK.find(input) {
        return Some(Match {
            reason: "JavaScript sink",
            start: found.start(),
            end: found.end(),
        });
    }
    None
}

/// An event handler injected after breaking out of an attribute value: `"onwheel=...`,
/// `' onselect=...`, `> src onerror=...`, or a value that is nothing but a handler assignment.
fn attribute_breakout(input: &str) -> Option<Match> {
    static HANDLER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?i)(?:^\s*|["'`>]\s*|\s)on[a-z]{3,40}\s*=\s*(?:[^\s=]|$|=)"#)
            .expect("valid regex")
    });
    for found in HANDLER.find_iter(input) {
        let text = found.as_str();
        let before = &input[..found.start()];
        let quote_led = text.trim_start().starts_with(['"', '\'', '`', '/', '>']);
        let leading = before.trim().is_empty();
        let after_quote = before.contains(['"', '\'', '>']);
        if quote_led || leading || after_quote {
            return Some(Match {
                reason: "event handler injected into an attribute",
                start: found.start(),
                end: (found.end() + 16).min(input.len()),
            });
        }
    }
    None
}

/// Whether `rest` starts with code: punctuation, or an identifier used as a function, object
/// or variable.
fn followed_by_code(rest: &str) -> bool {
    let rest = rest.trim_start();
    let word_end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(rest.len());
    if word_end == 0 {
        return !rest.is_empty();
    }
    rest[word_end..].starts_with(['(', '.', '[', '=', '`'])
}

/// Reads every `<tag ...` in `input` and judges it.
fn scan_tags(input: &str) -> Option<Match> {
    let bytes = input.as_bytes();
    let mut i = 0;
    while let Some(offset) = input[i..].find('<') {
        let start = i + offset;
        i = start + 1;
        let mut j = i;
        if bytes.get(j) == Some(&b'/') {
            j += 1;
        }
        let name_start = j;
        while j < bytes.len()
            && (bytes[j].is_ascii_alphanumeric() || matches!(bytes[j], b'-' | b':' | b'_'))
        {
            j += 1;
        }
        if j == name_start || !bytes[name_start].is_ascii_alphabetic() {
            continue;
        }
        let full_name = input[name_start..j].to_ascii_lowercase();
        let name = full_name
            .rsplit(':')
            .next()
            .unwrap_or(&full_name)
            .to_string();
        let closing = name_start > start + 1;
        if !closing && CODE_TAGS.contains(&name.as_str()) {
            // `<style` in prose is rare enough; `<script` always counts.
            let boundary = bytes
                .get(j)
                .is_none_or(|&b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'));
            if boundary {
                return Some(Match {
                    reason: "script-capable tag",
                    start,
                    end: (j + 24).min(input.len()),
                });
            }
        }
        let (attributes, end) = attributes(input, j);
        for (attr, value) in &attributes {
            let attr_name = input[attr.0..attr.1].to_ascii_lowercase();
            let value_text = value.map(|(s, e)| &input[s..e]).unwrap_or("");
            if attr_name.starts_with("on")
                && attr_name.len() > 3
                && value.is_some()
                && attr_name[2..].bytes().all(|b| b.is_ascii_alphabetic())
            {
                return Some(Match {
                    reason: "event handler attribute",
                    start,
                    end: value.map_or(attr.1, |v| v.1).min(input.len()),
                });
            }
            let compact: String = value_text
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .collect::<String>()
                .to_ascii_lowercase();
            if URL_ATTRIBUTES.contains(&attr_name.as_str()) && SCRIPT_URI.is_match(&compact) {
                return Some(Match {
                    reason: "script URI in attribute",
                    start,
                    end: value.map_or(attr.1, |v| v.1),
                });
            }
            if attr_name == "style"
                && (compact.contains("expression(")
                    || compact.contains("javascript:")
                    || compact.contains("behavior:")
                    || compact.contains("-moz-binding"))
            {
                return Some(Match {
                    reason: "script in style attribute",
                    start,
                    end: value.map_or(attr.1, |v| v.1),
                });
            }
            if name == "meta" && attr_name == "http-equiv" {
                return Some(Match {
                    reason: "meta http-equiv",
                    start,
                    end: value.map_or(attr.1, |v| v.1),
                });
            }
        }
        i = end.max(i);
    }
    None
}

type Span = (usize, usize);

/// Lenient attribute parsing from `i` (just after the tag name) to `>` or the end of input.
fn attributes(input: &str, mut i: usize) -> (Vec<(Span, Option<Span>)>, usize) {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    while i < bytes.len() && out.len() < 64 {
        while i < bytes.len()
            && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/' || bytes[i] == 0x0c)
        {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'>' || bytes[i] == b'<' {
            break;
        }
        let name_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/' | b'<')
        {
            i += 1;
        }
        if i == name_start {
            i += 1;
            continue;
        }
        let name = (name_start, i);
        let mut k = i;
        while k < bytes.len() && bytes[k].is_ascii_whitespace() {
            k += 1;
        }
        let mut value = None;
        if bytes.get(k) == Some(&b'=') {
            k += 1;
            while k < bytes.len() && bytes[k].is_ascii_whitespace() {
                k += 1;
            }
            match bytes.get(k) {
                Some(&q @ (b'"' | b'\'' | b'`')) => {
                    let end = input[k + 1..]
                        .find(q as char)
                        .map_or(bytes.len(), |e| k + 1 + e);
                    value = Some((k + 1, end));
                    k = (end + 1).min(bytes.len());
                }
                _ => {
                    let start = k;
                    while k < bytes.len() && !bytes[k].is_ascii_whitespace() && bytes[k] != b'>' {
                        k += 1;
                    }
                    value = Some((start, k));
                }
            }
            i = k;
        }
        out.push((name, value));
    }
    (out, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_attacks() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(document.domain)>",
            "<svg/onload=alert(1)//",
            "<a href=\"jav\tascript:alert(1)\">x</a>",
            "<iframe src=//evil>",
            "javascript:alert(1)",
            "'-alert(1)-'",
            "\";alert(1);//",
            "confirm.call(null,1)",
            "[].sort.call`${alert}1337`",
            "window[\"alert\"](window[\"document\"][\"cookie\"])",
            "<x onclick=alert(1)>",
            "style=color:red;background:url(javascript:alert(1))",
            "<meta http-equiv=\"refresh\" content=\"0;url=http://evil\">",
            "<div style=\"width:expression(alert(1))\">",
            "<STYLE>@import'javascript:alert(1)';</STYLE>",
        ] {
            assert!(is_xss(attack).is_some(), "missed: {attack}");
        }
    }

    #[test]
    fn passes_benign() {
        for benign in [
            "I love you <3",
            "a < b and c > d",
            "I would like to see all of the items that are type <enter type here>.",
            "<b>bold</b> and <i>italic</i>",
            "JavaScript: The Good Parts",
            "Please alert the team about the outage",
            "<a href=\"https://example.com\">link</a>",
            "the onion = tasty",
            "Find your solution here -> link",
        ] {
            assert!(
                is_xss(benign).is_none(),
                "false positive: {benign}: {:?}",
                is_xss(benign)
            );
        }
    }

    #[test]
    fn sees_through_stripped_tags_and_seven_bit_charsets() {
        for attack in [
            "\\\"autof<x>ocus o<x>nfocus=alert<x>(1)//",
            "\u{bc}script\u{be}alert(\u{a2}XSS\u{a2})\u{bc}/script\u{be}",
            "\u{c2}\u{bc}script\u{c2}\u{be}alert(1)\u{c2}\u{bc}/script\u{c2}\u{be}",
        ] {
            assert!(is_xss(attack).is_some(), "missed: {attack}");
        }
        for benign in [
            "x<br>y and a<b>c",
            "\u{bc} cup of sugar, \u{be} cup of milk",
            "Price: 5\u{a2}",
        ] {
            assert!(is_xss(benign).is_none(), "false positive: {benign}");
        }
    }

    #[test]
    fn seven_bit_charsets_after_compatibility_normalisation() {
        // What the canonical decoding (NFKC) leaves of `¼script¾alert(¢XSS¢)¼/script¾`.
        let folded = "1\u{2044}4script3\u{2044}4alert(\u{a2}XSS\u{a2})1\u{2044}4/script3\u{2044}4";
        assert!(is_xss(folded).is_some());
        assert!(is_xss("1\u{2044}4 cup of sugar, 3\u{2044}4 cup of flour").is_none());
    }
}
