//! Traffic generator and benchmark for the behaviour models (issue 6).
//!
//! Simulates a shop API used by browsers (Chrome, Firefox, Safari over HTTPS), mobile apps and
//! API clients (SDKs, curl) in realistic sessions, with simulated time. The models learn from
//! hours of normal traffic (mode `learn`), then each attack scenario runs beside the normal
//! traffic (mode `detect`). Prints, per scenario, the share of malicious requests flagged by the
//! scenario's rules, the attackers detected, and the share of normal requests flagged by any
//! rule; then the cost of judge + observe per request against the detection engine's
//! inspection of the same requests, measured in the same run. Upstream latency is simulated
//! per endpoint (with jitter and rare spikes); one scenario makes an endpoint slow instead of
//! adding attackers.
//!
//! `cargo run --release --example behavior_traffic [-- CLIENTS TRAIN_HOURS SEED RARE_RATIO]`
//! (defaults 3000, 8, 24301, 0.002: `sequence.rare_ratio` as configured by default).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use apiguard_behavior::{
    AccountParams, Behavior, BucketParams, Limits, Mode, Observation, Settings,
};
use apiguard_detect::{Engine, EngineConfig};
use apiguard_model::{ClientInfo, RequestView};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// Think time between clicks: 2 to 40 s, most of them short.
    fn think(&mut self) -> u64 {
        let r = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (2_000.0 * 20f64.powf(r)) as u64
    }
}

const CATEGORIES: &[&str] = &["books", "games", "music", "garden", "toys", "kitchen"];
const WORDS: &[&str] = &[
    "lamp", "chair", "novel", "puzzle", "guitar", "rake", "kettle", "lego", "poster", "mug",
    "tent", "drone",
];
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Chrome,
    Firefox,
    Safari,
    IosApp,
    AndroidApp,
    Sdk,
    Curl,
    /// An integration syncing every few seconds (a heavy but legitimate client).
    HeavySync,
}

/// One request as a client sends it, and whether it is part of an attack.
struct Req {
    method: Method,
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    malicious: bool,
}

/// The simulated API: what it answers.
fn upstream(req: &Req, own_orders: &[u64]) -> u16 {
    let path = req.target.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let numeric = |s: &str| s.parse::<u64>().ok();
    match (req.method.as_str(), segments.as_slice()) {
        (_, ["static", _]) => 200,
        ("GET", ["products"]) | ("GET", ["search"]) | ("GET", ["cart"]) => 200,
        ("GET", ["account"]) | ("GET", ["orders"]) => 200,
        ("GET", ["products", id]) | ("GET", ["products", id, "reviews"]) => match numeric(id) {
            Some(n) if (1..=500).contains(&n) => 200,
            _ => 404,
        },
        ("POST", ["cart", "items"]) => {
            let body = req.body.as_deref().unwrap_or("");
            let good = (1..=9).any(|q| body.contains(&format!("\"quantity\":{q}}}")));
            if good { 201 } else { 422 }
        }
        ("POST", ["checkout"]) => 201,
        ("POST", ["checkout", _, "confirm"]) => 200,
        ("GET", ["orders", id]) => match numeric(id) {
            Some(n) if own_orders.contains(&n) || n < 200_000 => 200,
            _ => 404,
        },
        ("POST", ["login"]) => {
            if req
                .body
                .as_deref()
                .unwrap_or("")
                .contains("\"password\":\"correct")
            {
                200
            } else {
                401
            }
        }
        _ => 404,
    }
}

fn browser_headers(kind: Kind, fetch: bool, json_body: bool) -> Vec<(&'static str, String)> {
    let mut h: Vec<(&'static str, String)> = vec![("host", "shop.example".into())];
    let accept = if fetch {
        "application/json, text/plain, */*"
    } else {
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    };
    let (mode, dest) = if fetch {
        ("cors", "empty")
    } else {
        ("navigate", "document")
    };
    match kind {
        Kind::Chrome => {
            h.push((
                "sec-ch-ua",
                "\"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\"".into(),
            ));
            if fetch {
                h.push(("accept", accept.into()));
                if json_body {
                    h.push(("content-type", "application/json".into()));
                }
                h.push(("user-agent", CHROME.into()));
                h.push(("origin", "https://shop.example".into()));
            } else {
                h.push(("upgrade-insecure-requests", "1".into()));
                h.push(("user-agent", CHROME.into()));
                h.push(("accept", accept.into()));
            }
            h.push(("sec-fetch-site", "same-origin".into()));
            h.push(("sec-fetch-mode", mode.into()));
            h.push(("sec-fetch-dest", dest.into()));
            h.push(("referer", "https://shop.example/".into()));
            h.push(("accept-encoding", "gzip, deflate, br, zstd".into()));
            h.push(("accept-language", "en-GB,en;q=0.9".into()));
        }
        Kind::Firefox => {
            h.push(("user-agent", FIREFOX.into()));
            h.push(("accept", accept.into()));
            h.push(("accept-language", "en-US,en;q=0.5".into()));
            h.push(("accept-encoding", "gzip, deflate, br".into()));
            if json_body {
                h.push(("content-type", "application/json".into()));
            }
            h.push(("referer", "https://shop.example/".into()));
            h.push(("sec-fetch-dest", dest.into()));
            h.push(("sec-fetch-mode", mode.into()));
            h.push(("sec-fetch-site", "same-origin".into()));
        }
        _ => {
            h.push(("accept", accept.into()));
            if json_body {
                h.push(("content-type", "application/json".into()));
            }
            h.push(("sec-fetch-site", "same-origin".into()));
            h.push(("sec-fetch-dest", dest.into()));
            h.push(("accept-language", "en-GB,en;q=0.9".into()));
            h.push(("sec-fetch-mode", mode.into()));
            h.push(("user-agent", SAFARI.into()));
            h.push(("referer", "https://shop.example/".into()));
            h.push(("accept-encoding", "gzip, deflate, br".into()));
        }
    }
    h
}

fn client_headers(kind: Kind, json_body: bool) -> Vec<(&'static str, String)> {
    let mut h: Vec<(&'static str, String)> = vec![("host", "api.shop.example".into())];
    match kind {
        Kind::IosApp => {
            h.push(("accept", "application/json".into()));
            h.push((
                "user-agent",
                "ShopApp/5.4.1 (iPhone; iOS 17.4.1; Scale/3.00)".into(),
            ));
            h.push(("accept-language", "en-GB;q=1.0".into()));
            h.push((
                "accept-encoding",
                "br;q=1.0, gzip;q=0.9, deflate;q=0.8".into(),
            ));
        }
        Kind::AndroidApp => {
            h.push(("accept-encoding", "gzip".into()));
            h.push(("user-agent", "okhttp/4.12.0".into()));
        }
        Kind::Sdk | Kind::HeavySync => {
            h.push(("user-agent", "ShopSDK/2.3.0 python/3.12".into()));
            h.push(("accept-encoding", "gzip, deflate".into()));
            h.push(("accept", "*/*".into()));
            h.push(("connection", "keep-alive".into()));
            h.push(("authorization", "Bearer sk_live_0123456789".into()));
        }
        _ => {
            h.push(("user-agent", "curl/8.5.0".into()));
            h.push(("accept", "*/*".into()));
        }
    }
    if json_body {
        h.push(("content-type", "application/json".into()));
    }
    h
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Shape,
    Enumeration,
    Probing,
    Crawling,
    Burst,
    BruteForce,
    Stuffing,
    Bots,
    Sequence,
    RateAnomaly,
    ErrorRatio,
    Oversized,
    /// No attacker: the upstream behind `GET /products/{id}/reviews` turns slow.
    SlowEndpoint,
}

impl Scenario {
    const ALL: [Scenario; 13] = [
        Scenario::Shape,
        Scenario::Enumeration,
        Scenario::Probing,
        Scenario::Crawling,
        Scenario::Burst,
        Scenario::BruteForce,
        Scenario::Stuffing,
        Scenario::Bots,
        Scenario::Sequence,
        Scenario::RateAnomaly,
        Scenario::ErrorRatio,
        Scenario::Oversized,
        Scenario::SlowEndpoint,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Shape => "shape violations",
            Scenario::Enumeration => "enumeration / BOLA",
            Scenario::Probing => "probing (404s)",
            Scenario::Crawling => "crawling",
            Scenario::Burst => "burst (500 req/s)",
            Scenario::BruteForce => "brute force (1 address)",
            Scenario::Stuffing => "stuffing (1 account, 300 addr.)",
            Scenario::Bots => "bot signals",
            Scenario::Sequence => "unseen sequences",
            Scenario::RateAnomaly => "rate anomaly (1 req/s)",
            Scenario::ErrorRatio => "error ratio (422s)",
            Scenario::Oversized => "oversized payloads (4–64 KB carts)",
            Scenario::SlowEndpoint => "endpoint turning slow (reviews, 350–650 ms)",
        }
    }

    /// The rules that count as detecting this scenario.
    fn rules(self) -> &'static [&'static str] {
        match self {
            Scenario::Shape => &["behavior.shape."],
            Scenario::Enumeration => &["behavior.enumeration"],
            Scenario::Probing => &["behavior.probing"],
            Scenario::Crawling => &["behavior.crawling", "behavior.enumeration"],
            Scenario::Burst => &["behavior.rate."],
            Scenario::BruteForce => &["behavior.auth_failures"],
            Scenario::Stuffing => &["behavior.auth_failures.account"],
            Scenario::Bots => &["behavior.bot."],
            Scenario::Sequence => &["behavior.sequence.unseen"],
            Scenario::RateAnomaly => &["behavior.rate.anomaly"],
            Scenario::ErrorRatio => &["behavior.errors.anomaly"],
            Scenario::Oversized => &["behavior.payload.size"],
            Scenario::SlowEndpoint => &["behavior.latency.anomaly"],
        }
    }
}

enum Role {
    Normal(Kind),
    Attacker(Scenario, usize),
}

struct Client {
    ip: IpAddr,
    role: Role,
    /// The requests left in the current session, sent one by one.
    queue: std::collections::VecDeque<Req>,
    own_orders: Vec<u64>,
    user: u64,
    step: u64,
    /// An attacker's pause after its current batch.
    pause: u64,
    detected: bool,
}

fn json_post(kind: Kind, target: String, body: String) -> Req {
    let headers = if matches!(kind, Kind::Chrome | Kind::Firefox | Kind::Safari) {
        browser_headers(kind, true, true)
    } else {
        client_headers(kind, true)
    };
    Req {
        method: Method::POST,
        target,
        headers,
        body: Some(body),
        malicious: false,
    }
}

fn get(kind: Kind, target: String, fetch: bool) -> Req {
    let headers = if matches!(kind, Kind::Chrome | Kind::Firefox | Kind::Safari) {
        browser_headers(kind, fetch, false)
    } else {
        client_headers(kind, false)
    };
    Req {
        method: Method::GET,
        target,
        headers,
        body: None,
        malicious: false,
    }
}

fn product(rng: &mut Rng) -> u64 {
    // Popular products first: a skewed pick among 500.
    let r = rng.below(500) + 1;
    (r * r / 500).max(1)
}

/// A shopper's session (browser or mobile app).
fn shopping_session(rng: &mut Rng, kind: Kind, client: &mut Client) -> Vec<Req> {
    let mut s = Vec::new();
    let browser = matches!(kind, Kind::Chrome | Kind::Firefox | Kind::Safari);
    if browser {
        // A third of visits land on a product from a search engine or a shared link.
        if rng.chance(0.3) {
            s.push(get(kind, format!("/products/{}", product(rng)), false));
        }
        s.push(get(kind, "/".into(), false));
        s.push(get(kind, "/static/app.3f9a1c.js".into(), true));
    }
    if rng.chance(0.5) {
        if rng.chance(0.05) {
            s.push(json_post(
                kind,
                "/login".into(),
                format!(
                    r#"{{"username":"user{}@example.com","password":"typo"}}"#,
                    client.user
                ),
            ));
        }
        s.push(json_post(
            kind,
            "/login".into(),
            format!(
                r#"{{"username":"user{}@example.com","password":"correct"}}"#,
                client.user
            ),
        ));
    }
    let category = *rng.pick(CATEGORIES);
    for page in 1..=rng.range(1, 3) {
        s.push(get(
            kind,
            format!("/products?category={category}&page={page}"),
            true,
        ));
    }
    if rng.chance(0.4) {
        s.push(get(kind, format!("/search?q={}", rng.pick(WORDS)), true));
    }
    for _ in 0..rng.range(1, 4) {
        let id = product(rng);
        s.push(get(kind, format!("/products/{id}"), true));
        if rng.chance(0.3) {
            s.push(get(kind, format!("/products/{id}/reviews?page=1"), true));
        }
    }
    if rng.chance(0.35) {
        let id = product(rng);
        let quantity = rng.range(1, 3);
        s.push(json_post(
            kind,
            "/cart/items".into(),
            format!(r#"{{"product_id":{id},"quantity":{quantity}}}"#),
        ));
        s.push(get(kind, "/cart".into(), true));
        if rng.chance(0.6) {
            let order = 500_000 + rng.below(10_000_000);
            client.own_orders.push(order);
            s.push(json_post(
                kind,
                "/checkout".into(),
                r#"{"payment":"card"}"#.into(),
            ));
            s.push(json_post(
                kind,
                format!("/checkout/{order}/confirm"),
                r#"{"accept_terms":true}"#.into(),
            ));
            s.push(get(kind, format!("/orders/{order}"), true));
        }
    }
    if rng.chance(0.2) {
        s.push(get(kind, "/account".into(), true));
        s.push(get(kind, "/orders".into(), true));
    }
    // Back buttons and bookmarks: now and then a step lands anywhere.
    if rng.chance(0.1) && s.len() > 2 {
        let at = rng.range(1, s.len() as u64 - 1) as usize;
        let id = product(rng);
        s.insert(at, get(kind, format!("/products/{id}"), true));
    }
    s
}

/// An API client's sync: its recent orders and some products.
fn sync_session(rng: &mut Rng, kind: Kind, client: &mut Client) -> Vec<Req> {
    let mut s = vec![get(
        kind,
        format!(
            "/orders?since={}&limit=50",
            1_700_000_000 + client.step * 60
        ),
        false,
    )];
    client.step += 1;
    for _ in 0..rng.range(0, 3) {
        let order = if client.own_orders.is_empty() {
            let o = 500_000 + rng.below(10_000_000);
            client.own_orders.push(o);
            o
        } else {
            *rng.pick(&client.own_orders)
        };
        s.push(get(kind, format!("/orders/{order}"), false));
    }
    for _ in 0..rng.range(0, 4) {
        s.push(get(kind, format!("/products/{}", product(rng)), false));
    }
    s
}

const PROBES: &[&str] = &[
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/admin",
    "/phpmyadmin/index.php",
    "/server-status",
    "/config.json",
    "/backup.zip",
    "/api/v1/debug",
    "/actuator/health",
    "/.aws/credentials",
    "/console",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/cgi-bin/test.cgi",
    "/owa/auth/logon.aspx",
    "/solr/admin/info/system",
    "/jenkins/login",
    "/.DS_Store",
    "/xmlrpc.php",
    "/graphql/console",
];

/// An attacker's next batch of requests and the pause before it.
fn attack(rng: &mut Rng, scenario: Scenario, client: &mut Client) -> (Vec<Req>, u64) {
    let n = client.step;
    client.step += 1;
    let mal = |mut r: Req| {
        r.malicious = true;
        r
    };
    let chrome_get = |t: String| get(Kind::Chrome, t, true);
    match scenario {
        Scenario::Shape => {
            let target = match n % 6 {
                0 => "/products/1%27%20OR%20%271%27=%271".to_owned(),
                1 => "/products?category=books%27%20UNION%20SELECT%20password%20FROM%20users--&page=1".into(),
                2 => format!("/search?q={}", "A".repeat(300)),
                3 => "/products?category=internal&page=1".into(),
                4 => "/products?category=books&page=1%3Bsleep(5)".into(),
                _ => "/orders/..%2F..%2Fetc%2Fpasswd".into(),
            };
            (vec![mal(chrome_get(target))], rng.range(3_000, 10_000))
        }
        Scenario::Enumeration => {
            let id = 1000 + client.user * 10_000 + n;
            (
                vec![mal(get(Kind::Sdk, format!("/orders/{id}"), false))],
                200,
            )
        }
        Scenario::Probing => {
            let probe = PROBES[(n as usize) % PROBES.len()];
            let target = if n as usize >= PROBES.len() {
                format!("{probe}.{}", n / PROBES.len() as u64)
            } else {
                probe.to_owned()
            };
            (vec![mal(get(Kind::Curl, target, false))], 300)
        }
        Scenario::Crawling => {
            let target = match n % 3 {
                0 => format!("/products/{}", n / 3 + 1),
                1 => format!("/products/{}/reviews?page=1", n / 3 + 1),
                _ => format!(
                    "/products?category={}&page={}",
                    CATEGORIES[(n as usize / 3) % CATEGORIES.len()],
                    n / 18 + 1
                ),
            };
            (vec![mal(chrome_get(target))], 250)
        }
        Scenario::Burst => (
            vec![mal(get(
                Kind::Curl,
                "/products?category=books&page=1".into(),
                false,
            ))],
            if n < 1500 { 2 } else { 600_000 },
        ),
        Scenario::BruteForce => (
            vec![mal(json_post(
                Kind::Curl,
                "/login".into(),
                format!(
                    r#"{{"username":"victim{}@example.com","password":"guess{n}"}}"#,
                    client.user
                ),
            ))],
            1_000,
        ),
        Scenario::Stuffing => (
            vec![mal(json_post(
                Kind::Curl,
                "/login".into(),
                format!(
                    r#"{{"username":"Alice.Admin@example.com","password":"leaked{}"}}"#,
                    client.user
                ),
            ))],
            600_000,
        ),
        Scenario::Bots => {
            let mut session = shopping_session(rng, Kind::Chrome, client);
            for r in &mut session {
                r.malicious = true;
                match client.user % 3 {
                    // python-requests with Chrome's User-Agent.
                    0 => {
                        r.headers = vec![
                            ("host", "shop.example".into()),
                            ("user-agent", CHROME.into()),
                            ("accept-encoding", "gzip, deflate".into()),
                            ("accept", "*/*".into()),
                            ("connection", "keep-alive".into()),
                        ]
                    }
                    // A headless browser that names itself.
                    1 => {
                        for h in &mut r.headers {
                            if h.0 == "user-agent" {
                                h.1 = CHROME.replace("Chrome/", "HeadlessChrome/");
                            }
                        }
                    }
                    // A Firefox claim sent in Chrome's order.
                    _ => {
                        for h in &mut r.headers {
                            if h.0 == "user-agent" {
                                h.1 = FIREFOX.into();
                            }
                        }
                    }
                }
            }
            (session, 5_000)
        }
        Scenario::Sequence => {
            let order = 500_000 + rng.below(10_000_000);
            let product = product(rng);
            let step = |t: String| get(Kind::Chrome, t, true);
            let confirm = || {
                mal(json_post(
                    Kind::Chrome,
                    format!("/checkout/{order}/confirm"),
                    r#"{"accept_terms":true}"#.into(),
                ))
            };
            // Replaying the confirmation without the cart and checkout before it, or reaching
            // the checkout from a page that never leads there.
            let session = match (n + client.user) % 3 {
                0 => vec![step(format!("/search?q={}", rng.pick(WORDS))), confirm()],
                1 => vec![confirm()],
                _ => vec![
                    step(format!("/products/{product}/reviews?page=1")),
                    mal(json_post(
                        Kind::Chrome,
                        "/checkout".into(),
                        r#"{"payment":"card"}"#.into(),
                    )),
                ],
            };
            (session, rng.range(20_000, 120_000))
        }
        Scenario::RateAnomaly => {
            let target = format!(
                "/products?category={}&page={}",
                CATEGORIES[(n as usize) % CATEGORIES.len()],
                n % 4 + 1
            );
            (vec![mal(get(Kind::Sdk, target, false))], 1_000)
        }
        Scenario::Oversized => {
            let padding = "A".repeat(rng.range(4_000, 64_000) as usize);
            (
                vec![mal(json_post(
                    Kind::Sdk,
                    "/cart/items".into(),
                    format!(
                        r#"{{"product_id":{},"note":"{padding}","quantity":1}}"#,
                        product(rng)
                    ),
                ))],
                rng.range(2_000, 8_000),
            )
        }
        Scenario::SlowEndpoint => (Vec::new(), 600_000),
        Scenario::ErrorRatio => (
            vec![mal(json_post(
                Kind::Sdk,
                "/cart/items".into(),
                format!(
                    r#"{{"product_id":{},"quantity":{}}}"#,
                    product(rng),
                    100 + n
                ),
            ))],
            3_000,
        ),
    }
}

fn attackers(scenario: Scenario) -> usize {
    match scenario {
        Scenario::Stuffing => 300,
        Scenario::Bots => 9,
        Scenario::Sequence => 20,
        Scenario::SlowEndpoint => 0,
        _ => 3,
    }
}

/// The slow-endpoint scenario: when the endpoint turned slow, and when (after how many slow
/// responses) the behaviour stage reported it.
#[derive(Default)]
struct SlowEpisode {
    onset: Option<u64>,
    responses: u64,
    detected: Option<(u64, u64)>,
    /// Latency reports about any other endpoint or outside the episode, and payload-size
    /// findings on normal requests, from the first scenario on: false alarms.
    other_latency_reports: u64,
    normal_payload_findings: u64,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    normal: u64,
    normal_flagged: u64,
    malicious: u64,
    detected: u64,
    attackers: u64,
    attackers_detected: u64,
}

/// Everything a request needs to be judged, owned (kept for the cost measurement).
struct Owned {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
    client: ClientInfo,
    status: u16,
    latency_ms: u64,
    now: u64,
}

/// The simulated upstream's answer time: a per-endpoint base of 5–40 ms, ±40% jitter, one
/// answer in a hundred five times slower; `slow` endpoints take 350–650 ms.
fn latency(rng: &mut Rng, req: &Req, slow: bool) -> u64 {
    if slow {
        return rng.range(350, 650);
    }
    let path = req.target.split('?').next().unwrap_or("");
    let shape: String = path
        .split('/')
        .map(|s| if s.parse::<u64>().is_ok() { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/");
    let base = 5 + shape
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b))
        % 36;
    let jittered = base * rng.range(60, 140) / 100;
    if rng.chance(0.01) {
        jittered * 5
    } else {
        jittered.max(1)
    }
}

/// Whether `req` goes to the endpoint the slow-endpoint scenario slows down.
fn is_reviews(req: &Req) -> bool {
    let path = req.target.split('?').next().unwrap_or("");
    path.starts_with("/products/") && path.ends_with("/reviews")
}

impl Owned {
    fn new(req: &Req, ip: IpAddr, status: u16, latency_ms: u64, now: u64) -> Owned {
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            headers.append(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Owned {
            method: req.method.clone(),
            uri: req.target.parse().unwrap(),
            headers,
            body: req
                .body
                .as_ref()
                .map(|b| Bytes::copy_from_slice(b.as_bytes())),
            client: ClientInfo {
                peer: SocketAddr::new(ip, 40_000),
                tls: true,
                client_cert_subject: None,
                client_cert_sans: Vec::new(),
            },
            status,
            latency_ms,
            now,
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            version: http::Version::HTTP_11,
            headers: &self.headers,
            client: &self.client,
            route: "shop",
            request_id: "bench",
            body: self.body.as_ref(),
        }
    }

    fn observation(&self, flagged: bool) -> Observation<'_> {
        Observation {
            method: &self.method,
            path: self.uri.path(),
            query: self.uri.query(),
            client: self.client.peer.ip(),
            identity: None,
            status: self.status,
            latency: Duration::from_millis(self.latency_ms),
            request_bytes: self.body.as_ref().map(|b| b.len() as u64),
            response_bytes: Some(1_800),
            flagged,
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let train_hours: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    let rare_ratio: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.002);
    let mut rng = Rng(seed | 1);

    let mut settings = Settings {
        accounts: Some(AccountParams {
            bucket: BucketParams {
                capacity: 20,
                leak_ms: 30_000,
            },
            field: Some("username".into()),
        }),
        ..Settings::default()
    };
    if let Some(sequence) = &mut settings.sequence {
        sequence.rare_ratio = rare_ratio;
    }
    let engine = Behavior::new(Limits::default());

    let kinds = [
        (Kind::Chrome, 40),
        (Kind::Firefox, 12),
        (Kind::Safari, 12),
        (Kind::IosApp, 12),
        (Kind::AndroidApp, 10),
        (Kind::Sdk, 8),
        (Kind::Curl, 3),
        (Kind::HeavySync, 3),
    ];
    let mut population: Vec<Client> = Vec::new();
    for i in 0..clients {
        let mut pick = (i * 100 / clients.max(1)) as u32;
        let mut kind = Kind::Chrome;
        for (k, share) in kinds {
            if pick < share {
                kind = k;
                break;
            }
            pick -= share;
        }
        // One client in twelve sits behind a shared address (an office or carrier NAT,
        // four clients each): their sessions interleave under one client key.
        let ip = if i % 48 < 4 {
            0x0a80_0000 + (i / 48) as u32
        } else {
            0x0a00_0000 + i as u32
        };
        population.push(Client {
            ip: IpAddr::V4(Ipv4Addr::from(ip)),
            role: Role::Normal(kind),
            queue: Default::default(),
            own_orders: Vec::new(),
            user: i as u64,
            step: 0,
            pause: 0,
            detected: false,
        });
    }
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..population.len())
        .map(|i| Reverse((rng.below(3_600_000), i)))
        .collect();

    let train_ms = train_hours * 3_600_000;
    let scenario_ms = 10 * 60_000;
    let mut tallies = [Tally::default(); Scenario::ALL.len()];
    let mut sample: Vec<Owned> = Vec::new();
    let mut learned_requests = 0u64;
    let mut current: Option<usize> = None;
    let mut phase_end = train_ms;
    let mut slow = SlowEpisode::default();

    while let Some(Reverse((now, index))) = heap.pop() {
        if now >= phase_end {
            // The next phase: the next scenario, with its attackers.
            let next = current.map_or(0, |c| c + 1);
            if next >= Scenario::ALL.len() {
                break;
            }
            current = Some(next);
            settings.mode = Mode::Detect;
            let scenario = Scenario::ALL[next];
            for a in 0..attackers(scenario) {
                let ip = IpAddr::V4(Ipv4Addr::from(
                    0xc633_6400u32 + (next as u32) * 1024 + a as u32,
                ));
                population.push(Client {
                    ip,
                    role: Role::Attacker(scenario, next),
                    queue: Default::default(),
                    own_orders: Vec::new(),
                    user: a as u64,
                    step: 0,
                    pause: 0,
                    detected: false,
                });
                let start = phase_end + rng.below(scenario_ms / 2);
                heap.push(Reverse((start, population.len() - 1)));
            }
            tallies[next].attackers = attackers(scenario) as u64;
            phase_end += scenario_ms;
        }
        let client = &mut population[index];
        // Attackers act only during their scenario.
        if let Role::Attacker(_, at) = client.role
            && Some(at) != current
        {
            continue;
        }
        if client.queue.is_empty() {
            match client.role {
                Role::Normal(kind) => {
                    let session = match kind {
                        Kind::Sdk | Kind::Curl | Kind::HeavySync => {
                            sync_session(&mut rng, kind, client)
                        }
                        _ => shopping_session(&mut rng, kind, client),
                    };
                    client.queue.extend(session);
                }
                Role::Attacker(scenario, _) => {
                    let (batch, p) = attack(&mut rng, scenario, client);
                    client.queue.extend(batch);
                    client.pause = p;
                }
            }
        }
        let Some(req) = client.queue.pop_front() else {
            continue;
        };
        let status = upstream(&req, &client.own_orders);
        let slow_now =
            current.is_some_and(|c| Scenario::ALL[c] == Scenario::SlowEndpoint) && is_reviews(&req);
        let owned = Owned::new(
            &req,
            client.ip,
            status,
            latency(&mut rng, &req, slow_now),
            now,
        );
        let findings = engine.judge(&settings, "shop", &owned.view(), None, now);
        let in_slow_scenario = current.is_some_and(|c| Scenario::ALL[c] == Scenario::SlowEndpoint);
        if current.is_some() {
            for f in &findings {
                if f.rule_id == "behavior.latency.anomaly"
                    && !(in_slow_scenario && f.target.contains("reviews"))
                {
                    slow.other_latency_reports += 1;
                }
                if f.rule_id == "behavior.payload.size" && matches!(client.role, Role::Normal(_)) {
                    slow.normal_payload_findings += 1;
                }
            }
        }
        if in_slow_scenario {
            if slow_now {
                slow.responses += 1;
                slow.onset.get_or_insert(now);
            }
            if slow.detected.is_none()
                && findings.iter().any(|f| {
                    f.rule_id == "behavior.latency.anomaly" && f.target.contains("reviews")
                })
            {
                slow.detected = Some((now, slow.responses));
            }
        }
        engine.observe(
            &settings,
            "shop",
            &owned.observation(!findings.is_empty()),
            now,
        );
        match (current, &client.role) {
            (None, _) => learned_requests += 1,
            (Some(s), Role::Normal(_)) => {
                let t = &mut tallies[s];
                t.normal += 1;
                // The slow endpoint's report lands on some normal request: it is the
                // detection there, not a false positive.
                let reported_slowness = Scenario::ALL[s] == Scenario::SlowEndpoint
                    && findings
                        .iter()
                        .all(|f| f.rule_id == "behavior.latency.anomaly");
                if !findings.is_empty() && !reported_slowness {
                    t.normal_flagged += 1;
                }
                if sample.len() < 50_000 {
                    sample.push(owned);
                }
            }
            (Some(_), Role::Attacker(scenario, s)) => {
                let t = &mut tallies[*s];
                let hit = findings
                    .iter()
                    .any(|f| scenario.rules().iter().any(|r| f.rule_id.starts_with(r)));
                if req.malicious {
                    t.malicious += 1;
                    if hit {
                        t.detected += 1;
                    }
                }
                if hit && !client.detected {
                    client.detected = true;
                    t.attackers_detected += 1;
                }
            }
        }
        let next = if !client.queue.is_empty() {
            match client.role {
                // Integrations fire their calls back to back.
                Role::Normal(Kind::Sdk | Kind::Curl | Kind::HeavySync) => rng.range(50, 800),
                Role::Normal(_) => rng.think(),
                Role::Attacker(..) => client.pause.clamp(1, 5_000),
            }
        } else {
            match client.role {
                Role::Normal(Kind::HeavySync) => rng.range(8_000, 15_000),
                Role::Normal(Kind::Sdk | Kind::Curl) => rng.range(60_000, 180_000),
                Role::Normal(_) => rng.range(35 * 60_000, 150 * 60_000),
                Role::Attacker(..) => client.pause.max(1),
            }
        };
        heap.push(Reverse((now + next, index)));
    }

    println!(
        "{clients} normal clients (1 in 12 behind a shared address), {train_hours} h of learning ({learned_requests} requests), then {} min per scenario beside the normal traffic; seed {seed}, sequence.rare_ratio {rare_ratio}",
        scenario_ms / 60_000
    );
    println!();
    println!(
        "| scenario | malicious requests flagged | attackers detected | normal requests flagged (FP) |"
    );
    println!("|---|---|---|---|");
    for (scenario, t) in Scenario::ALL.iter().zip(tallies) {
        if *scenario == Scenario::SlowEndpoint {
            let detection = match (slow.onset, slow.detected) {
                (Some(onset), Some((at, responses))) => format!(
                    "reported after {responses} slow responses ({:.1} s)",
                    (at - onset) as f64 / 1000.0
                ),
                (Some(_), None) => format!("not reported ({} slow responses)", slow.responses),
                _ => "no request reached it".into(),
            };
            println!(
                "| {} | {detection} | {}/1 | {:.2}% ({}/{}) |",
                scenario.name(),
                u8::from(slow.detected.is_some()),
                100.0 * t.normal_flagged as f64 / t.normal.max(1) as f64,
                t.normal_flagged,
                t.normal
            );
            continue;
        }
        println!(
            "| {} | {:.1}% ({}/{}) | {}/{} | {:.2}% ({}/{}) |",
            scenario.name(),
            100.0 * t.detected as f64 / t.malicious.max(1) as f64,
            t.detected,
            t.malicious,
            t.attackers_detected,
            t.attackers,
            100.0 * t.normal_flagged as f64 / t.normal.max(1) as f64,
            t.normal_flagged,
            t.normal
        );
    }

    println!();
    println!(
        "false alarms of the size and latency judgement over all scenarios: {} latency reports about another endpoint or outside the slow episode, {} payload-size findings on normal requests",
        slow.other_latency_reports, slow.normal_payload_findings
    );

    // Cost on the hot path: the same normal requests through judge + observe (on the trained
    // state) and through the detection engine, interleaved rounds, best of each.
    let detect = Engine::new(EngineConfig::default(), &[]).expect("the detection engine builds");
    let mut behaviour_best = f64::MAX;
    let mut detect_best = f64::MAX;
    let mut baseline_best = f64::MAX;
    for round in 0..5u64 {
        // Later than anything simulated, each round ten hours after the last.
        let offset = (round + 10) * 36_000_000;
        let started = Instant::now();
        for r in &sample {
            let view = r.view();
            black_box(&view);
        }
        baseline_best = baseline_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for r in &sample {
            let findings = engine.judge(&settings, "shop", &r.view(), None, r.now + offset);
            engine.observe(
                &settings,
                "shop",
                &r.observation(!findings.is_empty()),
                r.now + offset,
            );
            black_box(findings);
        }
        behaviour_best = behaviour_best.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for r in &sample {
            black_box(detect.inspect(&r.view()));
        }
        detect_best = detect_best.min(started.elapsed().as_secs_f64());
    }
    let per = |s: f64| s * 1e9 / sample.len().max(1) as f64;
    println!();
    println!(
        "hot path over {} normal requests (best of 5 rounds, same run): behaviour judge+observe {:.0} ns/request, detection engine {:.0} ns/request, ratio behaviour/detection {:.2} (view construction alone {:.0} ns)",
        sample.len(),
        per(behaviour_best),
        per(detect_best),
        behaviour_best / detect_best,
        per(baseline_best)
    );
}
