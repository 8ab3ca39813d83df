//! JSON bodies: every key and every string (and number) value, with its JSON path.
//!
//! A borrowed scanner validates the document in one pass and records each key and value as a
//! span of the text, in document order: nothing is copied, no tree is built, and duplicate
//! keys are all kept (an application may read the first or the last one, so every one is
//! inspected). A value's JSON path is kept as links to its parents and written out only when
//! someone needs it (a finding, an exclusion, a check on argument names); a string with
//! escapes is unescaped only when it is inspected.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::gate::Features;
use crate::rules::RuleSet;
use crate::target::LiteralMask;

/// What a JSON walk hands to its visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonItem {
    Key,
    Value,
}

/// Why a JSON walk stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonIssue {
    /// Not valid JSON.
    Invalid,
    /// Nested deeper than allowed; the deeper part was not inspected.
    TooDeep,
    /// More items than allowed; the rest was not inspected.
    TooMany,
}

/// Most segments written of a JSON path (a target name in findings and events stays short
/// however deep a document nests).
const MAX_PATH_SEGMENTS: usize = 64;

/// No parent: the node hangs off the root (`$`).
const ROOT: u32 = u32::MAX;
/// A path that was not kept (past the bound on path nodes): written `$…`.
const CUT: u32 = u32::MAX - 1;

/// A key or a string or number value: `text[start..end]` (without the quotes of a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    /// A string with backslash escapes: its value is not the raw text.
    pub escaped: bool,
}

/// One key or value of a scanned document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemSpan {
    pub item: JsonItem,
    pub span: Span,
    /// The path node of the item (a member's key and value share their member's node).
    pub node: u32,
    /// What the scan learnt of the item's bytes, when it classified them (a prefilter was
    /// given and the item has no escape, so that its value is its raw text).
    pub classified: Option<Classified>,
}

/// What the one pass over a document learns about a key or value without escapes: which bytes
/// it holds, and which target groups' rules the prefilter literals found in it arm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Classified {
    pub features: Features,
    pub literals: LiteralMask,
}

#[derive(Debug, Clone, Copy)]
enum Segment {
    Key(Span),
    Index(usize),
}

#[derive(Debug, Clone, Copy)]
struct PathNode {
    parent: u32,
    segment: Segment,
}

/// A scanned JSON document: its keys and values in document order.
#[derive(Debug)]
pub(crate) struct JsonDoc<'t> {
    pub text: &'t str,
    pub items: Vec<ItemSpan>,
    nodes: Vec<PathNode>,
    /// A bound that was reached (`TooDeep` or `TooMany`); the document itself is valid.
    pub issue: Option<JsonIssue>,
}

/// An open array or object while scanning.
struct Frame {
    array: bool,
    /// Elements seen so far (arrays).
    count: usize,
    /// The path node of the container itself.
    node: u32,
}

/// The scanner's state: the document being built and the bounds.
struct Scanner<'t, 'r> {
    doc: JsonDoc<'t>,
    /// The prefilter whose literals each key and value is classified with, if any.
    prefilter: Option<&'r RuleSet>,
    frames: Vec<Frame>,
    max_depth: usize,
    max_items: usize,
    /// Path nodes kept at most: members and elements that hold no recorded item (`null`,
    /// `true`, containers) have nodes too, so they are bounded as well. Past the bound, items
    /// are still recorded, with their path cut (`$…`).
    max_nodes: usize,
}

impl Scanner<'_, '_> {
    fn recording(&self) -> bool {
        self.doc.issue != Some(JsonIssue::TooMany)
    }

    /// A path node for the next member or element of the innermost container.
    #[inline(always)]
    fn node(&mut self, segment: Segment) -> u32 {
        if !self.recording() {
            return ROOT;
        }
        let parent = self.frames.last().map_or(ROOT, |f| f.node);
        if self.doc.nodes.len() >= self.max_nodes || parent == CUT {
            return CUT;
        }
        self.doc.nodes.push(PathNode { parent, segment });
        (self.doc.nodes.len() - 1) as u32
    }

    #[inline(always)]
    fn record(&mut self, item: JsonItem, span: Span, node: u32, classified: Option<Classified>) {
        if !self.recording() {
            return;
        }
        if self.doc.items.len() >= self.max_items {
            self.doc.issue = Some(JsonIssue::TooMany);
            return;
        }
        self.doc.items.push(ItemSpan {
            item,
            span,
            node,
            classified,
        });
    }

    /// The prefilter to classify the next item with: none once items are no longer recorded.
    fn classifier(&self) -> Option<&RuleSet> {
        self.prefilter.filter(|_| self.recording())
    }

    fn open(&mut self, array: bool, node: u32) {
        // Nesting costs no stack here, so what lies deeper is still recorded (a payload
        // nested past the bound is not hidden by it); the bound is reported.
        if self.frames.len() >= self.max_depth {
            self.doc.issue.get_or_insert(JsonIssue::TooDeep);
        }
        self.frames.push(Frame {
            array,
            count: 0,
            node,
        });
    }

    fn close(&mut self) {
        self.frames.pop();
    }
}

/// Parses `text` and records every object key and every string and number value, up to
/// `max_items` items; nesting deeper than `max_depth` is reported (`TooDeep`) but what lies
/// there is recorded too. The whole text is validated in any case (`Err` when it is not
/// JSON). Nesting is tracked on the heap, so depth cannot overflow the stack.
///
/// With a `prefilter`, the same pass classifies every key and value without escapes (see
/// [`Classified`]): each byte of a string is looked up in the prefilter's literal automaton
/// (restarted at every string, so a literal found lies in that one string) and added to the
/// string's byte set, as it is read.
pub(crate) fn scan<'t>(
    text: &'t str,
    max_depth: usize,
    max_items: usize,
    prefilter: Option<&RuleSet>,
) -> Result<JsonDoc<'t>, ()> {
    let bytes = text.as_bytes();
    // About one key or value per 8 bytes of an ordinary document.
    let expected = (text.len() / 8).min(max_items);
    let mut s = Scanner {
        doc: JsonDoc {
            text,
            items: Vec::with_capacity(expected),
            nodes: Vec::with_capacity(expected),
            issue: None,
        },
        prefilter,
        frames: Vec::new(),
        max_depth,
        max_items,
        max_nodes: max_items.saturating_mul(4).saturating_add(64),
    };
    let mut pos = skip_ws(bytes, 0);
    // The path node of the value about to be read (its member's or element's).
    let mut slot = ROOT;
    loop {
        // A value is expected at `pos`.
        let Some(&b) = bytes.get(pos) else {
            return Err(());
        };
        match b {
            b'{' | b'[' => {
                s.open(b == b'[', slot);
                pos = skip_ws(bytes, pos + 1);
                let close = if b == b'[' { b']' } else { b'}' };
                if bytes.get(pos) == Some(&close) {
                    pos += 1;
                    s.close();
                    // Fall through to what follows a value.
                } else {
                    (pos, slot) = next_slot(&mut s, bytes, pos)?;
                    continue;
                }
            }
            b'"' => {
                let (span, classified) = string(bytes, pos, s.classifier())?;
                pos = span.end + 1;
                s.record(JsonItem::Value, span, slot, classified);
            }
            b'-' | b'0'..=b'9' => {
                let end = number(bytes, pos)?;
                let span = Span {
                    start: pos,
                    end,
                    escaped: false,
                };
                let classified = s.classifier().map(|rules| classify(rules, bytes, pos, end));
                pos = end;
                s.record(JsonItem::Value, span, slot, classified);
            }
            b't' | b'f' | b'n' => {
                let word: &[u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if !bytes[pos..].starts_with(word) {
                    return Err(());
                }
                pos += word.len();
            }
            _ => return Err(()),
        }
        // After a value: the end of the document, or `,` / a closing bracket of a container.
        loop {
            pos = skip_ws(bytes, pos);
            let Some(frame) = s.frames.last() else {
                return if pos == bytes.len() {
                    Ok(s.doc)
                } else {
                    Err(())
                };
            };
            let close = if frame.array { b']' } else { b'}' };
            match bytes.get(pos) {
                Some(&b',') => {
                    pos = skip_ws(bytes, pos + 1);
                    (pos, slot) = next_slot(&mut s, bytes, pos)?;
                    break;
                }
                Some(&c) if c == close => {
                    pos += 1;
                    s.close();
                }
                _ => return Err(()),
            }
        }
    }
}

/// Starts the next member (`"key":`, recorded) or element of the innermost container at
/// `pos`; returns the position of its value and its path node.
#[inline(always)]
fn next_slot(s: &mut Scanner<'_, '_>, bytes: &[u8], pos: usize) -> Result<(usize, u32), ()> {
    let Some(frame) = s.frames.last_mut() else {
        return Err(());
    };
    if frame.array {
        let index = frame.count;
        frame.count += 1;
        return Ok((pos, s.node(Segment::Index(index))));
    }
    if bytes.get(pos) != Some(&b'"') {
        return Err(());
    }
    let (span, classified) = string(bytes, pos, s.classifier())?;
    let after = skip_ws(bytes, span.end + 1);
    if bytes.get(after) != Some(&b':') {
        return Err(());
    }
    let node = s.node(Segment::Key(span));
    s.record(JsonItem::Key, span, node, classified);
    Ok((skip_ws(bytes, after + 1), node))
}

fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// Bytes that end a run of plain string content: the quote, the backslash and the control
/// characters JSON forbids raw.
static STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The string starting with the quote at `pos`: its content span (`end` is the closing quote),
/// classified by `prefilter` when it has no escape.
#[inline(always)]
fn string(
    bytes: &[u8],
    pos: usize,
    prefilter: Option<&RuleSet>,
) -> Result<(Span, Option<Classified>), ()> {
    if let Some(rules) = prefilter
        && let Some((end, classified)) = classified_string(rules, bytes, pos + 1)
    {
        let span = Span {
            start: pos + 1,
            end,
            escaped: false,
        };
        return Ok((span, Some(classified)));
    }
    Ok((plain_string(bytes, pos)?, None))
}

/// A string's content from `start` read and classified in one pass, when it ends at a quote
/// without any escape (its closing quote's position); `None` otherwise (an escape, a control
/// character, the end of the text), for [`plain_string`] to read or refuse. Out of line: its
/// loop keeps the automaton's table in registers only when it has them to itself.
#[inline(never)]
fn classified_string(rules: &RuleSet, bytes: &[u8], start: usize) -> Option<(usize, Classified)> {
    let mut literals = LiteralMask::default();
    let mut if_second_word = 0u16;
    let mut words = [0u64; 4];
    let rest = bytes.get(start..)?;
    // The string's length, once its end is found.
    let mut len = None;
    if let Some(dfa) = &rules.gate.literals
        && let Some(mut state) = dfa.start()
    {
        for (k, &b) in rest.iter().enumerate() {
            if STRING_STOP[usize::from(b)] {
                len = Some(k);
                break;
            }
            words[usize::from(b >> 6)] |= 1u64 << (b & 63);
            state = dfa.next(state, b);
            if dfa.is_special(state) {
                rules.classify_matches(state, rest, k + 1, &mut literals, &mut if_second_word);
            }
        }
    } else {
        for (k, &b) in rest.iter().enumerate() {
            if STRING_STOP[usize::from(b)] {
                len = Some(k);
                break;
            }
            words[usize::from(b >> 6)] |= 1u64 << (b & 63);
        }
    }
    let len = len?;
    if rest[len] != b'"' {
        return None;
    }
    let i = start + len;
    let raw = &rest[..len];
    if if_second_word != 0 && crate::detectors::cmdi::has_second_word(raw) {
        literals.groups |= if_second_word;
    }
    let classified = Classified {
        features: Features::from_words(words),
        literals,
    };
    Some((i, classified))
}

/// A number's bytes (`bytes[start..end]`) classified.
fn classify(rules: &RuleSet, bytes: &[u8], start: usize, end: usize) -> Classified {
    let mut literals = LiteralMask::default();
    let mut if_second_word = 0u16;
    if let Some(dfa) = &rules.gate.literals
        && let Some(mut state) = dfa.start()
    {
        for i in start..end {
            state = dfa.next(state, bytes[i]);
            if dfa.is_special(state) {
                rules.classify_matches(
                    state,
                    &bytes[start..],
                    i + 1 - start,
                    &mut literals,
                    &mut if_second_word,
                );
            }
        }
    }
    classified(&bytes[start..end], literals, if_second_word)
}

/// The classification of `raw`, whose literals arm `literals` and, if it has a second word,
/// `if_second_word` (see `RuleSet::classify_matches`).
#[inline]
fn classified(raw: &[u8], mut literals: LiteralMask, if_second_word: u16) -> Classified {
    if if_second_word != 0 && crate::detectors::cmdi::has_second_word(raw) {
        literals.groups |= if_second_word;
    }
    Classified {
        features: Features::of_bytes(raw),
        literals,
    }
}

/// The string starting with the quote at `pos`: its content span (`end` is the closing quote).
fn plain_string(bytes: &[u8], pos: usize) -> Result<Span, ()> {
    let start = pos + 1;
    let mut i = start;
    let mut escaped = false;
    loop {
        while let Some(&b) = bytes.get(i)
            && !STRING_STOP[usize::from(b)]
        {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else {
            return Err(());
        };
        match b {
            b'"' => {
                return Ok(Span {
                    start,
                    end: i,
                    escaped,
                });
            }
            b'\\' => {
                escaped = true;
                match bytes.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let hex = bytes.get(i + 2..i + 6).ok_or(())?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(());
                        }
                        i += 6;
                    }
                    _ => return Err(()),
                }
            }
            0..=0x1f => return Err(()),
            _ => i += 1,
        }
    }
}

/// The end of the number starting at `pos` (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
fn number(bytes: &[u8], pos: usize) -> Result<usize, ()> {
    let digits = |mut i: usize| {
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i).ok_or(())
    };
    let mut i = pos;
    if bytes[i] == b'-' {
        i += 1;
    }
    i = match bytes.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i)?,
        _ => return Err(()),
    };
    if bytes.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Ok(i)
}

impl<'t> JsonDoc<'t> {
    /// The text of a key or value: borrowed, or unescaped when it has escapes.
    #[inline]
    pub(crate) fn value(&self, span: Span) -> Cow<'t, str> {
        let raw = &self.text[span.start..span.end];
        if span.escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        }
    }

    /// Writes the JSON path of `node` (`$.a.b[0]`, `$['odd key']`) without its leading `$`.
    /// Paths deeper than [`MAX_PATH_SEGMENTS`] are cut there and end with `…`.
    pub(crate) fn write_path(&self, node: u32, out: &mut String) {
        if node == CUT {
            out.push('…');
            return;
        }
        let mut chain: Vec<Segment> = Vec::new();
        let mut at = node;
        while at != ROOT {
            let n = self.nodes[at as usize];
            chain.push(n.segment);
            at = n.parent;
        }
        for segment in chain.iter().rev().take(MAX_PATH_SEGMENTS) {
            match *segment {
                Segment::Key(span) => push_key(out, &self.value(span)),
                Segment::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        if chain.len() > MAX_PATH_SEGMENTS {
            out.push('…');
        }
    }

    /// Whether `node` is the top-level member `key` (`$.query`).
    pub(crate) fn is_top_level_key(&self, node: u32, key: &str) -> bool {
        let Some(n) = self.nodes.get(node as usize) else {
            return false;
        };
        matches!(n.segment, Segment::Key(span) if n.parent == ROOT && self.value(span) == key)
    }
}

/// The value of a JSON string's content (already validated by [`scan`]); a lone surrogate
/// becomes U+FFFD, as most parsers do.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = &rest[i + 1..];
        let mut chars = esc.chars();
        let consumed = match chars.next() {
            Some('u') => {
                let unit = |s: &str| s.get(..4).and_then(|h| u32::from_str_radix(h, 16).ok());
                match unit(&esc[1..]) {
                    Some(hi @ 0xd800..=0xdbff) => {
                        let low = esc
                            .get(5..7)
                            .filter(|p| *p == "\\u")
                            .and_then(|_| unit(&esc[7..]))
                            .filter(|lo| (0xdc00..=0xdfff).contains(lo));
                        match low {
                            Some(lo) => {
                                let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                                out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                                11
                            }
                            None => {
                                out.push('\u{fffd}');
                                5
                            }
                        }
                    }
                    Some(unit) => {
                        out.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
                        5
                    }
                    None => {
                        out.push('\u{fffd}');
                        esc.len().min(1)
                    }
                }
            }
            Some(c) => {
                out.push(match c {
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    other => other,
                });
                c.len_utf8()
            }
            None => 0,
        };
        rest = &esc[consumed.min(esc.len())..];
    }
    out.push_str(rest);
    out
}

/// Parses `text` and calls `visit(item, path, text)` for every object key and every string (and
/// number, as written) value, in document order (every one of duplicate keys), up to
/// `max_items` calls; nesting deeper than `max_depth` is reported once the walk is done.
pub fn walk_json(
    text: &str,
    max_depth: usize,
    max_items: usize,
    visit: &mut dyn FnMut(JsonItem, &str, &str),
) -> Result<(), JsonIssue> {
    let doc = scan(text, max_depth, max_items, None).map_err(|()| JsonIssue::Invalid)?;
    let mut path = String::new();
    for item in &doc.items {
        path.clear();
        path.push('$');
        doc.write_path(item.node, &mut path);
        visit(item.item, &path, &doc.value(item.span));
    }
    doc.issue.map_or(Ok(()), Err)
}

/// `.name` for identifier-like keys, `['odd key']` otherwise.
fn push_key(path: &mut String, key: &str) {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if simple {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str("['");
        for c in key.chars().take(64) {
            match c {
                '\'' | '\\' => {
                    path.push('\\');
                    path.push(c);
                }
                c if c.is_control() => path.push('?'),
                c => path.push(c),
            }
        }
        path.push_str("']");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Collected = (Vec<(JsonItem, String, String)>, Result<(), JsonIssue>);

    fn collect(text: &str, depth: usize) -> Collected {
        let mut out = Vec::new();
        let r = walk_json(text, depth, 100, &mut |i, p, v| {
            out.push((i, p.to_string(), v.to_string()))
        });
        (out, r)
    }

    #[test]
    fn walks_with_paths() {
        let (items, r) = collect(r#"{"a":{"b":["x",2]},"odd key":"y","$ne":1}"#, 10);
        assert!(r.is_ok());
        assert!(items.contains(&(JsonItem::Value, "$.a.b[0]".into(), "x".into())));
        assert!(items.contains(&(JsonItem::Value, "$.a.b[1]".into(), "2".into())));
        assert!(items.contains(&(JsonItem::Value, "$['odd key']".into(), "y".into())));
        assert!(items.contains(&(JsonItem::Key, "$['$ne']".into(), "$ne".into())));
        assert!(items.contains(&(JsonItem::Key, "$.a.b".into(), "b".into())));
    }

    #[test]
    fn keeps_document_order_and_every_duplicate() {
        let (items, r) = collect(r#"{"b":"first","a":[{"k":"v"},[],{}],"b":"second"}"#, 10);
        assert!(r.is_ok());
        let seen: Vec<(String, String)> = items.into_iter().map(|(_, p, v)| (p, v)).collect();
        let expected = [
            ("$.b", "b"),
            ("$.b", "first"),
            ("$.a", "a"),
            ("$.a[0].k", "k"),
            ("$.a[0].k", "v"),
            ("$.b", "b"),
            ("$.b", "second"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn unescapes_strings_and_keys() {
        let (items, r) = collect(
            r#"{"k\"ey":"a\u0041\n\/\ud83d\ude00\ud800x","n":-1.5e3}"#,
            10,
        );
        assert!(r.is_ok());
        assert!(items.contains(&(JsonItem::Key, "$['k\"ey']".into(), "k\"ey".into())));
        assert!(items.contains(&(
            JsonItem::Value,
            "$['k\"ey']".into(),
            "aA\n/\u{1f600}\u{fffd}x".into()
        )));
        assert!(items.contains(&(JsonItem::Value, "$.n".into(), "-1.5e3".into())));
    }

    #[test]
    fn reports_bounds() {
        assert_eq!(
            collect(r#"{"a":{"b":{"c":"d"}}}"#, 2).1,
            Err(JsonIssue::TooDeep)
        );
        let (items, r) = collect(r#"{"a":{"b":{"c":"d"}},"e":"f"}"#, 2);
        assert_eq!(r, Err(JsonIssue::TooDeep));
        // The bound is reported, and nothing is hidden behind it.
        assert!(items.contains(&(JsonItem::Value, "$.e".into(), "f".into())));
        assert!(items.contains(&(JsonItem::Value, "$.a.b.c".into(), "d".into())));
        let mut n = 0;
        let r = walk_json(r#"["a","b","c"]"#, 10, 2, &mut |_, _, _| n += 1);
        assert_eq!((n, r), (2, Err(JsonIssue::TooMany)));
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            "",
            "{nope",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":1}x",
            "\"raw\ncontrol\"",
            "\"bad \\x escape\"",
            "\"\\u12\"",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "[",
            "{\"a\":",
            "{1:2}",
            "}",
        ] {
            assert_eq!(collect(bad, 10).1, Err(JsonIssue::Invalid), "{bad:?}");
        }
        for good in [
            "0",
            "-0.5E+3",
            " [ ] ",
            "{}",
            "\"x\"",
            "[true,false,null,{\"a\":[[]]}]",
        ] {
            assert!(collect(good, 10).1.is_ok(), "{good:?}");
        }
    }

    /// The scanner accepts exactly the documents serde_json accepts, but for serde_json's
    /// own limits (nesting beyond 128, numbers beyond `f64`) and lone surrogates, which it
    /// keeps as U+FFFD: checked on many mutations of real-looking documents.
    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let seeds = [
            r#"{"a":[1,-2.5e3,true,null,{"b":"c\"d\u0041"}],"e":{}}"#,
            r#"[{"k":"v"},[],"\ud83d\ude00",0.5,-0,1E+2]"#,
            r#" {"x" : [ "y" , { "z" : false } ] } "#,
        ];
        let alphabet = b"{}[]:,\"\\u0123456789abcdefEtrunl-+. \t\nx";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut doc = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % (doc.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < doc.len() => {
                        doc.remove(at);
                    }
                    1 if at < doc.len() => doc[at] = byte,
                    _ => doc.insert(at, byte),
                }
            }
            let text = String::from_utf8(doc).expect("ASCII");
            let ours = scan(&text, 64, 1000, None).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(&text);
            match (&theirs, ours) {
                (Ok(_), false) => panic!("valid JSON refused: {text:?}"),
                // A high surrogate not followed by a low one: "lone leading surrogate" or
                // "unexpected end of hex escape", depending on what follows.
                (Err(e), true) => assert!(
                    e.to_string().contains("surrogate") || e.to_string().contains("hex escape"),
                    "invalid JSON accepted ({e}): {text:?}"
                ),
                _ => {}
            }
        }
    }

    /// Classifying while scanning changes nothing of the scan (the same documents are refused,
    /// the same items recorded), and what it says of an item is what the item's own bytes
    /// say: its byte set, and the literals a search of the item finds (checked on many
    /// mutations of real-looking documents holding literals, escapes and numbers).
    #[test]
    fn classifying_while_scanning_agrees_with_the_items_themselves() {
        let rules = RuleSet::compile(&[], 1).expect("rules");
        let seeds = [
            r#"{"cmd":"ls -la /etc","q":"1' or '1'='1","n":-1.5e3,"e":"a\u0041b"}"#,
            r#"[{"k":"<svg/onload=alert(1)>"},"summer sale","unit_price",0.5,"wget x"]"#,
            r#" {"ja va" : [ "eval(x)" , { "z" : "select * from t" } ] } "#,
        ];
        let alphabet = b"{}[]:,\"\\u0123456789abcdefEtrunl-+. \t\nx(<'=/";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut classified_items = 0;
        for round in 0..5_000 {
            let mut doc = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..(next() % 3) {
                let at = (next() as usize) % (doc.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < doc.len() => {
                        doc.remove(at);
                    }
                    1 if at < doc.len() => doc[at] = byte,
                    _ => doc.insert(at, byte),
                }
            }
            let text = String::from_utf8(doc).expect("ASCII");
            let plain = scan(&text, 64, 1000, None);
            let classified = scan(&text, 64, 1000, Some(&rules));
            let (plain, classified) = match (plain, classified) {
                (Ok(p), Ok(c)) => (p, c),
                (Err(()), Err(())) => continue,
                _ => panic!("classification changed what is accepted: {text:?}"),
            };
            assert_eq!(plain.items.len(), classified.items.len(), "{text:?}");
            for (p, c) in plain.items.iter().zip(&classified.items) {
                assert_eq!(
                    (p.item, p.span, p.node),
                    (c.item, c.span, c.node),
                    "{text:?}"
                );
                let raw = &text[c.span.start..c.span.end];
                let Some(got) = c.classified else {
                    assert!(c.span.escaped, "{raw:?} in {text:?} not classified");
                    continue;
                };
                classified_items += 1;
                let f = Features::of(raw);
                assert_eq!(
                    (
                        got.features.non_ascii,
                        (0u8..0x80).all(|b| got.features.has(b) == f.has(b))
                    ),
                    (f.non_ascii, true),
                    "{raw:?}"
                );
                // The literals the value's own search finds arm exactly these groups.
                let mut own = LiteralMask::default();
                let mut if_second_word = 0;
                if let Some(dfa) = &rules.gate.literals
                    && let Some(mut sid) = dfa.start()
                {
                    for (i, &b) in raw.as_bytes().iter().enumerate() {
                        sid = dfa.next(sid, b);
                        if dfa.is_special(sid) {
                            rules.classify_matches(
                                sid,
                                raw.as_bytes(),
                                i + 1,
                                &mut own,
                                &mut if_second_word,
                            );
                        }
                    }
                }
                if if_second_word != 0 && crate::detectors::cmdi::has_second_word(raw.as_bytes()) {
                    own.groups |= if_second_word;
                }
                assert_eq!(got.literals, own, "{raw:?} in {text:?}");
            }
        }
        assert!(classified_items > 10_000, "{classified_items}");
    }

    #[test]
    fn deep_nesting_neither_overflows_nor_hides_the_rest() {
        let deep = format!("{}\"x\"{}", "[".repeat(100_000), "]".repeat(100_000));
        let (items, r) = collect(&deep, 64);
        assert_eq!(r, Err(JsonIssue::TooDeep));
        // The value at the bottom is there, its path cut short (past the bound on path
        // nodes here; past 64 segments otherwise).
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].1, "$…");
        assert_eq!(items[0].2, "x");
        let deep = format!("{}\"x\"{}", "[".repeat(300), "]".repeat(300));
        let (items, _) = collect(&deep, 64);
        assert_eq!(items[0].1, format!("${}…", "[0]".repeat(64)));
        assert_eq!(
            collect(&deep[..deep.len() - 1], 64).1,
            Err(JsonIssue::Invalid)
        );
    }
}
