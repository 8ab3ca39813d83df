//! API keys, configured as the SHA-256 of the key (hex) so the configuration file holds no
//! secret. A presented key is hashed and compared in constant time.

use std::collections::HashMap;

use apiguard_model::{AuthMethod, Identity};
use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Failure;

/// One configured key.
pub struct ApiKey {
    /// The identity's subject when this key is presented.
    pub name: String,
    pub sha256: [u8; 32],
    /// Attributes given to the identity (its claims).
    pub attributes: Map<String, Value>,
}

pub struct ApiKeyProvider {
    pub name: String,
    pub header: HeaderName,
    keys: Vec<ApiKey>,
    /// Keys by the first 8 bytes of their digest. Finding the bucket takes time that depends
    /// on the digest of the presented key (which tells an attacker nothing about any
    /// configured key); inside it, digests are compared in constant time.
    buckets: HashMap<u64, Vec<usize>>,
}

/// Longest API key accepted (a longer header value is refused without hashing it).
const MAX_KEY_BYTES: usize = 4096;

impl ApiKeyProvider {
    pub fn new(name: String, header: HeaderName, keys: Vec<ApiKey>) -> Self {
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            buckets.entry(bucket(&key.sha256)).or_default().push(i);
        }
        ApiKeyProvider {
            name,
            header,
            keys,
            buckets,
        }
    }

    /// The key the request presents, if any.
    pub fn presented<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        headers.get(&self.header).map(|v| v.as_bytes().trim_ascii())
    }

    pub fn verify(&self, presented: &[u8]) -> Result<Identity, Failure> {
        if presented.is_empty() || presented.len() > MAX_KEY_BYTES {
            return Err(Failure::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for &i in self.buckets.get(&bucket(&digest)).into_iter().flatten() {
            if bool::from(self.keys[i].sha256.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        let key = &self.keys[found.ok_or(Failure::UnknownApiKey)?];
        Ok(Identity {
            subject: key.name.clone(),
            method: AuthMethod::ApiKey,
            claims: key.attributes.clone(),
        })
    }
}

fn bucket(digest: &[u8; 32]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}

/// Parses a SHA-256 written as 64 hex digits (either case).
pub fn parse_sha256_hex(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{}` is not a SHA-256 in hex (64 hex digits; make one with `printf %s \"$KEY\" | sha256sum`)",
            text.chars().take(80).collect::<String>()
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
