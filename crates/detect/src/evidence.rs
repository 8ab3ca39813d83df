//! Evidence snippets: short, printable, and safe to log and export.

/// Longest evidence snippet, in characters.
pub(crate) const MAX_EVIDENCE_CHARS: usize = 64;

/// Makes a matched snippet safe to log: control characters escaped, long digit runs (card or
/// account numbers that happen to sit next to an attack) masked, and at most
/// [`MAX_EVIDENCE_CHARS`] characters.
pub(crate) fn redact(snippet: &str) -> String {
    let mut out = String::with_capacity(snippet.len().min(MAX_EVIDENCE_CHARS + 8));
    let mut digit_run = 0;
    for (chars, c) in snippet.chars().enumerate() {
        if chars >= MAX_EVIDENCE_CHARS {
            out.push('…');
            break;
        }
        if c.is_ascii_digit() {
            digit_run += 1;
            // Keep short numbers (1=1, sleep(5)) readable; mask from the 9th digit of a run on.
            out.push(if digit_run > 8 { '#' } else { c });
        } else {
            digit_run = 0;
            match c {
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
    }
    out
}

/// The evidence for a match at `start..end` of `text`, widened a little for context and cut on
/// character boundaries.
pub(crate) fn snippet_around(text: &str, start: usize, end: usize) -> String {
    let start = floor_char_boundary(text, start.min(text.len()));
    let end = floor_char_boundary(text, end.max(start).min(text.len()));
    let end = if end - start < 8 {
        floor_char_boundary(text, (start + 24).min(text.len()))
    } else {
        end
    };
    redact(&text[start..end])
}

pub(crate) fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_truncates() {
        assert_eq!(redact("a\r\nb"), "a\\r\\nb");
        assert_eq!(redact("card 4111111111111111"), "card 41111111########");
        let long = "x".repeat(100);
        assert_eq!(redact(&long).chars().count(), MAX_EVIDENCE_CHARS + 1);
    }
}
