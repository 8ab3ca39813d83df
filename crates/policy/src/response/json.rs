//! Scanning a JSON body value by value. Strings are scanned decoded (so `\n` before an
//! address or `\"` inside a traceback read as the client reads them), a string under a
//! telling key (`"password"`, `"api_key"`, ...) is a credential, and masking re-encodes each
//! changed string, so a masked document is still valid JSON with the same structure.
//!
//! This is a tokenizer, not a validator: it finds strings, numbers and object keys, and gives
//! up (`None`, the caller then scans the body as text) on anything that is not JSON.

use std::borrow::Cow;

use super::Report;
use super::detectors::{Detector, Hit, detector_of, find, patterns};

/// Deepest nesting followed; deeper documents are scanned as text.
const MAX_DEPTH: usize = 256;

#[derive(Clone, Copy)]
enum Container {
    Object { expect_key: bool },
    Array,
}

/// Scans `body`, reporting hits of the `flagged` patterns (indices into the pattern table)
/// and credentials under telling keys when `keys` is set. With `mask`, returns the masked
/// body when something was replaced. `None`: not JSON.
pub fn scan(
    body: &[u8],
    flagged: &[usize],
    keys: bool,
    mask: bool,
    report: &mut Report,
) -> Option<Option<Vec<u8>>> {
    let mut stack: Vec<Container> = Vec::new();
    let mut out: Option<Vec<u8>> = None;
    let mut copied_to = 0;
    let mut last_key: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'{' | b'[' => {
                if stack.len() >= MAX_DEPTH {
                    return None;
                }
                stack.push(if body[i] == b'{' {
                    Container::Object { expect_key: true }
                } else {
                    Container::Array
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop()?;
                i += 1;
            }
            b':' => {
                if let Some(Container::Object { expect_key }) = stack.last_mut() {
                    *expect_key = false;
                }
                i += 1;
            }
            b',' => {
                if let Some(Container::Object { expect_key }) = stack.last_mut() {
                    *expect_key = true;
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(body, i)?;
                let is_key = matches!(stack.last(), Some(Container::Object { expect_key: true }));
                // Keys are scanned too (an address can be a key); only values are judged by
                // the key above them.
                let key = match stack.last() {
                    Some(Container::Object { .. }) if !is_key => last_key.map(|(s, e)| &body[s..e]),
                    _ => None,
                };
                let replacement = string_value(body, i, end, key, flagged, keys, mask, report);
                if let Some(encoded) = replacement {
                    let buffer = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
                    buffer.extend_from_slice(&body[copied_to..i]);
                    buffer.extend_from_slice(encoded.as_bytes());
                    copied_to = end + 1;
                }
                if is_key {
                    last_key = Some((i + 1, end));
                }
                i = end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len()
                    && matches!(body[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                if number_value(&body[start..i], flagged, report) && mask {
                    let buffer = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
                    buffer.extend_from_slice(&body[copied_to..start]);
                    // `0` keeps the value a number (the document's schema holds).
                    buffer.push(b'0');
                    copied_to = i;
                }
            }
            b't' | b'f' | b'n' => {
                while i < body.len() && body[i].is_ascii_lowercase() {
                    i += 1;
                }
            }
            _ => return None,
        }
    }
    if !stack.is_empty() {
        return None;
    }
    Some(out.map(|mut buffer| {
        buffer.extend_from_slice(&body[copied_to..]);
        buffer
    }))
}

/// The index of the quote closing the string that opens at `start`.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Scans one string value (the quotes are at `open` and `close`); returns its masked JSON
/// encoding when masking changed it.
#[allow(clippy::too_many_arguments)]
fn string_value(
    body: &[u8],
    open: usize,
    close: usize,
    key: Option<&[u8]>,
    flagged: &[usize],
    keys: bool,
    mask: bool,
    report: &mut Report,
) -> Option<String> {
    let raw = &body[open + 1..close];
    let decoded: Cow<'_, [u8]> = if raw.contains(&b'\\') {
        match serde_json::from_slice::<String>(&body[open..=close]) {
            Ok(text) => Cow::Owned(text.into_bytes()),
            Err(_) => Cow::Borrowed(raw),
        }
    } else {
        Cow::Borrowed(raw)
    };
    let mut hits: Vec<Hit> = Vec::new();
    let p = patterns();
    if keys
        && let Some(key) = key
        && p.secret_name.is_match(key)
        && p.secret_value.is_match(&decoded)
    {
        hits.push(Hit {
            detector: Detector::ApiKey,
            start: 0,
            end: decoded.len(),
        });
    } else {
        for &index in flagged {
            find(index, &decoded, &mut hits);
        }
    }
    if hits.is_empty() {
        return None;
    }
    let masked = report.record(&decoded, &mut hits, mask)?;
    Some(serde_json::to_string(&String::from_utf8_lossy(&masked)).unwrap_or_default())
}

/// Scans one number token for card numbers; true when one was found.
fn number_value(number: &[u8], flagged: &[usize], report: &mut Report) -> bool {
    let mut hits = Vec::new();
    for &index in flagged {
        if detector_of(index) == Detector::CardNumber {
            find(index, number, &mut hits);
        }
    }
    hits.retain(|h| h.start == 0 && h.end == number.len());
    if hits.is_empty() {
        return false;
    }
    let _ = report.record(number, &mut hits, false);
    true
}
