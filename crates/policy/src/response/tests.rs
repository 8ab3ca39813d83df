//! Scanning and masking whole bodies.

use serde_json::{Value, json};

use super::*;

fn scanner() -> ResponseScanner {
    ResponseScanner::new(DetectorSet::all())
}

fn masked_json(body: &Value) -> (Value, Vec<DetectorFinding>) {
    let text = body.to_string();
    let scan = scanner().scan(text.as_bytes(), BodyKind::Json, true);
    let masked = scan.masked.expect("something was masked");
    (
        serde_json::from_slice(&masked).expect("masked JSON is still JSON"),
        scan.findings,
    )
}

#[test]
fn clean_bodies_are_untouched() {
    let body = json!({"id": 42, "name": "Widget", "price": 9.99, "ts": 1700000000000u64,
        "tags": ["a", "b"], "note": "ship at noon, order 1234567890123"});
    let text = body.to_string();
    for mask in [false, true] {
        let scan = scanner().scan(text.as_bytes(), BodyKind::Json, mask);
        assert!(scan.is_clean(), "{:?}", scan.findings);
        assert_eq!(scan.masked, None);
    }
    let scan = scanner().scan(b"plain text with nothing in it", BodyKind::Text, true);
    assert_eq!(scan, Scan::default());
}

#[test]
fn json_values_are_masked_and_the_document_stays_json() {
    let body = json!({
        "customer": {"email": "alice@example.com", "ssn": "123-45-6789"},
        "card": "4111 1111 1111 1111",
        "card_number_as_number": 4111111111111111u64,
        "aws": "AKIAIOSFODNN7EXAMPLE",
        "api_key": "k3y-v4lue-0123",
        "note": "call me\nbob@example.org",
        "keep": "nothing to see",
    });
    let (masked, findings) = masked_json(&body);
    assert_eq!(masked["customer"]["email"], "[REDACTED:email]");
    assert_eq!(masked["customer"]["ssn"], "[REDACTED:us_ssn]");
    assert_eq!(masked["card"], "[REDACTED:card_number]");
    assert_eq!(
        masked["card_number_as_number"],
        json!(0u64),
        "zeros keep it a number"
    );
    assert_eq!(masked["aws"], "[REDACTED:aws_access_key]");
    assert_eq!(masked["api_key"], "[REDACTED:api_key]");
    assert_eq!(
        masked["note"], "call me\n[REDACTED:email]",
        "escapes are decoded first"
    );
    assert_eq!(masked["keep"], "nothing to see");
    let by_name: Vec<(&str, usize)> = findings
        .iter()
        .map(|f| (f.detector.as_str(), f.count))
        .collect();
    assert_eq!(
        by_name,
        [
            ("card_number", 2),
            ("us_ssn", 1),
            ("email", 2),
            ("aws_access_key", 1),
            ("api_key", 1)
        ]
    );
    assert!(findings.iter().all(|f| !f.evidence.contains("4111 1111")));
}

#[test]
fn keys_are_scanned_too() {
    let (masked, findings) = masked_json(&json!({"by_user": {"alice@example.com": 3}}));
    assert_eq!(masked["by_user"]["[REDACTED:email]"], 3);
    assert_eq!(findings.len(), 1);
}

#[test]
fn detect_mode_reports_without_masking() {
    let text = json!({"card": "5555555555554444"}).to_string();
    let scan = scanner().scan(text.as_bytes(), BodyKind::Json, false);
    assert_eq!(scan.masked, None);
    assert_eq!(scan.findings.len(), 1);
    assert_eq!(scan.findings[0].evidence, "card number ending 4444");
}

#[test]
fn secrets_and_traces_in_json_strings() {
    let pem =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    let trace = "Traceback (most recent call last):\n  File \"/app/orders.py\", line 12, in load\nKeyError: 'id'";
    let body = json!({"key": pem, "error": trace,
        "token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"});
    let (masked, findings) = masked_json(&body);
    assert_eq!(masked["key"], "[REDACTED:private_key]");
    assert_eq!(
        masked["error"],
        "[REDACTED:stack_trace]\n  [REDACTED:stack_trace]\nKeyError: 'id'"
    );
    assert_eq!(masked["token"], "[REDACTED:jwt]");
    assert_eq!(findings.len(), 3);
}

#[test]
fn text_bodies_are_masked_in_place() {
    let body = "user=alice@example.com&card=4111111111111111&api_key=abcd1234efgh\n\tat com.shop.Orders.load(Orders.java:42)\n";
    let scan = scanner().scan(body.as_bytes(), BodyKind::Text, true);
    assert_eq!(
        String::from_utf8(scan.masked.unwrap()).unwrap(),
        "user=[REDACTED:email]&card=[REDACTED:card_number]&api_key=[REDACTED:api_key]\n\t[REDACTED:stack_trace]\n"
    );
}

#[test]
fn only_enabled_detectors_report() {
    let scanner = ResponseScanner::new([Detector::CardNumber].into_iter().collect());
    let text = json!({"email": "alice@example.com"}).to_string();
    assert!(
        scanner
            .scan(text.as_bytes(), BodyKind::Json, true)
            .is_clean()
    );
    let text = json!({"email": "alice@example.com", "card": "4111111111111111"}).to_string();
    let scan = scanner.scan(text.as_bytes(), BodyKind::Json, true);
    let masked: Value = serde_json::from_slice(&scan.masked.unwrap()).unwrap();
    assert_eq!(masked["email"], "alice@example.com");
    assert_eq!(masked["card"], "[REDACTED:card_number]");
}

#[test]
fn invalid_json_is_scanned_as_text() {
    let body = b"{\"card\": \"4111111111111111\", oops";
    let scan = scanner().scan(body, BodyKind::Json, true);
    assert_eq!(
        scan.masked.as_deref(),
        Some(&b"{\"card\": \"[REDACTED:card_number]\", oops"[..])
    );
    // Too deep for the walker: still found, as text.
    let deep = format!("{}\"4111111111111111\"{}", "[".repeat(300), "]".repeat(300));
    let scan = scanner().scan(deep.as_bytes(), BodyKind::Json, false);
    assert_eq!(scan.findings.len(), 1);
}

#[test]
fn content_types() {
    assert_eq!(body_kind(b"application/json"), Some(BodyKind::Json));
    assert_eq!(
        body_kind(b"application/problem+json; charset=utf-8"),
        Some(BodyKind::Json)
    );
    assert_eq!(body_kind(b"Text/HTML"), Some(BodyKind::Text));
    assert_eq!(body_kind(b"application/xml"), Some(BodyKind::Text));
    assert_eq!(body_kind(b"image/png"), None);
    assert_eq!(body_kind(b"application/grpc"), None);
    assert_eq!(body_kind(b"nonsense"), None);
}

/// A deterministic stand-in for the fuzz target (`fuzz/fuzz_targets/response_scan.rs`):
/// mutated JSON documents through the scanner. No panic, and a masked valid document stays
/// valid JSON.
#[test]
fn mutated_bodies_never_panic_and_masked_json_stays_json() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seed = json!({
        "card": "4111 1111 1111 1111", "n": 5555555555554444u64, "ssn": "123-45-6789",
        "text": "mail bob@example.org\n\tat a.B.c(B.java:1)", "api_key": "abcdefgh1234",
        "nested": [{"jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}, null, true, -1.5e3]
    })
    .to_string()
    .into_bytes();
    let alphabet = b"{}[]\":,\\ u0aA9@.-\n\xff";
    let scanner = scanner();
    for _ in 0..3000 {
        let mut body = seed.clone();
        for _ in 0..1 + next() % 6 {
            let at = (next() as usize) % (body.len() + 1);
            let byte = alphabet[next() as usize % alphabet.len()];
            match next() % 3 {
                0 if at < body.len() => body[at] = byte,
                1 => body.insert(at, byte),
                _ if at < body.len() => {
                    body.remove(at);
                }
                _ => {}
            }
        }
        for mask in [false, true] {
            let scan = scanner.scan(&body, BodyKind::Json, mask);
            if let Some(masked) = &scan.masked
                && serde_json::from_slice::<Value>(&body).is_ok()
            {
                assert!(
                    serde_json::from_slice::<Value>(masked).is_ok(),
                    "{} became {}",
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(masked)
                );
            }
            let _ = scanner.scan(&body, BodyKind::Text, mask);
        }
    }
}
