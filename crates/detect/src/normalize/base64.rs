//! Values that are base64 of text. Attack tools send payloads base64-encoded (without `=`
//! padding, or cut at any offset), so a run of base64 characters is decoded at each of the four
//! quad positions it may start at and kept only when the result reads as text.

/// Shortest run of base64 characters worth decoding.
const MIN_RUN: usize = 8;
/// Most runs decoded per value (bounds the work on long values).
const MAX_RUNS: usize = 8;

/// Decodes a string that is (at some alignment) base64 of text. `None` when no alignment
/// gives text.
pub fn decode_base64_text(candidate: &str) -> Option<String> {
    let trimmed = candidate.trim_end_matches('=');
    if trimmed.len() < MIN_RUN || !trimmed.bytes().all(is_base64_byte) {
        return None;
    }
    // A run of digits, or of one letter case only, is an id or a word, not base64.
    let bytes = trimmed.as_bytes();
    // Base64 mixes both letter cases (a run of 8 characters without either case is rare: about
    // 1.5% each); identifiers, hex ids and words do not.
    if !bytes.iter().any(u8::is_ascii_uppercase) || !bytes.iter().any(u8::is_ascii_lowercase) {
        return None;
    }
    let mut buf = Vec::with_capacity(bytes.len() * 3 / 4 + 1);
    // The run may start at any of the four positions of a base64 quad (a payload cut out of a
    // longer stream, or a keyword at any byte offset of the encoded data): decode it as if
    // preceded by 0 to 3 characters, dropping the bytes those would have filled.
    [0, 3, 2, 1].into_iter().find_map(|phase| {
        decode_at(bytes, phase, &mut buf)?;
        let text = std::str::from_utf8(&buf).ok()?;
        looks_like_text(text).then(|| text.to_string())
    })
}

/// The bytes of a base64 run but `/` (see [`for_each_run`]).
static BASE64_RUN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'_' | b'=');
        b += 1;
    }
    table
};

/// Calls `each` with every run of base64 characters of `value` at least [`MIN_RUN`] long
/// (runs are split on characters outside the alphabet, and also on `/` when `split_slash`),
/// until it returns false.
fn for_each_run(value: &str, split_slash: bool, mut each: impl FnMut(&str) -> bool) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for i in 0..=bytes.len() {
        if let Some(&b) = bytes.get(i)
            && (BASE64_RUN[usize::from(b)] || (b == b'/' && !split_slash))
        {
            continue;
        }
        // A run is ASCII and follows a whole character, so it is a slice of `value`.
        if i - start >= MIN_RUN
            && let Some(run) = value.get(start..i)
            && !each(run)
        {
            return;
        }
        start = i + 1;
    }
}

/// Whether a run may be base64 of text (see [`decode_base64_text`]): at least [`MIN_RUN`]
/// characters before any trailing `=`, none inside, both letter cases.
fn mixed_case_run(run: &str) -> bool {
    let run = run.trim_end_matches('=').as_bytes();
    run.len() >= MIN_RUN
        && !run.contains(&b'=')
        && run.iter().any(u8::is_ascii_uppercase)
        && run.iter().any(u8::is_ascii_lowercase)
}

/// Whether [`decode_runs`] may decode anything in `value`: a run of at least 8 base64
/// characters (before any trailing `=`) mixing both letter cases. Cheap, allocation-free.
pub(crate) fn may_decode(value: &str, split_slash: bool) -> bool {
    let mut found = false;
    for_each_run(value, split_slash, |run| {
        found = mixed_case_run(run);
        !found
    });
    found
}

/// Decodes every base64 run of `value` that is text; runs are split on characters outside the
/// alphabet, and also on `/` when `split_slash` (paths). `None` when nothing decoded.
pub(crate) fn decode_runs(value: &str, split_slash: bool) -> Option<String> {
    let mut decoded = String::new();
    let mut budget = MAX_RUNS;
    for_each_run(value, split_slash, |run| {
        if mixed_case_run(run)
            && let Some(text) = decode_base64_text(run)
        {
            if !decoded.is_empty() {
                decoded.push('\n');
            }
            decoded.push_str(&text);
        }
        budget -= 1;
        budget > 0
    });
    (!decoded.is_empty()).then_some(decoded)
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

fn sextet(b: u8) -> Option<u32> {
    Some(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    } as u32)
}

/// Decodes standard or URL-safe base64 without padding into `out`, as if `phase` (0 to 3)
/// characters preceded `input` in its quad: the bytes that would hold their bits are dropped,
/// and a trailing partial byte too. Gives up early when the bytes cannot be text (too many
/// control bytes, or a byte that no UTF-8 text has there: most words decoded as base64 fail
/// within a few bytes).
fn decode_at(input: &[u8], phase: usize, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    // `looks_like_text` wants 95% printable characters; control bytes are never printable.
    let budget = (input.len() * 3 / 4) / 20;
    let mut bad = 0usize;
    // Continuation bytes still expected by the UTF-8 sequence under way.
    let mut continuation = 0u8;
    let mut acc = 0u32;
    let mut bits = 6 * phase;
    let mut skip = (6 * phase).div_ceil(8);
    for &b in input {
        acc = acc << 6 | sextet(b)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = (acc >> bits) as u8;
            acc &= (1 << bits) - 1;
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if (byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r')) || byte == 0x7f {
                bad += 1;
                if bad > budget {
                    return None;
                }
            }
            // Only what `str::from_utf8` refuses in any case: a continuation byte out of
            // place, a lead byte that no character starts with, a missing continuation.
            continuation = match (continuation, byte) {
                (0, 0x00..=0x7f) => 0,
                (0, 0xc2..=0xdf) => 1,
                (0, 0xe0..=0xef) => 2,
                (0, 0xf0..=0xf4) => 3,
                (0, _) => return None,
                (n, 0x80..=0xbf) => n - 1,
                _ => return None,
            };
            out.push(byte);
        }
    }
    (out.len() >= 4).then_some(())
}

/// Mostly printable characters, with at least one letter.
fn looks_like_text(text: &str) -> bool {
    let mut total = 0usize;
    let mut printable = 0usize;
    let mut letters = 0usize;
    for c in text.chars() {
        total += 1;
        if c.is_alphabetic() {
            letters += 1;
        }
        if !c.is_control() || matches!(c, '\t' | '\n' | '\r') {
            // Non-ASCII letters are fine; stray non-ASCII symbols are what random bytes look like.
            if c.is_ascii() || c.is_alphabetic() {
                printable += 1;
            }
        }
    }
    if letters == 0 {
        // A template or expression payload may have no letter (`{{1337*1338}}`): all printable,
        // with code punctuation.
        let code = text
            .bytes()
            .filter(|b| b"{}()<>*;'\"$[]=%#".contains(b))
            .count();
        return total >= 6 && printable == total && code >= 3;
    }
    printable * 100 >= total * 95
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_unpadded_and_shifted() {
        assert_eq!(
            decode_base64_text("Jy1hbGVydCgxKS8v").as_deref(),
            Some("'-alert(1)//")
        );
        assert_eq!(
            decode_base64_text("cHJvdG90eXBlY2xvbmVmYWN0b3J5").as_deref(),
            Some("prototypeclonefactory")
        );
        assert_eq!(
            decode_base64_text("Gluc3RhbnRpYXRldHJhbnNmb3JtZXI").as_deref(),
            Some("instantiatetransformer")
        );
        // A keyword at byte offset 1 of the encoded stream, cut at the quad boundary before it.
        assert_eq!(
            decode_base64_text("GZvcmNsb3N1cmU").as_deref(),
            Some("forclosure")
        );
    }

    #[test]
    fn ignores_words_ids_and_binary() {
        assert_eq!(decode_base64_text("username"), None);
        assert_eq!(decode_base64_text("1234567890"), None);
        // A PNG header is binary.
        assert_eq!(
            decode_base64_text(
                "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg"
            ),
            None
        );
    }

    #[test]
    fn splits_runs() {
        assert_eq!(
            decode_runs("/KHNlbGVjdCgwKQ", true).as_deref(),
            Some("(select(0)")
        );
    }

    #[test]
    fn may_decode_is_necessary_for_decoding() {
        for value in [
            "/KHNlbGVjdCgwKQ",
            "Jy1hbGVydCgxKS8v",
            "x=GZvcmNsb3N1cmU==",
            "Blue cotton shirt",
            "Springfield",
            "a Wireless mouse",
            "4f9a8b7c6d5e4f3a2b1c",
            "ab=cdEFGHIJ",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
        ] {
            for split_slash in [false, true] {
                if decode_runs(value, split_slash).is_some() {
                    assert!(may_decode(value, split_slash), "{value}");
                }
            }
        }
        assert!(!may_decode("Blue cotton shirt", false));
        assert!(!may_decode("4f9a8b7c6d5e4f3a2b1c", false));
        assert!(may_decode("Jy1hbGVydCgxKS8v", false));
    }

    /// Giving up at the first byte UTF-8 refuses changes no result: on words, ids, random
    /// base64 and real payloads, every phase decodes to text exactly when the plain decoding
    /// followed by a UTF-8 check does.
    #[test]
    fn early_utf8_refusal_is_exact() {
        fn reference(input: &[u8], phase: usize) -> Option<String> {
            let mut acc = 0u32;
            let mut bits = 6 * phase;
            let mut skip = (6 * phase).div_ceil(8);
            let mut out = Vec::new();
            for &b in input {
                acc = acc << 6 | sextet(b)?;
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    let byte = (acc >> bits) as u8;
                    acc &= (1 << bits) - 1;
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    out.push(byte);
                }
            }
            String::from_utf8(out).ok()
        }
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut inputs: Vec<Vec<u8>> = [
            "Springfield",
            "Wireless",
            "Notebook",
            "Jy1hbGVydCgxKS8v",
            "w6nDqcOpw6k",
            "8J+YgPCfmIA",
            "4oKs4oKs4oKs",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = 8 + (state % 24) as usize;
            inputs.push(
                (0..len)
                    .map(|i| alphabet[((state >> (i % 58)) as usize + i * 7) % 64])
                    .collect(),
            );
        }
        let mut buf = Vec::new();
        for input in &inputs {
            for phase in 0..4 {
                let ours = decode_at(input, phase, &mut buf)
                    .and_then(|()| std::str::from_utf8(&buf).ok().map(str::to_string));
                let theirs = reference(input, phase);
                let theirs = theirs.filter(|t| {
                    t.len() >= 4
                        && t.chars()
                            .filter(|c| c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r'))
                            .count()
                            <= (input.len() * 3 / 4) / 20
                });
                assert_eq!(
                    ours,
                    theirs,
                    "{:?} at phase {phase}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn decodes_letterless_expressions_but_not_ids() {
        assert_eq!(
            decode_base64_text("e3sxMzM3KjEzMzh9fQ").as_deref(),
            Some("{{1337*1338}}")
        );
        // Hex ids and identifiers have one letter case only.
        assert_eq!(decode_base64_text("4f9a8b7c6d5e4f3a2b1c"), None);
        assert_eq!(decode_base64_text("price_asc_desc"), None);
    }
}
