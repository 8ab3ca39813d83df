//! What counts as sensitive data in a response: the patterns (byte regexes, linear time) and
//! the checks that turn a pattern match into a finding (Luhn for card numbers, the number
//! ranges never issued for SSNs, ...), and how each is shown in evidence.

use std::sync::OnceLock;

use regex::bytes::{Regex, RegexSet};

/// One kind of sensitive data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// Payment card numbers (13 to 19 digits, optionally grouped by spaces or dashes) of a
    /// known issuer range that pass the Luhn check.
    CardNumber,
    /// US Social Security numbers written `123-45-6789`, outside the ranges never issued.
    UsSsn,
    /// UK National Insurance numbers (`QQ 12 34 56 C`), outside the prefixes never issued.
    UkNino,
    /// E-mail addresses.
    Email,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// PEM private key blocks (`-----BEGIN … PRIVATE KEY-----`).
    PrivateKey,
    /// JSON Web Tokens (three base64url parts, a JSON header with `alg`).
    Jwt,
    /// Credentials assigned to a telling name: `api_key=…`, `"password": "…"`, `secret: …`.
    ApiKey,
    /// Stack traces: Java (and Kotlin, Scala) frames, Python tracebacks, .NET frames, Go
    /// goroutine dumps.
    StackTrace,
}

impl Detector {
    pub const ALL: [Detector; 9] = [
        Detector::CardNumber,
        Detector::UsSsn,
        Detector::UkNino,
        Detector::Email,
        Detector::AwsAccessKey,
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::ApiKey,
        Detector::StackTrace,
    ];

    /// The configuration name, metric label and finding suffix (`response.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::CardNumber => "card_number",
            Detector::UsSsn => "us_ssn",
            Detector::UkNino => "uk_nino",
            Detector::Email => "email",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
            Detector::ApiKey => "api_key",
            Detector::StackTrace => "stack_trace",
        }
    }

    pub fn parse(text: &str) -> Option<Detector> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }

    /// What replaces the data in mask mode. It is plain ASCII without quotes or backslashes,
    /// so it is safe inside a JSON string and in text.
    pub fn redaction(self) -> &'static str {
        match self {
            Detector::CardNumber => "[REDACTED:card_number]",
            Detector::UsSsn => "[REDACTED:us_ssn]",
            Detector::UkNino => "[REDACTED:uk_nino]",
            Detector::Email => "[REDACTED:email]",
            Detector::AwsAccessKey => "[REDACTED:aws_access_key]",
            Detector::PrivateKey => "[REDACTED:private_key]",
            Detector::Jwt => "[REDACTED:jwt]",
            Detector::ApiKey => "[REDACTED:api_key]",
            Detector::StackTrace => "[REDACTED:stack_trace]",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of detectors (a bit set, cheap to copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetectorSet(u16);

impl DetectorSet {
    pub fn all() -> Self {
        Self::from_iter(Detector::ALL)
    }

    pub fn contains(self, detector: Detector) -> bool {
        self.0 & detector.bit() != 0
    }

    pub fn insert(&mut self, detector: Detector) {
        self.0 |= detector.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Detector> for DetectorSet {
    fn from_iter<I: IntoIterator<Item = Detector>>(iter: I) -> Self {
        let mut set = DetectorSet::default();
        iter.into_iter().for_each(|d| set.insert(d));
        set
    }
}

/// The patterns, each with its detector. Several patterns may serve one detector.
const PATTERNS: &[(Detector, &str)] = &[
    // Issuers' numbers start with 2 to 6, which keeps timestamps and most ids (13 digits
    // from 1…) from even being candidates.
    (Detector::CardNumber, r"[2-6](?:[ -]?[0-9]){12,18}"),
    (Detector::UsSsn, r"[0-9]{3}-[0-9]{2}-[0-9]{4}"),
    (
        Detector::UkNino,
        r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]",
    ),
    (
        Detector::Email,
        r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,6}\.[A-Za-z]{2,24}",
    ),
    (
        Detector::AwsAccessKey,
        r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
    ),
    (
        Detector::PrivateKey,
        r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s\\:,.\-]*?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----)?",
    ),
    (
        Detector::Jwt,
        r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
    ),
    (
        Detector::ApiKey,
        r#"(?i)(?:api[_\-]?key|access[_\-]?token|auth[_\-]?token|secret[_\-]?key|client[_\-]?secret|private[_\-]?token|password|passwd|secret)["']?[ \t]*[:=][ \t]*["']?[A-Za-z0-9_\-./+=~]{8,}"#,
    ),
    // Java, Kotlin, Scala: `at com.example.Orders.load(Orders.java:42)`.
    (
        Detector::StackTrace,
        r"at [A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z0-9_$<>]+)+\((?:[A-Za-z0-9_$]+\.(?:java|kt|scala|groovy):[0-9]+|Native Method|Unknown Source)\)",
    ),
    // Python.
    (
        Detector::StackTrace,
        r"Traceback \(most recent call last\):",
    ),
    // The optional backslashes let the pattern see frames inside a raw JSON string too
    // (`File \"/app/x.py\", line 3`), where the quotes are escaped.
    (
        Detector::StackTrace,
        r#"File \\?"[^"\r\n]+?\\?", line [0-9]+(?:, in [A-Za-z0-9_<>]+)?"#,
    ),
    // .NET: `at Shop.Orders.Load(Int32 id) in C:\src\Orders.cs:line 42`.
    (
        Detector::StackTrace,
        r"at [A-Za-z0-9_.<>`\[\],]+\([^()\r\n]*\) in [^\r\n]+?:line [0-9]+",
    ),
    // Go: `goroutine 1 [running]:` and `/src/main.go:12 +0x1d`.
    (Detector::StackTrace, r"goroutine [0-9]+ \[[a-z ,0-9]+\]:"),
    (Detector::StackTrace, r"\.go:[0-9]+ \+0x[0-9a-f]+"),
];

/// The value part of a credential assignment, and the names that make a JSON key telling.
const SECRET_NAME: &str = r"(?i)^(?:api[_\-]?key|apikey|access[_\-]?token|auth[_\-]?token|secret[_\-]?key|client[_\-]?secret|private[_\-]?token|password|passwd|secret)$";
const SECRET_VALUE: &str = r"^[A-Za-z0-9_\-./+=~]{8,}$";

/// The compiled patterns, shared by every scanner (they are constant).
pub struct Patterns {
    pub set: RegexSet,
    pub regexes: Vec<Regex>,
    pub secret_name: Regex,
    pub secret_value: Regex,
}

pub fn patterns() -> &'static Patterns {
    static PATTERNS_CELL: OnceLock<Patterns> = OnceLock::new();
    PATTERNS_CELL.get_or_init(|| {
        // Byte semantics (`(?-u)`): ASCII classes, and no UTF-8 decoding on the hot path.
        let sources: Vec<String> = PATTERNS.iter().map(|(_, p)| format!("(?-u){p}")).collect();
        Patterns {
            set: RegexSet::new(&sources).expect("valid response patterns"),
            regexes: sources
                .iter()
                .map(|p| Regex::new(p).expect("valid response pattern"))
                .collect(),
            secret_name: Regex::new(SECRET_NAME).expect("valid pattern"),
            secret_value: Regex::new(SECRET_VALUE).expect("valid pattern"),
        }
    })
}

/// The detector of pattern `index`.
pub fn detector_of(index: usize) -> Detector {
    PATTERNS[index].0
}

/// Patterns count.
pub fn pattern_count() -> usize {
    PATTERNS.len()
}

/// A match that passed its detector's checks: `[start, end)` in the scanned bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub detector: Detector,
    pub start: usize,
    pub end: usize,
}

fn is_alnum(b: Option<&u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_digit(b: Option<&u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_digit())
}

/// Finds the hits of pattern `index` in `text`, appending them to `out`.
pub fn find(index: usize, text: &[u8], out: &mut Vec<Hit>) {
    let detector = detector_of(index);
    let regex = &patterns().regexes[index];
    let mut at = 0;
    while at < text.len() {
        let Some(m) = regex.find_at(text, at) else {
            break;
        };
        let (start, end) = (m.start(), m.end());
        if accept(detector, text, start, end) {
            out.push(Hit {
                detector,
                start,
                end,
            });
            at = end.max(start + 1);
        } else {
            at = retry_from(detector, text, start, end);
        }
    }
}

/// Where to look again after a rejected match. For card numbers, the next digit group inside
/// the rejected match (`1 4111 1111 1111 1111` fails as a whole and passes from `4111`);
/// otherwise just past the match's first byte, which keeps every search linear overall for
/// these patterns.
fn retry_from(detector: Detector, text: &[u8], start: usize, end: usize) -> usize {
    if detector == Detector::CardNumber
        && let Some(separator) = text[start..end].iter().position(|b| !b.is_ascii_digit())
    {
        return start + separator + 1;
    }
    if detector == Detector::CardNumber {
        return end;
    }
    start + 1
}

/// The checks beyond the pattern.
fn accept(detector: Detector, text: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).and_then(|i| text.get(i));
    let after = text.get(end);
    let found = &text[start..end];
    match detector {
        Detector::CardNumber => {
            !is_alnum(before) && !is_digit(after) && before != Some(&b'.') && valid_card(found)
        }
        Detector::UsSsn => {
            !is_alnum(before)
                && before != Some(&b'-')
                && !is_digit(after)
                && after != Some(&b'-')
                && valid_ssn(found)
        }
        Detector::UkNino => !is_alnum(before) && !is_alnum(after) && valid_nino(found),
        Detector::Email => !is_alnum(after),
        Detector::AwsAccessKey => !is_alnum(before) && !is_alnum(after),
        Detector::Jwt => {
            !(is_alnum(before) || before == Some(&b'_') || before == Some(&b'-'))
                && jwt_header_has_alg(found)
        }
        Detector::PrivateKey | Detector::ApiKey | Detector::StackTrace => true,
    }
}

/// The Luhn check (ISO/IEC 7812-1) over the digits of `text`.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// A card number: 13 to 19 digits, one kind of separator at most, an issuer prefix in use,
/// not one repeated digit, and the Luhn check.
pub fn valid_card(text: &[u8]) -> bool {
    let digits: Vec<u8> = text.iter().copied().filter(u8::is_ascii_digit).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let separators: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_digit())
        .collect();
    if separators.windows(2).any(|w| w[0] != w[1]) {
        return false;
    }
    if digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    known_issuer(&digits) && luhn(&digits)
}

/// Issuer identification number ranges of the card networks (Visa, Mastercard, American
/// Express, Discover, JCB, Diners Club, UnionPay, Maestro) with their lengths.
fn known_issuer(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        digits[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let len = digits.len();
    let p1 = prefix(1);
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    match p1 {
        4 => matches!(len, 13 | 16 | 19),
        2 | 5 => ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16,
        3 => {
            ((p2 == 34 || p2 == 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&len))
        }
        // Discover, UnionPay (62), Maestro.
        6 => {
            (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || p2 == 62)
                && (16..=19).contains(&len)
                || (matches!(p4, 6304 | 6759 | 6761 | 6762 | 6763) && (13..=19).contains(&len))
        }
        _ => false,
    }
}

/// An SSN in a range the Social Security Administration issues: area not 000, 666 or 9xx,
/// group not 00, serial not 0000.
pub fn valid_ssn(text: &[u8]) -> bool {
    let digits: Vec<u32> = text
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if digits.len() != 9 {
        return false;
    }
    let area = digits[0] * 100 + digits[1] * 10 + digits[2];
    let group = digits[3] * 10 + digits[4];
    let serial = digits[5] * 1000 + digits[6] * 100 + digits[7] * 10 + digits[8];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// A National Insurance number whose prefix HMRC allocates.
pub fn valid_nino(text: &[u8]) -> bool {
    let prefix = &text[..2.min(text.len())];
    !matches!(
        prefix,
        b"BG" | b"GB" | b"NK" | b"KN" | b"TN" | b"NT" | b"ZZ"
    )
}

/// The JWT's first part is base64url JSON naming an algorithm (so a dotted base64 string that
/// merely starts with `eyJ` is not taken for a token).
fn jwt_header_has_alg(token: &[u8]) -> bool {
    use base64::Engine;
    let header = token.split(|b| *b == b'.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .is_ok_and(|json| json.windows(5).any(|w| w == b"\"alg\""))
}

/// How a hit is shown in a finding's evidence: enough to recognise it, never the data.
pub fn evidence(detector: Detector, found: &[u8]) -> String {
    let text = String::from_utf8_lossy(found);
    match detector {
        Detector::CardNumber => {
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            format!(
                "card number ending {}",
                &digits[digits.len().saturating_sub(4)..]
            )
        }
        Detector::UsSsn => "SSN ***-**-****".into(),
        Detector::UkNino => "National Insurance number ** ** ** ** *".into(),
        Detector::Email => match text.split_once('@') {
            Some((local, domain)) => format!(
                "e-mail {}***@{}",
                local.chars().next().unwrap_or('*'),
                domain.chars().take(64).collect::<String>()
            ),
            None => "e-mail".into(),
        },
        Detector::AwsAccessKey => format!(
            "AWS access key {}****************",
            &text[..4.min(text.len())]
        ),
        Detector::PrivateKey => text
            .lines()
            .next()
            .unwrap_or("private key")
            .chars()
            .take(60)
            .collect(),
        Detector::Jwt => format!("JWT of {} bytes", found.len()),
        Detector::ApiKey => {
            let name: String = text
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .take(40)
                .collect();
            format!("{name}=********")
        }
        Detector::StackTrace => text.chars().take(100).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(detector: Detector, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for index in 0..pattern_count() {
            if detector_of(index) == detector {
                find(index, text.as_bytes(), &mut out);
            }
        }
        out.iter()
            .map(|h| text[h.start..h.end].to_owned())
            .collect()
    }

    #[test]
    fn luhn_positives_and_near_misses() {
        // Test numbers published by the card networks.
        for card in [
            "4111111111111111",
            "4012888888881881",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "30569309025904",
        ] {
            assert!(luhn(card.as_bytes()), "{card}");
            assert!(valid_card(card.as_bytes()), "{card}");
        }
        // One digit off, two digits swapped, wrong issuer, wrong length, one repeated digit.
        for near in [
            "4111111111111112",
            "4111111111111121",
            "5555555555554443",
            "9111111111111111",
            "41111111111111111",
            "0000000000000000",
            "378282246310006",
        ] {
            assert!(!valid_card(near.as_bytes()), "{near}");
        }
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
    }

    #[test]
    fn card_numbers_in_text() {
        assert_eq!(
            hits(Detector::CardNumber, "card 4111 1111 1111 1111, exp 12/29"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            hits(Detector::CardNumber, "pan=4111-1111-1111-1111;"),
            ["4111-1111-1111-1111"]
        );
        // A leading unrelated digit group does not hide the card behind it.
        assert_eq!(
            hits(Detector::CardNumber, "qty 1 4111 1111 1111 1111"),
            ["4111 1111 1111 1111"]
        );
        // Mixed separators, a longer digit run, an order id, a timestamp: not cards.
        assert!(hits(Detector::CardNumber, "4111 1111-1111 1111").is_empty());
        assert!(hits(Detector::CardNumber, "id 94111111111111111111").is_empty());
        assert!(hits(Detector::CardNumber, "order 1234567890123").is_empty());
        assert!(hits(Detector::CardNumber, "ts 1700000000000").is_empty());
        assert!(hits(Detector::CardNumber, "v1.4111111111111111").is_empty());
    }

    #[test]
    fn national_identifiers() {
        assert_eq!(hits(Detector::UsSsn, "ssn: 123-45-6789."), ["123-45-6789"]);
        for never_issued in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(
                hits(Detector::UsSsn, never_issued).is_empty(),
                "{never_issued}"
            );
        }
        assert!(hits(Detector::UsSsn, "tel 555-123-45-6789-0").is_empty());
        assert_eq!(
            hits(Detector::UkNino, "NI: AB 12 34 56 C"),
            ["AB 12 34 56 C"]
        );
        assert_eq!(hits(Detector::UkNino, "ni=JG103759A"), ["JG103759A"]);
        assert!(hits(Detector::UkNino, "GB123456A").is_empty(), "GB prefix");
        assert!(hits(Detector::UkNino, "DA123456A").is_empty(), "D first");
        assert!(
            hits(Detector::UkNino, "XAB123456CX").is_empty(),
            "inside a word"
        );
    }

    #[test]
    fn secrets_and_contacts() {
        assert_eq!(
            hits(Detector::Email, "mail alice.smith+x@mail.example.co.uk now"),
            ["alice.smith+x@mail.example.co.uk"]
        );
        assert!(hits(Detector::Email, "user@localhost").is_empty());
        assert_eq!(
            hits(Detector::AwsAccessKey, "key AKIAIOSFODNN7EXAMPLE ok"),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        assert!(hits(Detector::AwsAccessKey, "XAKIAIOSFODNN7EXAMPLE").is_empty());
        assert!(hits(Detector::AwsAccessKey, "AKIAIOSFODNN7EXAMPL").is_empty());
        let pem =
            "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA==\n-----END RSA PRIVATE KEY-----\ny";
        assert_eq!(
            hits(Detector::PrivateKey, pem),
            ["-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA==\n-----END RSA PRIVATE KEY-----"]
        );
        assert!(hits(Detector::PrivateKey, "-----BEGIN PUBLIC KEY-----").is_empty());
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
        assert_eq!(hits(Detector::Jwt, &format!("token {jwt}")), [jwt]);
        // `eyJ` parts whose header has no `alg`.
        assert!(hits(Detector::Jwt, "eyJmb28iOiJiYXIifQ.eyJzdWIiOiJhbGljZSJ9.x").is_empty());
        assert_eq!(
            hits(Detector::ApiKey, "GET /x?api_key=abcd1234efgh HTTP"),
            ["api_key=abcd1234efgh"]
        );
        assert_eq!(
            hits(Detector::ApiKey, r#"{"client_secret": "s3cr3t-v4lu3"}"#),
            [r#"client_secret": "s3cr3t-v4lu3"#]
        );
        assert!(hits(Detector::ApiKey, "password: short").is_empty());
    }

    #[test]
    fn stack_traces() {
        let java = "java.lang.NullPointerException: x\n\tat com.example.shop.Orders.load(Orders.java:42)\n\tat java.base/jdk.internal.Native.invoke(Native Method)";
        assert_eq!(hits(Detector::StackTrace, java).len(), 1);
        let python = "Traceback (most recent call last):\n  File \"/app/shop/orders.py\", line 12, in load\nKeyError: 'id'";
        assert_eq!(hits(Detector::StackTrace, python).len(), 2);
        let dotnet = "System.NullReferenceException: x\n   at Shop.Orders.Load(Int32 id) in C:\\src\\Orders.cs:line 42";
        assert_eq!(hits(Detector::StackTrace, dotnet).len(), 1);
        let go =
            "panic: runtime error\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:12 +0x1d";
        assert_eq!(hits(Detector::StackTrace, go).len(), 2);
        assert!(
            hits(
                Detector::StackTrace,
                "look at example.com(the site) at noon"
            )
            .is_empty()
        );
    }

    #[test]
    fn evidence_never_shows_the_data() {
        assert_eq!(
            evidence(Detector::CardNumber, b"4111 1111 1111 1111"),
            "card number ending 1111"
        );
        assert_eq!(
            evidence(Detector::Email, b"alice@example.com"),
            "e-mail a***@example.com"
        );
        assert_eq!(
            evidence(Detector::ApiKey, b"api_key=abcd1234efgh"),
            "api_key=********"
        );
        assert!(!evidence(Detector::AwsAccessKey, b"AKIAIOSFODNN7EXAMPLE").contains("IOSF"));
    }
}
