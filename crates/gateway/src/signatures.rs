//! Turns `signatures:` (keys by key id) and each route's `integrity:` into integrity stages
//! (crates/policy): HTTP message signatures and `Content-Digest`. Keys are read and checked
//! here, once per configuration; every problem is collected with its position.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use apiguard_policy::integrity::base::is_supported_derived;
use apiguard_policy::integrity::{
    DigestAlgorithm, DigestPolicy, IntegrityRuntime, IntegrityStage, KeyMaterial, MIN_HMAC_SECRET,
    SignatureKey, SignaturePolicy, decode_base64, ed25519_public_key, is_valid_label,
};
use serde_json::Value;

use crate::config::{
    Config, RouteIntegrityConfig, SignatureAlgorithmConfig, SignatureKeyConfig, Spanned,
};
use crate::load::Problem;

/// A route's integrity policies, before the body limit (known per route) makes a stage.
pub struct RouteIntegrity {
    signature: Option<SignaturePolicy>,
    digest: Option<DigestPolicy>,
}

impl RouteIntegrity {
    /// The stage, for a route that buffers `body_limit` body bytes.
    pub fn stage(self, body_limit: usize, runtime: Arc<IntegrityRuntime>) -> Arc<IntegrityStage> {
        Arc::new(IntegrityStage::new(
            self.signature,
            self.digest,
            body_limit,
            runtime,
        ))
    }
}

fn read_file(file: &Spanned<String>, what: &str, problems: &mut Vec<Problem>) -> Option<Vec<u8>> {
    std::fs::read(&file.value)
        .map_err(|e| {
            problems.push(Problem::at(
                file,
                format!("cannot read {what} `{}`: {e}", file.value),
            ))
        })
        .ok()
}

fn compile_key(
    keyid: &str,
    config: &SignatureKeyConfig,
    problems: &mut Vec<Problem>,
) -> Option<SignatureKey> {
    let at = format!("signatures.keys.{keyid}");
    let general = |message: String| Problem::general(format!("{at}: {message}"));
    let material = match config.algorithm {
        SignatureAlgorithmConfig::Ed25519 => {
            if config.secret.is_some() || config.secret_file.is_some() {
                problems.push(general(
                    "an ed25519 key takes `public_key` or `public_key_file`, not a secret".into(),
                ));
                return None;
            }
            let text = match (&config.public_key, &config.public_key_file) {
                (Some(inline), None) => inline.clone(),
                (None, Some(file)) => {
                    let bytes = read_file(file, "the public key file", problems)?;
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                _ => {
                    problems.push(general(
                        "give exactly one of `public_key` and `public_key_file`".into(),
                    ));
                    return None;
                }
            };
            match ed25519_public_key(&text) {
                Ok(key) => KeyMaterial::Ed25519(key),
                Err(e) => {
                    let problem = match &config.public_key_file {
                        Some(file) => Problem::at(file, format!("{at}: {e}")),
                        None => general(e),
                    };
                    problems.push(problem);
                    return None;
                }
            }
        }
        SignatureAlgorithmConfig::HmacSha256 => {
            if config.public_key.is_some() || config.public_key_file.is_some() {
                problems.push(general(
                    "an hmac-sha256 key takes `secret` or `secret_file`, not a public key".into(),
                ));
                return None;
            }
            let secret = match (&config.secret, &config.secret_file) {
                (Some(inline), None) => match decode_base64(inline) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        problems.push(general(format!("secret: {e}")));
                        return None;
                    }
                },
                (None, Some(file)) => {
                    let mut bytes = read_file(file, "the secret file", problems)?;
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                }
                _ => {
                    problems.push(general(
                        "give exactly one of `secret` and `secret_file`".into(),
                    ));
                    return None;
                }
            };
            if secret.len() < MIN_HMAC_SECRET {
                problems.push(general(format!(
                    "the HMAC secret must be at least {MIN_HMAC_SECRET} bytes, not {}",
                    secret.len()
                )));
                return None;
            }
            KeyMaterial::HmacSha256(secret)
        }
    };
    Some(SignatureKey {
        keyid: keyid.to_owned(),
        material,
        subject: config.subject.clone().unwrap_or_else(|| keyid.to_owned()),
        attributes: config
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    })
}

/// A component the configuration may require: a supported derived component or a
/// lower-case header name.
fn valid_component(name: &str) -> bool {
    if name.starts_with('@') {
        return is_supported_derived(name);
    }
    !name.is_empty()
        && !name.bytes().any(|b| b.is_ascii_uppercase())
        && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

fn compile_route(
    config: &Config,
    route_id: &Spanned<String>,
    integrity: &RouteIntegrityConfig,
    keys: &BTreeMap<String, Arc<SignatureKey>>,
    problems: &mut Vec<Problem>,
) -> Option<RouteIntegrity> {
    let before = problems.len();
    let at = |message: String| {
        Problem::at(
            route_id,
            format!("route `{}`: integrity: {message}", route_id.value),
        )
    };
    let mut signature = None;
    if let Some(sig) = &integrity.signature {
        if config.signatures.keys.is_empty() {
            problems.push(at(
                "signature is on but `signatures.keys` defines no key".into()
            ));
        }
        let mut accepted: HashMap<String, Arc<SignatureKey>> = HashMap::new();
        let mut seen = HashSet::new();
        for keyid in &sig.keys {
            if !seen.insert(keyid.value.as_str()) {
                problems.push(Problem::at(
                    keyid,
                    format!(
                        "route `{}`: key `{}` is listed twice",
                        route_id.value, keyid.value
                    ),
                ));
            } else if !config.signatures.keys.contains_key(&keyid.value) {
                let known: Vec<&str> = config.signatures.keys.keys().map(String::as_str).collect();
                problems.push(Problem::at(
                    keyid,
                    format!(
                        "route `{}` names signature key `{}`, which is not defined (defined: {})",
                        route_id.value,
                        keyid.value,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            } else if let Some(key) = keys.get(&keyid.value) {
                accepted.insert(keyid.value.clone(), key.clone());
            }
        }
        if sig.keys.is_empty() {
            accepted = keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        let mut components = Vec::new();
        for component in &sig.components {
            if !valid_component(component) {
                problems.push(at(format!(
                    "`{component}` is not a component this gateway can verify (derived: @method, @target-uri, @authority, @scheme, @request-target, @path, @query; or a lower-case header name)"
                )));
            } else if components.contains(component) {
                problems.push(at(format!("component `{component}` is listed twice")));
            } else {
                components.push(component.clone());
            }
        }
        if sig.clock_skew.0.subsec_nanos() != 0 || sig.max_age.0.subsec_nanos() != 0 {
            problems.push(at("max_age and clock_skew must be whole seconds".into()));
        }
        if sig.max_age.0.is_zero() || sig.max_age.0 > Duration::from_secs(24 * 3600) {
            problems.push(at("max_age must be longer than 0 and at most 24h".into()));
        }
        if sig.clock_skew.0 > Duration::from_secs(3600) {
            problems.push(at("clock_skew must be at most 1h".into()));
        }
        for (what, value) in [("label", &sig.label), ("tag", &sig.tag)] {
            if let Some(value) = value
                && (value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)))
            {
                problems.push(at(format!("{what} `{value}` must be printable ASCII")));
            }
        }
        if let Some(label) = &sig.label
            && !is_valid_label(label)
        {
            problems.push(at(format!(
                "label `{label}` is not a structured-field key (lower case letters, digits, `_`, `-`, `.`, `*`)"
            )));
        }
        signature = Some(SignaturePolicy {
            keys: accepted,
            required: sig.required,
            components,
            max_age: sig.max_age.0,
            clock_skew: sig.clock_skew.0,
            label: sig.label.clone(),
            tag: sig.tag.clone(),
        });
    }
    let mut digest = None;
    if let Some(config) = &integrity.content_digest {
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            match DigestAlgorithm::parse(name) {
                Some(algorithm) if !algorithms.contains(&algorithm) => algorithms.push(algorithm),
                Some(_) => problems.push(at(format!("digest algorithm `{name}` is listed twice"))),
                None => problems.push(at(format!(
                    "`{name}` is not a digest algorithm the gateway verifies (sha-256, sha-512)"
                ))),
            }
        }
        if config.algorithms.is_empty() {
            problems.push(at("content_digest.algorithms is empty".into()));
        }
        digest = Some(DigestPolicy {
            required: config.required,
            algorithms,
        });
    }
    if problems.len() > before || (signature.is_none() && digest.is_none()) {
        return None;
    }
    Some(RouteIntegrity { signature, digest })
}

/// Checks `signatures:` and the routes' `integrity:`; returns each route's policies, in
/// route order (`None`: no integrity checks).
pub fn compile_integrity(
    config: &Config,
    problems: &mut Vec<Problem>,
) -> Vec<Option<RouteIntegrity>> {
    let mut keys = BTreeMap::new();
    for (keyid, key) in &config.signatures.keys {
        if keyid.is_empty() || keyid.len() > 256 {
            problems.push(Problem::general(format!(
                "signatures.keys: key id `{keyid}` must be 1 to 256 characters"
            )));
            continue;
        }
        if let Some(compiled) = compile_key(keyid, key, problems) {
            keys.insert(keyid.clone(), Arc::new(compiled));
        }
    }
    if config.signatures.replay_cache_size == 0 {
        problems.push(Problem::general(
            "signatures.replay_cache_size must be at least 1",
        ));
    }
    config
        .routes
        .iter()
        .map(|route| {
            let integrity = route.integrity.as_ref()?;
            compile_route(config, &route.id, integrity, &keys, problems)
        })
        .collect()
}
