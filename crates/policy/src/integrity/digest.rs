//! `Content-Digest` (RFC 9530): a dictionary of digests of the request content as sent
//! (after any content coding), such as `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:`.
//! Every digest of an accepted algorithm must match the body; algorithms the gateway does not
//! accept (including the insecure ones of the registry: md5, sha, crc32c, unixsum, ...) are
//! ignored, as the RFC asks.

use sfv::{Dictionary, ListEntry, Parser};
use sha2::{Digest, Sha256, Sha512};

use super::headers::{MAX_FIELD_BYTES, join_lines};

/// A digest algorithm the gateway verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    pub const ALL: [DigestAlgorithm; 2] = [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512];

    /// The key in the `Content-Digest` dictionary.
    pub fn key(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha-256",
            DigestAlgorithm::Sha512 => "sha-512",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.key() == text)
    }

    pub fn digest(self, body: &[u8]) -> Vec<u8> {
        match self {
            DigestAlgorithm::Sha256 => Sha256::digest(body).to_vec(),
            DigestAlgorithm::Sha512 => Sha512::digest(body).to_vec(),
        }
    }

    /// `Content-Digest` value for `body` (for clients and tests).
    pub fn field_value(self, body: &[u8]) -> String {
        use base64::Engine;
        format!(
            "{}=:{}:",
            self.key(),
            base64::engine::general_purpose::STANDARD.encode(self.digest(body))
        )
    }
}

/// Why a `Content-Digest` check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    /// No `Content-Digest`, or none with an accepted algorithm.
    Missing,
    /// Not a dictionary of byte sequences, or too long.
    Malformed,
    /// This algorithm's digest differs from the body's.
    Mismatch(DigestAlgorithm),
}

/// Checks the request's `Content-Digest` lines against `body`. `Ok(false)`: there was no digest
/// of an accepted algorithm (which the caller refuses when one is required).
pub fn verify<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    body: &[u8],
    accepted: &[DigestAlgorithm],
) -> Result<bool, DigestError> {
    let joined = join_lines(lines, "Content-Digest").map_err(|_| DigestError::Malformed)?;
    if joined.is_empty() {
        return Ok(false);
    }
    if joined.len() > MAX_FIELD_BYTES {
        return Err(DigestError::Malformed);
    }
    let dictionary = Parser::new(&joined)
        .parse::<Dictionary>()
        .map_err(|_| DigestError::Malformed)?;
    let mut checked = false;
    for (key, member) in &dictionary {
        let Some(algorithm) = DigestAlgorithm::parse(key.as_str()) else {
            continue;
        };
        if !accepted.contains(&algorithm) {
            continue;
        }
        let ListEntry::Item(item) = member else {
            return Err(DigestError::Malformed);
        };
        let Some(expected) = item.bare_item.as_byte_sequence() else {
            return Err(DigestError::Malformed);
        };
        if algorithm.digest(body) != expected {
            return Err(DigestError::Mismatch(algorithm));
        }
        checked = true;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[DigestAlgorithm] = &DigestAlgorithm::ALL;

    fn check(field: &str, body: &[u8]) -> Result<bool, DigestError> {
        verify([field.as_bytes()].into_iter(), body, ALL)
    }

    #[test]
    fn rfc_9530_examples_verify() {
        // RFC 9530 section 2: the digest of `{"hello": "world"}`.
        let body = br#"{"hello": "world"}"#;
        assert_eq!(
            check(
                "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
                body
            ),
            Ok(true)
        );
        assert_eq!(
            check(
                "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
                body
            ),
            Ok(true)
        );
        assert_eq!(
            DigestAlgorithm::Sha256.field_value(body),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
    }

    #[test]
    fn every_accepted_digest_must_match() {
        let body = b"payload";
        let good = DigestAlgorithm::Sha256.field_value(body);
        let bad = DigestAlgorithm::Sha512.field_value(b"other");
        assert_eq!(check(&good, body), Ok(true));
        assert_eq!(
            check(&format!("{good}, {bad}"), body),
            Err(DigestError::Mismatch(DigestAlgorithm::Sha512))
        );
        assert_eq!(
            check(&good, b"tampered"),
            Err(DigestError::Mismatch(DigestAlgorithm::Sha256))
        );
        // Only sha-512 accepted: the sha-256 digest is ignored, so nothing was checked.
        assert_eq!(
            verify(
                [good.as_bytes()].into_iter(),
                body,
                &[DigestAlgorithm::Sha512]
            ),
            Ok(false)
        );
    }

    #[test]
    fn unknown_algorithms_are_ignored_and_junk_refused() {
        assert_eq!(check("md5=:HUXZLQLMuI/KZ5KDcJPcOA==:", b"x"), Ok(false));
        assert_eq!(check("", b"x"), Ok(false));
        assert_eq!(check("sha-256=\"text\"", b"x"), Err(DigestError::Malformed));
        assert_eq!(check("sha-256=(:AA==:)", b"x"), Err(DigestError::Malformed));
        assert_eq!(
            check("sha-256=:not base64", b"x"),
            Err(DigestError::Malformed)
        );
    }
}
