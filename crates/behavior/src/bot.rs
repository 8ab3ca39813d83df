//! Bot signals read from request headers: a User-Agent claiming a browser without the headers
//! that browser always sends (or in an order it never uses), known automation agents, and a
//! compact fingerprint of the headers a client's network stack adds, so a client whose header
//! set changes under one User-Agent can be noticed.
//!
//! Only claims of being a browser are checked against browser traits: API clients (curl, SDKs,
//! mobile apps) legitimately send few headers and do not claim to be browsers.

use http::HeaderMap;
use http::header::{ACCEPT_ENCODING, ACCEPT_LANGUAGE, USER_AGENT};

/// Browser engines whose header habits are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Chrome, Edge, Opera, Brave, Samsung Internet and other Chromium browsers.
    Chromium,
    Firefox,
    /// Safari and every iOS browser (they all use WebKit).
    Safari,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Chromium => "Chrome",
            Family::Firefox => "Firefox",
            Family::Safari => "Safari",
        }
    }
}

/// What a User-Agent says the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Browser {
        family: Family,
        major: u32,
    },
    /// A headless browser or scraping framework that names itself.
    Automation(&'static str),
    /// Anything else: API clients, libraries, declared crawlers, no User-Agent.
    Other,
}

/// Substrings (lower case) of User-Agents that automation tools send unless told otherwise.
const AUTOMATION: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "slimerjs",
    "selenium",
    "webdriver",
    "puppeteer",
    "playwright",
    "scrapy",
    "httrack",
    "mechanize",
    "colly",
];

fn major_after(ua: &str, marker: &str) -> Option<u32> {
    let start = ua.find(marker)? + marker.len();
    let digits: &str = ua[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or("");
    digits.parse().ok()
}

/// Reads a User-Agent.
pub fn classify(ua: &str) -> Agent {
    let lower = ua.to_ascii_lowercase();
    if let Some(name) = AUTOMATION.iter().find(|name| lower.contains(*name)) {
        return Agent::Automation(name);
    }
    // Declared crawlers and link previewers borrow browser tokens but say what they are.
    if ["bot", "crawl", "spider", "compatible;", "preview"]
        .iter()
        .any(|w| lower.contains(w))
        || !ua.starts_with("Mozilla/5.0")
    {
        return Agent::Other;
    }
    let browser = |family, major| Agent::Browser { family, major };
    // iOS browsers are WebKit whatever they call themselves.
    if ["CriOS/", "FxiOS/", "EdgiOS/"]
        .iter()
        .any(|m| ua.contains(m))
    {
        return major_after(ua, "Version/")
            .or_else(|| major_after(ua, "OS "))
            .map_or(Agent::Other, |m| browser(Family::Safari, m));
    }
    if let Some(major) = major_after(ua, "Firefox/") {
        return browser(Family::Firefox, major);
    }
    for marker in ["Edg/", "OPR/", "Chrome/"] {
        if let Some(major) = major_after(ua, marker) {
            return browser(Family::Chromium, major);
        }
    }
    if ua.contains("Safari/")
        && let Some(major) = major_after(ua, "Version/")
    {
        return browser(Family::Safari, major);
    }
    Agent::Other
}

/// Whether the request reached us over HTTPS (browsers send `Sec-Fetch-*` only to secure
/// origins), directly or through a proxy that says so.
pub fn secure(tls: bool, headers: &HeaderMap) -> bool {
    tls || headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
        || headers.get(http::header::FORWARDED).is_some_and(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("proto=https"))
        })
}

/// How a browser claim departs from that browser's habits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Headers the browser always sends are missing.
    Missing(Vec<&'static str>),
    /// `Accept-Encoding` and `Accept-Language` are in the other browser's order.
    Order {
        observed: &'static str,
        expected: &'static str,
    },
}

const SEC_FETCH: [&str; 3] = ["sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"];

/// Checks a browser claim against what that browser sends on every request: Accept-Language
/// and Accept-Encoding always, the Sec-Fetch-* headers to secure origins (Chrome 80+, Firefox
/// 90+, Safari 17+), and Chrome's and Firefox's own order of Accept-Encoding and
/// Accept-Language.
pub fn check_browser(
    family: Family,
    major: u32,
    secure: bool,
    headers: &HeaderMap,
) -> Option<Mismatch> {
    let mut missing = Vec::new();
    if !headers.contains_key(ACCEPT_LANGUAGE) {
        missing.push("Accept-Language");
    }
    if !headers.contains_key(ACCEPT_ENCODING) {
        missing.push("Accept-Encoding");
    }
    let fetch_metadata = match family {
        Family::Chromium => major >= 80,
        Family::Firefox => major >= 90,
        Family::Safari => major >= 17,
    };
    if secure && fetch_metadata {
        for (name, shown) in
            SEC_FETCH
                .iter()
                .zip(["Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest"])
        {
            if !headers.contains_key(*name) {
                missing.push(shown);
            }
        }
    }
    if !missing.is_empty() {
        return Some(Mismatch::Missing(missing));
    }
    let encoding_first = match order(headers) {
        (Some(e), Some(l)) => e < l,
        _ => return None,
    };
    match (family, encoding_first) {
        (Family::Chromium, false) => Some(Mismatch::Order {
            observed: "Accept-Language before Accept-Encoding",
            expected: "Accept-Encoding before Accept-Language",
        }),
        (Family::Firefox, true) => Some(Mismatch::Order {
            observed: "Accept-Encoding before Accept-Language",
            expected: "Accept-Language before Accept-Encoding",
        }),
        _ => None,
    }
}

/// Positions of Accept-Encoding and Accept-Language among the request's header names.
fn order(headers: &HeaderMap) -> (Option<usize>, Option<usize>) {
    let mut encoding = None;
    let mut language = None;
    for (i, name) in headers.keys().enumerate() {
        if name == ACCEPT_ENCODING {
            encoding = Some(i);
        } else if name == ACCEPT_LANGUAGE {
            language = Some(i);
        }
    }
    (encoding, language)
}

/// The order of the headers a client's network stack adds by itself (User-Agent,
/// Accept-Encoding, Accept-Language), as a small number: one base-4 digit per header present,
/// in request order. Pages add their own headers and change `Accept` between navigations and
/// fetches, so only these three are stable for one client.
pub fn fingerprint(headers: &HeaderMap) -> u32 {
    let mut code = 0u32;
    for name in headers.keys() {
        let digit = if name == USER_AGENT {
            1
        } else if name == ACCEPT_ENCODING {
            2
        } else if name == ACCEPT_LANGUAGE {
            3
        } else {
            continue;
        };
        // A repeated name appears once in `keys()`; three digits at most.
        code = code * 4 + digit;
    }
    code
}

/// Headers whose values describe the client software rather than the request.
const SOFTWARE_HEADERS: [&str; 4] = ["user-agent", "accept", "accept-encoding", "accept-language"];
/// Header names past this many are left out (a request with hundreds of headers is refused by
/// the limits stage anyway; the fingerprint stays cheap).
const FINGERPRINT_MAX_HEADERS: usize = 64;

/// The client fingerprint the gateway blocks and self-healing groups offenders by: a 64-bit
/// hash of the HTTP version, the header names in the order the request carried them, and the
/// values of User-Agent, Accept, Accept-Encoding and Accept-Language (the headers a client's
/// software sets the same way on every request). It changes with the software, not with the
/// address or the account, so an attacker rotating addresses keeps it, and clients using the
/// same software (a browser version, an SDK) share it: a rule on it is a group rule.
/// Credentials, cookies and per-request headers contribute only their names. The hash is
/// fixed (no per-process key), so rules and persisted state stay valid across restarts, and
/// reads eight bytes at a time: it runs on every request while self-healing is on.
pub fn client_fingerprint(version: http::Version, headers: &HeaderMap) -> u64 {
    const SEED: u64 = 0xcbf2_9ce4_8422_2325;
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    fn mix(hash: u64, word: u64) -> u64 {
        (hash.rotate_left(23) ^ word).wrapping_mul(MULTIPLIER)
    }
    fn eat(hash: &mut u64, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *hash = mix(*hash, u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        // The length closes the field, so `ab`+`c` and `a`+`bc` differ.
        *hash = mix(
            *hash,
            u64::from_le_bytes(word) ^ ((bytes.len() as u64) << 56),
        );
    }
    let mut hash = SEED;
    let version: &[u8] = match version {
        http::Version::HTTP_09 => b"0.9",
        http::Version::HTTP_10 => b"1.0",
        http::Version::HTTP_11 => b"1.1",
        http::Version::HTTP_2 => b"2",
        http::Version::HTTP_3 => b"3",
        _ => b"?",
    };
    eat(&mut hash, version);
    for name in headers.keys().take(FINGERPRINT_MAX_HEADERS) {
        eat(&mut hash, name.as_str().as_bytes());
    }
    for name in SOFTWARE_HEADERS {
        if let Some(value) = headers.get(name) {
            eat(&mut hash, value.as_bytes());
        }
    }
    // Spread the last words' bits over the whole hash.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// A fingerprint written out: `user-agent, accept-encoding, accept-language`.
pub fn describe(mut code: u32) -> String {
    let mut names = Vec::new();
    while code > 0 {
        names.push(match code % 4 {
            1 => "user-agent",
            2 => "accept-encoding",
            _ => "accept-language",
        });
        code /= 4;
    }
    names.reverse();
    if names.is_empty() {
        "none of user-agent, accept-encoding, accept-language".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    /// Chrome 124's navigation request over HTTPS, in its own order.
    fn chrome_navigation() -> HeaderMap {
        headers(&[
            ("host", "shop.example"),
            ("sec-ch-ua", "\"Chromium\";v=\"124\""),
            ("sec-ch-ua-mobile", "?0"),
            ("upgrade-insecure-requests", "1"),
            ("user-agent", CHROME),
            ("accept", "text/html,application/xhtml+xml"),
            ("sec-fetch-site", "none"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-user", "?1"),
            ("sec-fetch-dest", "document"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-GB,en;q=0.9"),
        ])
    }

    #[test]
    fn user_agents_are_read_as_browsers_automation_or_other() {
        assert_eq!(
            classify(CHROME),
            Agent::Browser {
                family: Family::Chromium,
                major: 124
            }
        );
        assert_eq!(
            classify(FIREFOX),
            Agent::Browser {
                family: Family::Firefox,
                major: 125
            }
        );
        assert_eq!(
            classify(SAFARI),
            Agent::Browser {
                family: Family::Safari,
                major: 17
            }
        );
        assert_eq!(
            classify(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.0 Safari/537.36"
            ),
            Agent::Automation("headlesschrome")
        );
        for api in [
            "curl/8.5.0",
            "python-requests/2.31.0",
            "okhttp/4.12.0",
            "MyShop/3.2 (iPhone; iOS 17.4; Scale/3.00)",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "",
        ] {
            assert_eq!(classify(api), Agent::Other, "{api}");
        }
    }

    #[test]
    fn real_browsers_pass_and_spoofed_claims_do_not() {
        assert_eq!(
            check_browser(Family::Chromium, 124, true, &chrome_navigation()),
            None
        );
        // Firefox's fetch() over HTTPS.
        let firefox = headers(&[
            ("host", "shop.example"),
            ("user-agent", FIREFOX),
            ("accept", "*/*"),
            ("accept-language", "en-US,en;q=0.5"),
            ("accept-encoding", "gzip, deflate, br"),
            ("referer", "https://shop.example/cart"),
            ("sec-fetch-dest", "empty"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(check_browser(Family::Firefox, 125, true, &firefox), None);
        // python-requests with a copied Chrome User-Agent.
        let spoofed = headers(&[
            ("host", "shop.example"),
            ("user-agent", CHROME),
            ("accept-encoding", "gzip, deflate"),
            ("accept", "*/*"),
            ("connection", "keep-alive"),
        ]);
        assert_eq!(
            check_browser(Family::Chromium, 124, true, &spoofed),
            Some(Mismatch::Missing(vec![
                "Accept-Language",
                "Sec-Fetch-Site",
                "Sec-Fetch-Mode",
                "Sec-Fetch-Dest"
            ]))
        );
        // Over plain HTTP browsers send no Sec-Fetch-*: only the language is missing.
        assert_eq!(
            check_browser(Family::Chromium, 124, false, &spoofed),
            Some(Mismatch::Missing(vec!["Accept-Language"]))
        );
        // A Firefox claim with Chrome's order of the two headers.
        let mut wrong = chrome_navigation();
        wrong.insert("user-agent", FIREFOX.parse().unwrap());
        assert!(matches!(
            check_browser(Family::Firefox, 125, true, &wrong),
            Some(Mismatch::Order { .. })
        ));
    }

    #[test]
    fn client_fingerprints_follow_the_software_not_the_request() {
        let v11 = http::Version::HTTP_11;
        let chrome = client_fingerprint(v11, &chrome_navigation());
        assert_eq!(chrome, client_fingerprint(v11, &chrome_navigation()));
        // Another page, another session cookie, the same browser: the same fingerprint.
        let mut again = chrome_navigation();
        again.insert("cookie", http::HeaderValue::from_static("session=other"));
        let mut first = chrome_navigation();
        first.insert("cookie", http::HeaderValue::from_static("session=first"));
        assert_eq!(
            client_fingerprint(v11, &first),
            client_fingerprint(v11, &again)
        );
        // Another tool, another order or another protocol version: another fingerprint.
        let curl = headers(&[("user-agent", "curl/8.5.0"), ("accept", "*/*")]);
        let reordered = headers(&[("accept", "*/*"), ("user-agent", "curl/8.5.0")]);
        assert_ne!(client_fingerprint(v11, &curl), chrome);
        assert_ne!(
            client_fingerprint(v11, &curl),
            client_fingerprint(v11, &reordered)
        );
        assert_ne!(
            client_fingerprint(v11, &curl),
            client_fingerprint(http::Version::HTTP_2, &curl)
        );
    }

    #[test]
    fn fingerprints_follow_the_stack_headers_only() {
        let navigation = chrome_navigation();
        // Chrome's fetch(): Accept first, page headers in between, same stack order.
        let fetch = headers(&[
            ("host", "shop.example"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("user-agent", CHROME),
            ("origin", "https://shop.example"),
            ("sec-fetch-mode", "cors"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-GB,en;q=0.9"),
        ]);
        assert_eq!(fingerprint(&navigation), fingerprint(&fetch));
        let scripted = headers(&[("user-agent", CHROME), ("accept-encoding", "gzip, deflate")]);
        assert_ne!(fingerprint(&navigation), fingerprint(&scripted));
        assert_eq!(
            describe(fingerprint(&navigation)),
            "user-agent, accept-encoding, accept-language"
        );
        assert_eq!(
            describe(fingerprint(&scripted)),
            "user-agent, accept-encoding"
        );
        assert!(secure(false, &headers(&[("x-forwarded-proto", "HTTPS")])));
        assert!(!secure(false, &HeaderMap::new()));
    }
}
