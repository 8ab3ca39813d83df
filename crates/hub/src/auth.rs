//! API keys: generated from the operating system's random source, shown once, stored only as
//! their SHA-256. A key has 256 random bits, so a plain (unsalted) hash is as strong as a
//! password hash would be, and lets the hub look a key up by its hash.

use sha2::{Digest, Sha256};

use crate::error::HubError;

/// The prefix of every participant API key, so leaked keys are easy to scan for.
pub const API_KEY_PREFIX: &str = "ahk_";

/// A new random API key: `ahk_` and 64 hex digits.
pub fn generate_api_key() -> Result<String, HubError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| HubError::Internal(format!("no randomness for an API key: {e}")))?;
    Ok(format!("{API_KEY_PREFIX}{}", hex(&bytes)))
}

/// The stored form of a key: SHA-256, hex.
pub fn hash_api_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Whether `token` hashes to `expected` (compared in constant time).
pub fn token_matches(token: &str, expected: &[u8; 32]) -> bool {
    let digest = Sha256::digest(token.as_bytes());
    digest
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Parses 64 hex digits.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme is case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| value[7..].trim())
        .filter(|token| !token.is_empty())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_only_their_hash_matches() {
        let a = generate_api_key().unwrap();
        let b = generate_api_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == 68);
        let hash = hash_api_key(&a);
        assert!(!hash.contains(&a[4..]));
        let parsed = parse_sha256_hex(&hash).unwrap();
        assert!(token_matches(&a, &parsed));
        assert!(!token_matches(&b, &parsed));
        assert!(parse_sha256_hex("xyz").is_none());
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Beaé"), None);
    }
}
