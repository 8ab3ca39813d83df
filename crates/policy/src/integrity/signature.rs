//! Verifying a request's HTTP message signature (RFC 9421) with the keys of a route: choose the
//! signature, check its key, algorithm, tag, covered components and time window, rebuild the
//! signature base, verify it (Ed25519 or HMAC-SHA256), and refuse it if it was seen before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_model::RequestView;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::base::{ComponentError, signature_base};
use super::headers::{SignatureEntry, join_lines, parse_signatures};
use super::replay::{Fingerprint, ReplayCache};
use super::{Failure, HEADER_SIGNATURE, HEADER_SIGNATURE_INPUT};

/// A verification key and what it verifies.
pub enum KeyMaterial {
    Ed25519(VerifyingKey),
    /// The shared secret of HMAC-SHA256 (at least 32 bytes).
    HmacSha256(Vec<u8>),
}

impl KeyMaterial {
    /// The algorithm's name in the RFC 9421 registry (the `alg` parameter).
    pub fn algorithm(&self) -> &'static str {
        match self {
            KeyMaterial::Ed25519(_) => "ed25519",
            KeyMaterial::HmacSha256(_) => "hmac-sha256",
        }
    }

    /// Whether `signature` signs `base` with this key.
    pub fn verify(&self, base: &[u8], signature: &[u8]) -> bool {
        match self {
            KeyMaterial::Ed25519(key) => Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(base, &signature).is_ok()),
            KeyMaterial::HmacSha256(secret) => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                    return false;
                };
                mac.update(base);
                // Constant-time comparison.
                mac.verify_slice(signature).is_ok()
            }
        }
    }
}

/// A configured key (`signatures.keys.<keyid>`).
pub struct SignatureKey {
    pub keyid: String,
    pub material: KeyMaterial,
    /// The identity's subject when this key signs a request.
    pub subject: String,
    /// Attributes given to the identity (its claims).
    pub attributes: Map<String, Value>,
}

/// What a route demands of signatures.
pub struct SignaturePolicy {
    /// The keys accepted on the route, by key id.
    pub keys: HashMap<String, Arc<SignatureKey>>,
    /// Refuse requests without a signature.
    pub required: bool,
    /// Components every accepted signature must cover (`@method`, `content-digest`, ...).
    pub components: Vec<String>,
    /// How old `created` may be.
    pub max_age: Duration,
    /// Clock difference tolerated between signer and gateway.
    pub clock_skew: Duration,
    /// Verify only the signature with this label.
    pub label: Option<String>,
    /// The `tag` parameter a signature must carry.
    pub tag: Option<String>,
}

/// A signature that verified.
pub struct Verified {
    pub key: Arc<SignatureKey>,
    pub label: String,
    /// The signature covers `content-digest`, which must therefore be checked against the body.
    pub covers_digest: bool,
}

/// Whether the covered `components` include `required`, directly or through a component
/// that contains it (`@target-uri` holds scheme, authority, path and query).
pub fn covers(entry: &SignatureEntry, required: &str) -> bool {
    if entry.covers(required) {
        return true;
    }
    let within: &[&str] = match required {
        "@scheme" | "@authority" => &["@target-uri"],
        "@path" | "@query" => &["@target-uri", "@request-target"],
        _ => &[],
    };
    within.iter().any(|outer| entry.covers(outer))
}

impl SignaturePolicy {
    /// How long a fingerprint is remembered: past it, `created` is too old to pass anyway.
    fn replay_ttl(&self) -> Duration {
        self.max_age
            .saturating_add(self.clock_skew.saturating_mul(2))
    }

    /// Verifies the request's signature. `Ok(None)`: the request carries none and the route
    /// does not require one.
    pub fn verify(
        &self,
        request: &RequestView<'_>,
        now_secs: i64,
        now: Instant,
        replay: &ReplayCache,
    ) -> Result<Option<Verified>, Failure> {
        let headers = request.headers;
        let has_input = headers.contains_key(HEADER_SIGNATURE_INPUT);
        let has_signature = headers.contains_key(HEADER_SIGNATURE);
        if !has_input && !has_signature {
            return if self.required {
                Err(Failure::SignatureMissing)
            } else {
                Ok(None)
            };
        }
        let input = join_lines(
            headers
                .get_all(HEADER_SIGNATURE_INPUT)
                .iter()
                .map(|v| v.as_bytes()),
            "Signature-Input",
        )
        .map_err(|_| Failure::SignatureMalformed)?;
        let signature = join_lines(
            headers
                .get_all(HEADER_SIGNATURE)
                .iter()
                .map(|v| v.as_bytes()),
            "Signature",
        )
        .map_err(|_| Failure::SignatureMalformed)?;
        let entries = parse_signatures(&input, &signature).map_err(|e| {
            tracing::debug!(error = %e, "malformed signature fields");
            Failure::SignatureMalformed
        })?;
        let (entry, key) = self.choose(&entries)?;

        if entry
            .params
            .alg
            .as_deref()
            .is_some_and(|alg| alg != key.material.algorithm())
        {
            return Err(Failure::Algorithm);
        }
        if let Some(tag) = &self.tag
            && entry.params.tag.as_deref() != Some(tag.as_str())
        {
            return Err(Failure::Tag);
        }
        if self.components.iter().any(|c| !covers(entry, c)) {
            return Err(Failure::UncoveredComponent);
        }
        self.check_window(entry, now_secs)?;
        let base = signature_base(entry, request).map_err(|e| match e {
            ComponentError::Unsupported(_) => Failure::UnsupportedComponent,
            ComponentError::Absent(_) => Failure::AbsentComponent,
            ComponentError::Malformed(_) => Failure::SignatureMalformed,
        })?;
        if !key.material.verify(&base, &entry.signature) {
            return Err(Failure::BadSignature);
        }
        if !replay.first_use(&fingerprints(&key.keyid, entry), self.replay_ttl(), now) {
            return Err(Failure::Replayed);
        }
        Ok(Some(Verified {
            key: key.clone(),
            label: entry.label.clone(),
            covers_digest: entry.covers("content-digest"),
        }))
    }

    /// The signature to verify: the configured label's, or the first whose key id the route
    /// accepts.
    fn choose<'e>(
        &self,
        entries: &'e [SignatureEntry],
    ) -> Result<(&'e SignatureEntry, &Arc<SignatureKey>), Failure> {
        let mut candidates = entries
            .iter()
            .filter(|e| self.label.as_ref().is_none_or(|label| *label == e.label))
            .peekable();
        if candidates.peek().is_none() {
            // The configured label is not there: nothing this route verifies.
            return Err(Failure::SignatureMissing);
        }
        // A signature without `keyid` is never tried against every key: that would let one
        // request cost as many verifications as there are keys.
        for entry in candidates {
            if let Some(key) = entry.params.keyid.as_deref().and_then(|k| self.keys.get(k)) {
                return Ok((entry, key));
            }
        }
        Err(Failure::UnknownKey)
    }

    fn check_window(&self, entry: &SignatureEntry, now: i64) -> Result<(), Failure> {
        let skew = i64::try_from(self.clock_skew.as_secs()).unwrap_or(i64::MAX);
        let max_age = i64::try_from(self.max_age.as_secs()).unwrap_or(i64::MAX);
        let Some(created) = entry.params.created else {
            return Err(Failure::MissingCreated);
        };
        if created > now.saturating_add(skew) {
            return Err(Failure::NotYetValid);
        }
        if created.saturating_add(max_age).saturating_add(skew) < now {
            return Err(Failure::Expired);
        }
        if let Some(expires) = entry.params.expires {
            if expires < created {
                return Err(Failure::SignatureMalformed);
            }
            if expires.saturating_add(skew) < now {
                return Err(Failure::Expired);
            }
        }
        Ok(())
    }
}

/// What the replay cache remembers of a signature: the signature itself and, when there is
/// one, its nonce (a nonce used twice by one key is a replay even under another signature).
fn fingerprints(keyid: &str, entry: &SignatureEntry) -> Vec<Fingerprint> {
    let hash = |kind: u8, value: &[u8]| -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(keyid.as_bytes());
        hasher.update([0, kind]);
        hasher.update(value);
        hasher.finalize().into()
    };
    let mut out = vec![hash(1, &entry.signature)];
    if let Some(nonce) = &entry.params.nonce {
        out.push(hash(2, nonce.as_bytes()));
    }
    out
}
