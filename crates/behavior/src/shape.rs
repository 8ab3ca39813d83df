//! The positive model of one parameter: what its values looked like in clean traffic (their
//! character class, their length, and for enumerations the set of values), and how a new
//! value departs from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Character classes, from the narrowest to the widest; a value's class is the narrowest that
/// holds all of its characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CharClass {
    Empty,
    /// `0-9`, optionally with one leading `-`.
    Numeric,
    /// Hexadecimal digits.
    Hex,
    /// Letters and digits.
    Alphanumeric,
    /// Letters, digits and `-_.~:@+,` (slugs, emails, dates, tokens).
    Token,
    /// Printable text with spaces and punctuation but no quotes, angle brackets or semicolons.
    Text,
    /// Anything else.
    Any,
}

impl CharClass {
    pub fn of(value: &str) -> CharClass {
        if value.is_empty() {
            return CharClass::Empty;
        }
        let digits = value.strip_prefix('-').unwrap_or(value);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return CharClass::Numeric;
        }
        let mut class = CharClass::Hex;
        for c in value.chars() {
            let needed = if c.is_ascii_hexdigit() {
                CharClass::Hex
            } else if c.is_alphanumeric() {
                CharClass::Alphanumeric
            } else if "-_.~:@+,".contains(c) {
                CharClass::Token
            } else if c == ' ' || "/!?()[]*=#$%&{}|^`".contains(c) {
                CharClass::Text
            } else {
                CharClass::Any
            };
            class = class.max(needed);
        }
        class
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CharClass::Empty => "empty",
            CharClass::Numeric => "numeric",
            CharClass::Hex => "hex",
            CharClass::Alphanumeric => "alphanumeric",
            CharClass::Token => "token",
            CharClass::Text => "text",
            CharClass::Any => "any",
        }
    }
}

/// Tuning of the shape model.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeParams {
    /// Clean samples of a parameter before it is judged.
    pub min_samples: u64,
    /// A value longer than `max(longest seen × length_factor, longest seen + 8)` is overlong.
    pub length_factor: f64,
    /// A parameter with at most this many distinct values, each seen many times, is an
    /// enumeration.
    pub enum_max_values: usize,
}

/// Longest value kept in an enumeration's value set.
const ENUM_VALUE_MAX_LEN: usize = 64;

/// What one parameter's clean values looked like.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ParamShape {
    pub samples: u64,
    /// Samples per class (index = `CharClass as usize`).
    pub classes: [u64; 7],
    pub min_len: usize,
    pub max_len: usize,
    /// Distinct values and their counts while there are at most `enum_max_values` of them;
    /// `None` once there were more (then it is not an enumeration).
    pub values: Option<BTreeMap<String, u64>>,
}

/// How a value departs from its learned shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Deviation {
    /// Its class is wider than every class seen.
    Class {
        observed: CharClass,
        expected: CharClass,
    },
    /// It is longer than allowed.
    Length {
        observed: usize,
        max_seen: usize,
        allowed: usize,
    },
    /// An enumeration got a value never seen.
    Unseen { allowed: Vec<String> },
}

impl ParamShape {
    /// The widest class seen.
    pub fn widest(&self) -> CharClass {
        const ALL: [CharClass; 7] = [
            CharClass::Empty,
            CharClass::Numeric,
            CharClass::Hex,
            CharClass::Alphanumeric,
            CharClass::Token,
            CharClass::Text,
            CharClass::Any,
        ];
        ALL.iter()
            .rev()
            .copied()
            .find(|c| self.classes[*c as usize] > 0)
            .unwrap_or(CharClass::Empty)
    }

    /// Learns from a clean value.
    pub fn learn(&mut self, value: &str, params: &ShapeParams) {
        let class = CharClass::of(value);
        let len = value.chars().count();
        if self.samples == 0 {
            self.min_len = len;
            self.max_len = len;
            self.values = Some(BTreeMap::new());
        }
        self.samples += 1;
        self.classes[class as usize] += 1;
        self.min_len = self.min_len.min(len);
        self.max_len = self.max_len.max(len);
        if let Some(values) = &mut self.values {
            if len > ENUM_VALUE_MAX_LEN {
                self.values = None;
            } else if let Some(count) = values.get_mut(value) {
                *count += 1;
            } else if values.len() >= params.enum_max_values {
                self.values = None;
            } else {
                values.insert(value.to_owned(), 1);
            }
        }
    }

    /// Whether the values seen look like an enumeration: few distinct values, each seen many
    /// times (at least five samples per value on average), and not numbers (ids and pages are
    /// ranges, not sets).
    pub fn is_enumeration(&self, params: &ShapeParams) -> bool {
        let Some(values) = &self.values else {
            return false;
        };
        let numeric = self.widest() <= CharClass::Numeric;
        !values.is_empty()
            && !numeric
            && self.samples >= params.min_samples
            && self.samples >= 5 * values.len() as u64
    }

    /// How `value` departs from this shape, if the shape has seen enough to judge. Class comes
    /// first (the most telling), then length, then enumeration membership.
    pub fn check(&self, value: &str, params: &ShapeParams, enumerable: bool) -> Option<Deviation> {
        if self.samples < params.min_samples {
            return None;
        }
        let class = CharClass::of(value);
        let widest = self.widest();
        if class > widest && class != CharClass::Empty {
            return Some(Deviation::Class {
                observed: class,
                expected: widest,
            });
        }
        let len = value.chars().count();
        let allowed = ((self.max_len as f64 * params.length_factor) as usize).max(self.max_len + 8);
        if len > allowed {
            return Some(Deviation::Length {
                observed: len,
                max_seen: self.max_len,
                allowed,
            });
        }
        if enumerable
            && self.is_enumeration(params)
            && let Some(values) = &self.values
            && !values.contains_key(value)
        {
            return Some(Deviation::Unseen {
                allowed: values.keys().cloned().collect(),
            });
        }
        None
    }
}

/// Decodes `%XX` escapes and `+` (in query strings) for judging a value; invalid escapes are
/// kept as they are. At most `limit` bytes of output.
pub fn decode(value: &str, plus_is_space: bool, limit: usize) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().min(limit));
    let mut i = 0;
    while i < bytes.len() && out.len() < limit {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ShapeParams {
        ShapeParams {
            min_samples: 10,
            length_factor: 2.0,
            enum_max_values: 8,
        }
    }

    #[test]
    fn classes_go_from_narrow_to_wide() {
        assert_eq!(CharClass::of("123"), CharClass::Numeric);
        assert_eq!(CharClass::of("-5"), CharClass::Numeric);
        assert_eq!(CharClass::of("beef"), CharClass::Hex);
        assert_eq!(CharClass::of("xyz12"), CharClass::Alphanumeric);
        assert_eq!(CharClass::of("a-b_c@x.io"), CharClass::Token);
        assert_eq!(CharClass::of("two words"), CharClass::Text);
        assert_eq!(CharClass::of("1' OR '1'='1"), CharClass::Any);
        assert_eq!(CharClass::of(""), CharClass::Empty);
    }

    #[test]
    fn a_numeric_parameter_refuses_a_word_but_not_another_number() {
        let mut shape = ParamShape::default();
        let p = params();
        for i in 0..5 {
            shape.learn(&i.to_string(), &p);
        }
        assert_eq!(shape.check("abc", &p, true), None, "not enough samples yet");
        for i in 5..50 {
            shape.learn(&i.to_string(), &p);
        }
        assert_eq!(shape.check("12345", &p, true), None);
        assert_eq!(
            shape.check("xyz", &p, true),
            Some(Deviation::Class {
                observed: CharClass::Alphanumeric,
                expected: CharClass::Numeric
            })
        );
        assert!(matches!(
            shape.check("1234567890123", &p, true),
            Some(Deviation::Length { observed: 13, .. })
        ));
    }

    #[test]
    fn an_enumeration_refuses_an_unseen_value() {
        let mut shape = ParamShape::default();
        let p = params();
        for i in 0..60 {
            shape.learn(["books", "games", "music"][i % 3], &p);
        }
        assert!(shape.is_enumeration(&p));
        assert_eq!(shape.check("games", &p, true), None);
        assert!(matches!(
            shape.check("admin", &p, true),
            Some(Deviation::Unseen { .. })
        ));
        assert_eq!(shape.check("admin", &p, false), None);
        // Too many distinct values: not an enumeration any more.
        for i in 0..20 {
            shape.learn(&format!("tag{i}"), &p);
        }
        assert!(!shape.is_enumeration(&p));
    }

    #[test]
    fn decoding_handles_escapes_plus_and_garbage() {
        assert_eq!(decode("a%20b+c", true, 100), "a b c");
        assert_eq!(decode("a+b", false, 100), "a+b");
        assert_eq!(decode("100%", true, 100), "100%");
        assert_eq!(decode("%zz", true, 100), "%zz");
        assert_eq!(decode("%27", true, 100), "'");
        assert_eq!(decode("abcdef", true, 3), "abc");
    }
}
