//! Measures the engine on a labelled JSONL corpus (default settings unless told otherwise).
//!
//! ```text
//! cargo run --release -p apiguard-detect --example corpus_eval -- [DIR] [--paranoia N]
//!     [--misses CLASS|all] [--fps] [--limit N] [--dump]
//! ```
//!
//! DIR holds `attacks.jsonl` and `benign.jsonl` (default `/work/shared/corpus/dev`). Each line
//! has `id, source, label, class, method, uri, headers, body` (or `body_b64`). A line that
//! cannot be represented as an HTTP request (a method, URI or header value the HTTP layer
//! refuses) never reaches the engine: the gateway answers it with 400, so it counts as blocked
//! and is reported separately.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use apiguard_detect::{DetectStage, Engine, EngineConfig};
use apiguard_model::{ClientInfo, RequestView};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use serde_json::Value;

struct Options {
    dir: String,
    paranoia: u8,
    misses: Option<String>,
    fps: bool,
    limit: usize,
    dump: bool,
}

fn parse_args() -> Options {
    let mut opts = Options {
        dir: "/work/shared/corpus/dev".into(),
        paranoia: 1,
        misses: None,
        fps: false,
        limit: 50,
        dump: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--paranoia" => opts.paranoia = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--misses" => opts.misses = args.next(),
            "--fps" => opts.fps = true,
            "--dump" => opts.dump = true,
            "--limit" => opts.limit = args.next().and_then(|v| v.parse().ok()).unwrap_or(50),
            other => opts.dir = other.to_string(),
        }
    }
    opts
}

/// A corpus line as an owned request, or why the HTTP layer would refuse it.
struct OwnedRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

fn build(line: &Value) -> Result<OwnedRequest, String> {
    let method = line["method"].as_str().unwrap_or("GET");
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid method {method:?}"))?;
    let raw_uri = line["uri"].as_str().unwrap_or("/");
    // Raw non-ASCII bytes go on the wire percent-encoded by the HTTP layer's parser.
    let mut uri_text = String::with_capacity(raw_uri.len());
    for b in raw_uri.bytes() {
        if b >= 0x80 {
            uri_text.push_str(&format!("%{b:02X}"));
        } else {
            uri_text.push(b as char);
        }
    }
    let uri: Uri = uri_text.parse().map_err(|e| format!("invalid uri: {e}"))?;
    let mut headers = HeaderMap::new();
    for pair in line["headers"].as_array().into_iter().flatten() {
        let name = pair[0].as_str().unwrap_or("");
        let value = pair[1].as_str().unwrap_or("");
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| format!("invalid header value for {name}"))?;
        headers.append(name, value);
    }
    let body = match (
        line.get("body").and_then(Value::as_str),
        line.get("body_b64").and_then(Value::as_str),
    ) {
        (_, Some(b64)) => Bytes::from(decode_base64(b64)),
        (Some(text), None) => Bytes::from(text.to_string()),
        (None, None) => Bytes::new(),
    };
    Ok(OwnedRequest {
        method,
        uri,
        headers,
        body,
    })
}

fn decode_base64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[derive(Default)]
struct Tally {
    total: usize,
    blocked: usize,
    refused: usize,
}

fn main() {
    let opts = parse_args();
    let config = EngineConfig {
        paranoia: opts.paranoia,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(config, &[]).expect("engine builds"));
    // The stage is what the gateway runs; build it to check the wiring compiles.
    let _stage = DetectStage(Arc::clone(&engine));
    let client = ClientInfo {
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    };

    let mut by_class: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_source: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut attacks, mut benign) = (Tally::default(), Tally::default());
    let mut shown = 0;
    let mut bytes_inspected = 0usize;
    let started = Instant::now();
    for (file, is_attack) in [("attacks.jsonl", true), ("benign.jsonl", false)] {
        let path = format!("{}/{file}", opts.dir);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        for raw in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: Value = serde_json::from_str(raw).expect("corpus line is JSON");
            let class = line["class"].as_str().unwrap_or("?").to_string();
            let source = line["source"].as_str().unwrap_or("?").to_string();
            let id = line["id"].as_str().unwrap_or("?").to_string();
            let (blocked, refused, detail) = match build(&line) {
                Err(why) => (true, true, why),
                Ok(req) => {
                    bytes_inspected += raw.len();
                    let view = RequestView {
                        method: &req.method,
                        uri: &req.uri,
                        version: Version::HTTP_11,
                        headers: &req.headers,
                        client: &client,
                        route: "bench",
                        request_id: &id,
                        body: Some(&req.body),
                    };
                    let verdict = engine.inspect(&view);
                    let detail = verdict
                        .findings
                        .iter()
                        .map(|f| format!("{}@{} [{}]", f.rule_id, f.target, f.evidence))
                        .collect::<Vec<_>>()
                        .join("; ");
                    (
                        verdict.blocked,
                        false,
                        format!("score {} {detail}", verdict.score),
                    )
                }
            };
            if opts.dump {
                println!("{id} {blocked} {detail}");
            }
            let tally = if is_attack { &mut attacks } else { &mut benign };
            tally.total += 1;
            tally.blocked += usize::from(blocked);
            tally.refused += usize::from(refused);
            if is_attack {
                let t = by_class.entry(class.clone()).or_default();
                t.total += 1;
                t.blocked += usize::from(blocked);
                t.refused += usize::from(refused);
            }
            let s = by_source
                .entry(format!(
                    "{source}/{}",
                    if is_attack { "attack" } else { "benign" }
                ))
                .or_default();
            s.total += 1;
            s.blocked += usize::from(blocked);
            let show_miss = is_attack
                && !blocked
                && opts
                    .misses
                    .as_deref()
                    .is_some_and(|c| c == "all" || c == class);
            let show_fp = !is_attack && blocked && opts.fps;
            if (show_miss || show_fp) && shown < opts.limit {
                shown += 1;
                let mut excerpt: String = raw.chars().take(700).collect();
                if let Some(pos) = excerpt.find("\"headers\"") {
                    excerpt.truncate(pos.max(1).min(excerpt.len()));
                }
                println!(
                    "{} {id} {detail}\n    {excerpt}\n    body: {}",
                    if show_miss { "MISS" } else { "FP" },
                    line.get("body")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .chars()
                        .take(300)
                        .collect::<String>()
                );
            }
        }
    }
    let elapsed = started.elapsed();
    let rate = |t: &Tally| {
        if t.total == 0 {
            0.0
        } else {
            t.blocked as f64 / t.total as f64
        }
    };
    println!(
        "\ncorpus: {}   paranoia: {}   threshold: {}",
        opts.dir,
        opts.paranoia,
        engine.config().threshold
    );
    println!(
        "detection rate        {:.3}  ({}/{} attacks blocked; {} refused by the HTTP layer)",
        rate(&attacks),
        attacks.blocked,
        attacks.total,
        attacks.refused
    );
    println!(
        "false-positive rate   {:.3}  ({}/{} benign blocked; {} refused by the HTTP layer)",
        rate(&benign),
        benign.blocked,
        benign.total,
        benign.refused
    );
    println!(
        "\n{:<10} {:>7} {:>8} {:>9}",
        "class", "attacks", "blocked", "detection"
    );
    for (class, t) in &by_class {
        println!(
            "{class:<10} {:>7} {:>8} {:>9.3}",
            t.total,
            t.blocked,
            rate(t)
        );
    }
    println!(
        "\n{:<18} {:>7} {:>8} {:>6}",
        "source/label", "lines", "blocked", "rate"
    );
    for (source, t) in &by_source {
        println!(
            "{source:<18} {:>7} {:>8} {:>6.3}",
            t.total,
            t.blocked,
            rate(t)
        );
    }
    println!(
        "\ninspected {} lines ({:.1} MB of JSONL) in {:.2?}",
        attacks.total + benign.total,
        bytes_inspected as f64 / 1e6,
        elapsed
    );
}
