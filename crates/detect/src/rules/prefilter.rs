//! Required-literal extraction: for a regex, a small set of literals of which every match must
//! contain at least one (compared ASCII-case-insensitively). The engine scans each value once
//! with an Aho-Corasick automaton of all rules' literals and only runs the rules whose literals
//! occur, so clean traffic costs one pass instead of one pass per rule group.
//!
//! The extraction is conservative: when no useful set can be proven (a pattern that may match
//! without any literal, such as `\w+`), the rule has no prefilter and always runs.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Most literals in a set.
const MAX_SET: usize = 64;
/// Longest literal kept (a prefix of a required literal is required too).
const MAX_LEN: usize = 24;
/// Largest character class turned into single-character literals.
const MAX_CLASS: usize = 12;
/// Punctuation that ordinary values are full of (paths, URLs, numbers, dates, prose, browser
/// user agents): a poor required literal.
const COMMON: &[u8] = b" /.-:,;()_";

#[derive(Debug, Clone, Default)]
struct Info {
    /// Every string the node can match, when finite and small.
    exact: Option<Vec<Vec<u8>>>,
    /// A set of which every match contains one.
    required: Option<Vec<Vec<u8>>>,
}

/// The literals (lowercase ASCII, raw UTF-8 otherwise) of which every match of `pattern`
/// contains one, or `None` when no useful set exists.
pub(crate) fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    let info = walk(&hir);
    let set = best(info.required, info.exact)?;
    let set: Vec<Vec<u8>> = set
        .into_iter()
        .map(|mut l| {
            // A byte prefix of a required literal is required too.
            l.truncate(MAX_LEN);
            l
        })
        .collect();
    let mut set = normalize(set);
    set.dedup();
    (!set.is_empty() && set.iter().all(|l| !l.is_empty())).then_some(set)
}

/// Whether every match of `pattern` contains the ASCII punctuation `byte` (a literal `\(`,
/// say): the rule cannot match a value without it, whatever literal armed it.
pub(crate) fn requires_byte(pattern: &str, byte: u8) -> bool {
    fn walk(hir: &Hir, byte: u8) -> bool {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => false,
            HirKind::Literal(lit) => lit.0.contains(&byte),
            HirKind::Class(Class::Unicode(c)) => c
                .ranges()
                .iter()
                .all(|r| r.start() == char::from(byte) && r.end() == char::from(byte)),
            HirKind::Class(Class::Bytes(c)) => c
                .ranges()
                .iter()
                .all(|r| r.start() == byte && r.end() == byte),
            HirKind::Repetition(rep) => rep.min > 0 && walk(&rep.sub, byte),
            HirKind::Capture(cap) => walk(&cap.sub, byte),
            HirKind::Concat(subs) => subs.iter().any(|s| walk(s, byte)),
            HirKind::Alternation(subs) => subs.iter().all(|s| walk(s, byte)),
        }
    }
    !byte.is_ascii_alphanumeric()
        && regex_syntax::ParserBuilder::new()
            .build()
            .parse(pattern)
            .is_ok_and(|hir| walk(&hir, byte))
}

fn normalize(set: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = set
        .into_iter()
        .map(|mut l| {
            l.make_ascii_lowercase();
            l
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How selective a set is: its shortest literal, then fewer literals.
fn quality(set: &[Vec<u8>]) -> (usize, usize) {
    let min = set.iter().map(Vec::len).min().unwrap_or(0);
    // Single letters and digits occur in almost every value, and so does the punctuation of
    // ordinary text, URLs, numbers and dates; other punctuation is rarer.
    let weighted = if min == 1
        && set
            .iter()
            .any(|l| l.len() == 1 && (l[0].is_ascii_alphanumeric() || COMMON.contains(&l[0])))
    {
        0
    } else {
        min * 2
    };
    (weighted, usize::MAX - set.len())
}

fn best(a: Option<Vec<Vec<u8>>>, b: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
    let valid = |s: &Option<Vec<Vec<u8>>>| {
        s.as_ref()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|l| !l.is_empty()))
    };
    match (valid(&a), valid(&b)) {
        (true, true) => {
            let (a, b) = (a?, b?);
            Some(if quality(&b) > quality(&a) { b } else { a })
        }
        (true, false) => a,
        (false, true) => b,
        (false, false) => None,
    }
}

fn cross(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut l = x.clone();
            l.extend_from_slice(y);
            if l.len() > MAX_LEN * 2 {
                return None;
            }
            out.push(l);
        }
    }
    Some(out)
}

fn walk(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info {
            exact: Some(vec![Vec::new()]),
            required: None,
        },
        HirKind::Literal(lit) => {
            let set = normalize(vec![lit.0.to_vec()]);
            Info {
                exact: Some(set.clone()),
                required: Some(set),
            }
        }
        HirKind::Class(class) => {
            let set = class_literals(class);
            Info {
                exact: set.clone(),
                required: set,
            }
        }
        HirKind::Repetition(rep) => {
            if rep.min == 0 {
                return Info::default();
            }
            let sub = walk(&rep.sub);
            let exact = if rep.min == 1 && rep.max == Some(1) {
                sub.exact.clone()
            } else {
                None
            };
            // `x{n,}` contains `n` copies of one of `x`'s strings in a row.
            let repeated = match &sub.exact {
                Some(e) if rep.min >= 2 && e.len() == 1 => {
                    let copies = (rep.min as usize).min(4);
                    Some(vec![e[0].repeat(copies)])
                }
                _ => None,
            };
            Info {
                exact,
                required: best(best(sub.required, sub.exact), repeated),
            }
        }
        HirKind::Capture(cap) => walk(&cap.sub),
        HirKind::Alternation(subs) => {
            let infos: Vec<Info> = subs.iter().map(walk).collect();
            let exact = infos
                .iter()
                .try_fold(Vec::new(), |mut acc, i| {
                    acc.extend(i.exact.clone()?);
                    (acc.len() <= MAX_SET).then_some(acc)
                })
                .map(normalize);
            let required = infos
                .into_iter()
                .try_fold(Vec::new(), |mut acc, i| {
                    acc.extend(best(i.required, i.exact)?);
                    Some(acc)
                })
                .map(normalize);
            Info { exact, required }
        }
        HirKind::Concat(subs) => {
            let infos: Vec<Info> = subs.iter().map(walk).collect();
            let mut required: Option<Vec<Vec<u8>>> = None;
            // Runs of consecutive exact children concatenate into longer literals.
            let mut run: Option<Vec<Vec<u8>>> = None;
            let mut all_exact = true;
            for info in &infos {
                required = best(required, info.required.clone());
                match &info.exact {
                    Some(e) => {
                        run = match run {
                            None => Some(e.clone()),
                            Some(r) => match cross(&r, e) {
                                Some(c) => Some(normalize(c)),
                                None => {
                                    required = best(required, Some(r));
                                    Some(e.clone())
                                }
                            },
                        };
                    }
                    None => {
                        all_exact = false;
                        if let Some(r) = run.take() {
                            required = best(required, Some(r));
                        }
                    }
                }
            }
            let exact = if all_exact { run.clone() } else { None };
            if let Some(r) = run {
                required = best(required, Some(r));
            }
            Info { exact, required }
        }
    }
}

fn class_literals(class: &Class) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    match class {
        Class::Unicode(c) => {
            for range in c.ranges() {
                let (s, e) = (range.start() as u32, range.end() as u32);
                if e - s > MAX_CLASS as u32 {
                    return None;
                }
                for cp in s..=e {
                    let ch = char::from_u32(cp)?;
                    let mut buf = [0u8; 4];
                    out.push(ch.encode_utf8(&mut buf).as_bytes().to_vec());
                    if out.len() > MAX_CLASS * 2 {
                        return None;
                    }
                }
            }
        }
        Class::Bytes(c) => {
            for range in c.ranges() {
                if range.end() - range.start() > MAX_CLASS as u8 {
                    return None;
                }
                for b in range.start()..=range.end() {
                    out.push(vec![b]);
                }
            }
        }
    }
    let out = normalize(out);
    (out.len() <= MAX_CLASS).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|s| {
            s.into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect()
        })
    }

    #[test]
    fn extracts_required_literals() {
        assert_eq!(lits(r"\$\{jndi:"), Some(vec!["${jndi:".into()]));
        // Either side of the concatenation is a valid choice; the longer literals win.
        let l = lits(r"(?i)\b(?:union|select)\s+from").unwrap();
        assert!(l.contains(&"union".to_string()) && l.contains(&"select".to_string()));
        let l = lits(r"(?i)jndi:(?:ldap|rmi)://").unwrap();
        assert!(l.contains(&"jndi:ldap://".to_string()), "{l:?}");
        assert_eq!(lits(r"\w+"), None);
        assert_eq!(lits(r"a?"), None);
        assert_eq!(lits(r"[\r\n]"), Some(vec!["\n".into(), "\r".into()]));
        assert_eq!(lits(r"x|\d+"), None);
        // Repetitions of one string require that many copies; common punctuation loses.
        assert_eq!(lits(r"\.{2,}/"), Some(vec!["..".into()]));
        assert_eq!(lits(r"/(?:ab|[^/]+~)"), Some(vec!["ab".into(), "~".into()]));
    }

    #[test]
    fn finds_required_punctuation() {
        assert!(requires_byte(r"(?i)\b(?:ascii|ord|hex)\s*\(", b'('));
        assert!(requires_byte(r"(?:eval|exec)\(|system[(]", b'('));
        assert!(!requires_byte(r"(?:eval|exec)\(|return true", b'('));
        assert!(!requires_byte(r"(?:\()?x", b'('));
        assert!(requires_byte(r"(?:a\(){2,}", b'('));
        assert!(!requires_byte(r"[()]x", b'('));
        assert!(!requires_byte(r"x", b'x'));
    }
}
