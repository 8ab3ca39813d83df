//! Integrity, stage 6 of the pipeline: HTTP message signatures (RFC 9421) verified with
//! Ed25519 or HMAC-SHA256 keys per client, replays refused, and `Content-Digest` (RFC 9530)
//! checked against the body. A verified key id becomes the request's identity when
//! authentication did not set one.
//!
//! Nothing here does I/O: keys are loaded when the configuration is compiled, and the replay
//! cache lives in memory ([`IntegrityRuntime`], kept across reloads).

pub mod base;
pub mod digest;
pub mod headers;
mod metrics;
pub mod replay;
pub mod signature;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use apiguard_model::{
    AuthMethod, Finding, Identity, Outcome, RequestContext, RequestView, Severity, Stage,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;
use http::{HeaderName, HeaderValue, header};
use serde_json::Value;

pub use digest::{DigestAlgorithm, DigestError};
pub use metrics::IntegrityMetrics;
pub use replay::ReplayCache;
pub use signature::{KeyMaterial, SignatureKey, SignaturePolicy, Verified};

pub const HEADER_SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
pub const HEADER_SIGNATURE: HeaderName = HeaderName::from_static("signature");
pub const HEADER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
pub const HEADER_ACCEPT_SIGNATURE: HeaderName = HeaderName::from_static("accept-signature");

/// Why a request failed the integrity stage. A bounded set: it is a metric label
/// (`apiguard_integrity_failures_total{reason}`) and the finding's rule id
/// (`integrity.<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The route requires a signature and the request has none (or none with the
    /// configured label).
    SignatureMissing,
    /// `Signature-Input` or `Signature` is not well formed (or too large).
    SignatureMalformed,
    /// No signature names a key id this route accepts.
    UnknownKey,
    /// The `alg` parameter names another algorithm than the key's.
    Algorithm,
    /// The signature lacks the `tag` the route requires.
    Tag,
    /// The signature does not cover a component the route requires.
    UncoveredComponent,
    /// The signature covers a component this gateway cannot build.
    UnsupportedComponent,
    /// The signature covers a header field the request does not have.
    AbsentComponent,
    /// The signature has no `created` parameter (its age cannot be checked).
    MissingCreated,
    /// `created` is in the future, beyond the clock skew.
    NotYetValid,
    /// `created` is older than the route's `max_age`, or `expires` has passed.
    Expired,
    /// The signature does not verify.
    BadSignature,
    /// The same signature (or nonce) was already accepted within its window.
    Replayed,
    /// No `Content-Digest` of an accepted algorithm, and one is required.
    DigestMissing,
    /// `Content-Digest` is not a dictionary of byte sequences.
    DigestMalformed,
    /// A digest does not match the body.
    DigestMismatch(DigestAlgorithm),
    /// The body is larger than the route's inspection limit, so its digest cannot be checked.
    BodyTooLarge,
    /// The body is not buffered for this kind of request (gRPC, upgrades), so its digest
    /// cannot be checked.
    BodyUnavailable,
}

impl Failure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::SignatureMissing => "signature_missing",
            Failure::SignatureMalformed => "signature_malformed",
            Failure::UnknownKey => "unknown_key",
            Failure::Algorithm => "algorithm",
            Failure::Tag => "tag",
            Failure::UncoveredComponent => "uncovered_component",
            Failure::UnsupportedComponent => "unsupported_component",
            Failure::AbsentComponent => "absent_component",
            Failure::MissingCreated => "missing_created",
            Failure::NotYetValid => "not_yet_valid",
            Failure::Expired => "expired",
            Failure::BadSignature => "bad_signature",
            Failure::Replayed => "replayed",
            Failure::DigestMissing => "digest_missing",
            Failure::DigestMalformed => "digest_malformed",
            Failure::DigestMismatch(_) => "digest_mismatch",
            Failure::BodyTooLarge => "body_too_large",
            Failure::BodyUnavailable => "body_unavailable",
        }
    }

    /// The finding's rule id.
    pub fn rule_id(self) -> String {
        format!("integrity.{}", self.as_str())
    }

    /// 400 for a request that is malformed or whose content does not match its digest; 413
    /// for a body too large to check; 401 for a signature that does not prove who sent it.
    pub fn status(self) -> u16 {
        match self {
            Failure::SignatureMalformed
            | Failure::UnsupportedComponent
            | Failure::DigestMissing
            | Failure::DigestMalformed
            | Failure::DigestMismatch(_)
            | Failure::BodyUnavailable => 400,
            Failure::BodyTooLarge => 413,
            _ => 401,
        }
    }

    fn is_digest(self) -> bool {
        matches!(
            self,
            Failure::DigestMissing
                | Failure::DigestMalformed
                | Failure::DigestMismatch(_)
                | Failure::BodyTooLarge
                | Failure::BodyUnavailable
        )
    }

    /// The problem+json `detail`: enough to fix an honest client, nothing about keys.
    pub fn description(self) -> String {
        match self {
            Failure::SignatureMissing => {
                "a valid HTTP message signature is required (see Accept-Signature)".into()
            }
            Failure::SignatureMalformed => {
                "the Signature-Input or Signature field is malformed".into()
            }
            Failure::UnknownKey => "the signature's keyid is not accepted".into(),
            Failure::Algorithm => "the signature's alg does not match its key".into(),
            Failure::Tag => "the signature does not carry the required tag".into(),
            Failure::UncoveredComponent => {
                "the signature does not cover every required component (see Accept-Signature)"
                    .into()
            }
            Failure::UnsupportedComponent => {
                "the signature covers a component this gateway does not support".into()
            }
            Failure::AbsentComponent => {
                "the signature covers a header field the request does not have".into()
            }
            Failure::MissingCreated => "the signature has no created parameter".into(),
            Failure::NotYetValid => "the signature's created time is in the future".into(),
            Failure::Expired => "the signature is too old or has expired".into(),
            Failure::BadSignature => "the signature is invalid".into(),
            Failure::Replayed => "this signature was already used".into(),
            Failure::DigestMissing => "a Content-Digest (sha-256 or sha-512) is required".into(),
            Failure::DigestMalformed => "the Content-Digest field is malformed".into(),
            Failure::DigestMismatch(algorithm) => format!(
                "the Content-Digest {} does not match the request body",
                algorithm.key()
            ),
            Failure::BodyTooLarge => {
                "the request body is too large to verify its Content-Digest".into()
            }
            Failure::BodyUnavailable => {
                "the Content-Digest of this kind of request cannot be verified".into()
            }
        }
    }
}

/// What lives across configuration reloads: the replay cache and the metrics.
pub struct IntegrityRuntime {
    pub replay: ReplayCache,
    pub metrics: IntegrityMetrics,
}

impl IntegrityRuntime {
    /// `replay_capacity`: signatures (and nonces) remembered at most.
    pub fn new(replay_capacity: usize, metrics: IntegrityMetrics) -> Arc<Self> {
        Arc::new(IntegrityRuntime {
            replay: ReplayCache::new(
                replay_capacity,
                metrics.replay_evictions.clone(),
                metrics.replay_entries.clone(),
            ),
            metrics,
        })
    }
}

/// What a route demands of `Content-Digest`.
pub struct DigestPolicy {
    /// Refuse requests without a digest of an accepted algorithm.
    pub required: bool,
    /// The algorithms verified; digests of others are ignored.
    pub algorithms: Vec<DigestAlgorithm>,
}

/// Stage 6: verifies the request's signature and `Content-Digest` per the route's policies.
pub struct IntegrityStage {
    signature: Option<SignaturePolicy>,
    digest: Option<DigestPolicy>,
    /// Body bytes the gateway buffers for the route: a longer body cannot be digested.
    body_limit: usize,
    runtime: Arc<IntegrityRuntime>,
    /// Sent with refusals that a better signature would fix.
    accept_signature: Option<HeaderValue>,
}

impl IntegrityStage {
    pub fn new(
        signature: Option<SignaturePolicy>,
        digest: Option<DigestPolicy>,
        body_limit: usize,
        runtime: Arc<IntegrityRuntime>,
    ) -> Self {
        let accept_signature = signature.as_ref().and_then(accept_signature);
        IntegrityStage {
            signature,
            digest,
            body_limit,
            runtime,
            accept_signature,
        }
    }

    fn refuse(
        &self,
        request: &RequestView<'_>,
        ctx: &mut RequestContext,
        failure: Failure,
        keyid: Option<&str>,
    ) -> Outcome {
        self.runtime
            .metrics
            .failures
            .with_label_values(&[request.route, failure.as_str()])
            .inc();
        let status = failure.status();
        if status == 401 {
            let challenge = match failure {
                Failure::SignatureMissing => "Signature realm=\"apiguard\"".to_owned(),
                _ => format!(
                    "Signature realm=\"apiguard\", error=\"invalid_signature\", error_description=\"{}\"",
                    failure.description()
                ),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                ctx.response_headers.append(header::WWW_AUTHENTICATE, value);
            }
        }
        if matches!(
            failure,
            Failure::SignatureMissing | Failure::UncoveredComponent
        ) && let Some(value) = &self.accept_signature
        {
            ctx.response_headers
                .insert(HEADER_ACCEPT_SIGNATURE, value.clone());
        }
        ctx.problem_detail = Some(failure.description());
        let evidence = match keyid {
            Some(keyid) => format!("{} (keyid {keyid})", failure.as_str()),
            None => failure.as_str().to_owned(),
        };
        Outcome::Block {
            status,
            finding: Finding {
                rule_id: failure.rule_id().into(),
                class: "integrity".into(),
                severity: Severity::Warning,
                score: Severity::Warning.score(),
                target: if failure.is_digest() {
                    "header:content-digest".into()
                } else {
                    "header:signature".into()
                },
                evidence: evidence.chars().take(200).collect(),
            },
        }
    }

    /// Checks `Content-Digest` against the body. `required`: a digest must be there (the
    /// route says so, or the signature covers it).
    fn check_digest(&self, request: &RequestView<'_>, required: bool) -> Result<(), Failure> {
        let accepted: &[DigestAlgorithm] = self
            .digest
            .as_ref()
            .map_or(&DigestAlgorithm::ALL, |d| &d.algorithms);
        let present = request.headers.contains_key(HEADER_CONTENT_DIGEST);
        if !present {
            return if required {
                Err(Failure::DigestMissing)
            } else {
                Ok(())
            };
        }
        let body: &[u8] = match request.body {
            // The proxy reads one frame past the limit to tell a longer body apart.
            Some(body) if body.len() > self.body_limit => return Err(Failure::BodyTooLarge),
            Some(body) => body,
            None if declares_body(request.headers) => {
                return if required {
                    Err(Failure::BodyUnavailable)
                } else {
                    Ok(())
                };
            }
            None => &[],
        };
        let lines = request
            .headers
            .get_all(HEADER_CONTENT_DIGEST)
            .iter()
            .map(|v| v.as_bytes());
        match digest::verify(lines, body, accepted) {
            Ok(true) => Ok(()),
            Ok(false) if required => Err(Failure::DigestMissing),
            Ok(false) => Ok(()),
            Err(DigestError::Missing) => Err(Failure::DigestMissing),
            Err(DigestError::Malformed) => Err(Failure::DigestMalformed),
            Err(DigestError::Mismatch(algorithm)) => Err(Failure::DigestMismatch(algorithm)),
        }
    }
}

/// Whether the request head announces a body.
fn declares_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// `Accept-Signature` (RFC 9421 section 5.1): the components a signature must cover on this
/// route, asking for `created` (and the route's `tag`).
fn accept_signature(policy: &SignaturePolicy) -> Option<HeaderValue> {
    let mut serializer = sfv::DictSerializer::new();
    let label = sfv::KeyRef::from_str(policy.label.as_deref().unwrap_or("sig1")).ok()?;
    {
        let mut list = serializer.inner_list(label);
        for component in &policy.components {
            let _ = list.bare_item(sfv::StringRef::from_str(component).ok()?);
        }
        let mut params = list
            .finish()
            .parameter(sfv::KeyRef::from_str("created").ok()?, true);
        if let Some(tag) = &policy.tag {
            params = params.parameter(
                sfv::KeyRef::from_str("tag").ok()?,
                sfv::StringRef::from_str(tag).ok()?,
            );
        }
        let _ = params;
    }
    HeaderValue::from_str(&serializer.finish()?).ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Stage for IntegrityStage {
    fn name(&self) -> &'static str {
        "integrity"
    }

    /// The body is needed for `Content-Digest`, which a signature covering it also checks.
    fn needs_body(&self) -> bool {
        true
    }

    /// A forged or tampered request is refused whatever the detection mode.
    fn enforced_in_detect_only(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        let mut verified = None;
        if let Some(policy) = &self.signature {
            match policy.verify(request, unix_now(), Instant::now(), &self.runtime.replay) {
                Ok(found) => verified = found,
                Err(failure) => return self.refuse(request, ctx, failure, None),
            }
        }
        let covers_digest = verified.as_ref().is_some_and(|v| v.covers_digest);
        if self.digest.is_some() || covers_digest {
            let required = covers_digest || self.digest.as_ref().is_some_and(|d| d.required);
            if let Err(failure) = self.check_digest(request, required) {
                let keyid = verified.as_ref().map(|v| v.key.keyid.as_str());
                return self.refuse(request, ctx, failure, keyid);
            }
        }
        if let Some(verified) = verified {
            self.runtime
                .metrics
                .verified
                .with_label_values(&[request.route, verified.key.material.algorithm()])
                .inc();
            if ctx.identity.is_none() {
                let mut claims = verified.key.attributes.clone();
                claims.insert("keyid".into(), Value::from(verified.key.keyid.as_str()));
                claims.insert("signature_label".into(), Value::from(verified.label));
                ctx.identity = Some(Identity {
                    subject: verified.key.subject.clone(),
                    method: AuthMethod::Signature,
                    claims,
                });
            }
        }
        Outcome::Continue
    }
}

/// Decodes standard base64 (padding optional, surrounding whitespace ignored).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let padded = match compact.len() % 4 {
        2 => format!("{compact}=="),
        3 => format!("{compact}="),
        _ => compact,
    };
    STANDARD
        .decode(padded.as_bytes())
        .map_err(|e| format!("not base64: {e}"))
}

/// An Ed25519 public key from a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo), from base64 of
/// its DER form, or from base64 of the 32 raw key bytes.
pub fn ed25519_public_key(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text)
            .map_err(|e| format!("not an Ed25519 public key in PEM form: {e}"));
    }
    let bytes = decode_base64(text)?;
    // The body of a PEM block alone (base64 of the DER SubjectPublicKeyInfo, 44 bytes).
    if bytes.len() != 32
        && let Ok(key) = VerifyingKey::from_public_key_der(&bytes)
    {
        return Ok(key);
    }
    let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "an Ed25519 public key is 32 bytes, not {} (give base64 of the raw key or of its DER form, or a PEM file)",
            bytes.len()
        )
    })?;
    VerifyingKey::from_bytes(&raw).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// Whether `text` can be a signature label (a structured-field dictionary key).
pub fn is_valid_label(text: &str) -> bool {
    sfv::KeyRef::from_str(text).is_ok()
}

/// The shortest HMAC-SHA256 secret accepted.
pub const MIN_HMAC_SECRET: usize = 32;

#[cfg(test)]
mod tests;
