//! Bearer JSON Web Tokens: signature (RS, PS, ES, EdDSA with keys from a JWKS URL or a PEM
//! file; HS with a shared secret), `exp` and `nbf` with a clock-skew leeway, `iss` and `aud`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiguard_model::{AuthMethod, Identity};
use http::{HeaderMap, HeaderName};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde_json::{Map, Value};

use super::Failure;
use super::jwks::{JwksSource, KeySet, Lookup};

/// Accepted when a provider lists no algorithms: every asymmetric one. HS algorithms must be
/// listed explicitly, and need a shared secret.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Parses an algorithm name as JOSE writes it (`RS256`, `ES256`, `EdDSA`, `HS256`, ...).
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(name).map_err(|_| {
        format!(
            "`{name}` is not a supported JWT algorithm (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
        )
    })
}

/// Where a provider's verification keys come from.
pub enum KeySource {
    /// A JWKS URL, fetched and refreshed in the background.
    Jwks(Arc<JwksSource>),
    /// Keys fixed by the configuration (a PEM public key or an HS secret).
    Static(Arc<KeySet>),
}

/// A JWT provider's compiled settings.
pub struct JwtSettings {
    /// The provider's name in the configuration (metrics, findings).
    pub name: String,
    /// Accepted `iss` values; empty: any issuer.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty: the audience is not checked.
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The header carrying the token; `authorization` expects the `Bearer` scheme.
    pub header: HeaderName,
    /// The claim that names the subject (`sub` by default).
    pub subject_claim: String,
    pub keys: KeySource,
}

pub struct JwtProvider {
    pub settings: JwtSettings,
    /// One per key family: jsonwebtoken wants every algorithm of a validation to fit the key.
    validations: Vec<(AlgorithmFamily, Validation)>,
    cache: TokenCache,
}

impl JwtProvider {
    pub fn new(settings: JwtSettings) -> Self {
        let mut validations: Vec<(AlgorithmFamily, Validation)> = Vec::new();
        for algorithm in &settings.algorithms {
            let family = algorithm.family();
            if let Some((_, validation)) = validations.iter_mut().find(|(f, _)| *f == family) {
                validation.algorithms.push(*algorithm);
                continue;
            }
            let mut validation = Validation::new(*algorithm);
            validation.leeway = settings.leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            let mut required: HashSet<String> = HashSet::from(["exp".to_owned()]);
            if settings.issuers.is_empty() {
                validation.iss = None;
            } else {
                validation.set_issuer(&settings.issuers);
                required.insert("iss".into());
            }
            if settings.audiences.is_empty() {
                validation.validate_aud = false;
            } else {
                validation.set_audience(&settings.audiences);
                required.insert("aud".into());
            }
            validation.required_spec_claims = required;
            validations.push((family, validation));
        }
        JwtProvider {
            settings,
            validations,
            cache: TokenCache::new(),
        }
    }

    /// The token the request carries for this provider, if any. With the `authorization`
    /// header only the `Bearer` scheme counts (a `Basic` credential is not a token); another
    /// header carries the token alone or after `Bearer `.
    pub fn token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let value = headers.get(&self.settings.header)?;
        let Ok(text) = value.to_str() else {
            // Not visible ASCII: certainly not a JWT, but a credential all the same.
            return Some("");
        };
        let text = text.trim();
        let bearer = text
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| text[7..].trim_start());
        if self.settings.header == http::header::AUTHORIZATION {
            bearer.or_else(|| text.eq_ignore_ascii_case("bearer").then_some(""))
        } else {
            Some(bearer.unwrap_or(text))
        }
    }

    /// Whether this provider takes the token, judged by its (unverified) `iss` claim: used to
    /// pick among several JWT providers on one route. A provider with no issuers takes any.
    pub fn takes_issuer_of(&self, token: &str) -> bool {
        if self.settings.issuers.is_empty() {
            return true;
        }
        #[derive(serde::Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        match jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token) {
            Ok(Iss { iss: Some(iss) }) => self.settings.issuers.contains(&iss),
            // Not decodable: let this provider refuse it as malformed.
            Err(_) => true,
            Ok(Iss { iss: None }) => false,
        }
    }

    /// The key set tokens are verified with now.
    fn current_keys(&self) -> Result<Arc<KeySet>, Failure> {
        match &self.settings.keys {
            KeySource::Jwks(source) => {
                let keys = source.keys();
                if keys.loaded {
                    Ok(keys)
                } else {
                    Err(Failure::KeysUnavailable)
                }
            }
            KeySource::Static(keys) => Ok(keys.clone()),
        }
    }

    /// Verifies the token: algorithm, key, signature, then the claims. A token verified
    /// before with the same key set only has its times checked again (see [`TokenCache`]).
    pub fn verify(&self, token: &str) -> Result<Identity, Failure> {
        if token.is_empty() {
            return Err(Failure::Malformed);
        }
        let keys = self.current_keys()?;
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.settings.leeway.as_secs();
        if let Some(identity) = self.cache.get(token, &keys, now, leeway) {
            return Ok(identity);
        }
        let identity = self.verify_with(token, &keys)?;
        self.cache.put(token, &keys, &identity, now, leeway);
        Ok(identity)
    }

    /// [`JwtProvider::verify`] without the cache: every check, every time.
    pub fn verify_uncached(&self, token: &str) -> Result<Identity, Failure> {
        if token.is_empty() {
            return Err(Failure::Malformed);
        }
        let keys = self.current_keys()?;
        self.verify_with(token, &keys)
    }

    fn verify_with(&self, token: &str, keys: &KeySet) -> Result<Identity, Failure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::Malformed)?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(Failure::Algorithm);
        }
        let key = match keys.find(header.kid.as_deref(), header.alg) {
            Lookup::Found(key) => key,
            Lookup::WrongAlgorithm => return Err(Failure::Algorithm),
            Lookup::NotFound => {
                if let KeySource::Jwks(source) = &self.settings.keys {
                    source.request_refresh();
                }
                return Err(Failure::UnknownKey);
            }
        };
        let family = header.alg.family();
        let validation = self
            .validations
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, v)| v)
            .ok_or(Failure::Algorithm)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| failure_of(e.kind()))?;
        let subject = data
            .claims
            .get(&self.settings.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(Failure::Claims)?
            .to_owned();
        Ok(Identity {
            subject,
            method: AuthMethod::Jwt,
            claims: data.claims,
        })
    }
}

/// Tokens already verified: a client sends the same token with many requests, and a
/// signature check costs tens to hundreds of microseconds. An entry is found by the token's
/// whole text (hashed with a per-process random key, then compared in full: no two tokens
/// share an entry), is only used with the very key set it was verified with (a JWKS refresh
/// that changes nothing keeps the set; any new set misses), and has `exp`/`nbf` checked again
/// on every use. Bounded: `SHARDS` × `PER_SHARD` tokens per provider, each at most
/// `MAX_TOKEN_BYTES`; failures are never cached.
pub struct TokenCache {
    shards: Vec<Mutex<HashMap<Box<str>, Cached>>>,
}

struct Cached {
    keys: Arc<KeySet>,
    identity: Identity,
    exp: u64,
    nbf: Option<u64>,
}

impl TokenCache {
    const SHARDS: usize = 16;
    const PER_SHARD: usize = 256;
    /// Longer tokens are verified every time rather than kept.
    const MAX_TOKEN_BYTES: usize = 8 * 1024;

    fn new() -> Self {
        TokenCache {
            shards: (0..Self::SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, token: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Cached>> {
        // The token's last characters are its signature's: spread well, and free to read.
        let last = token.as_bytes().last().copied().unwrap_or(0);
        let index = (usize::from(last) + token.len()) % Self::SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, token: &str, keys: &Arc<KeySet>, now: u64, leeway: u64) -> Option<Identity> {
        let shard = self.shard(token);
        let cached = shard.get(token)?;
        let current = Arc::ptr_eq(&cached.keys, keys)
            && cached.exp.saturating_add(leeway) >= now
            && cached
                .nbf
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway));
        current.then(|| cached.identity.clone())
    }

    fn put(&self, token: &str, keys: &Arc<KeySet>, identity: &Identity, now: u64, leeway: u64) {
        if token.len() > Self::MAX_TOKEN_BYTES {
            return;
        }
        let time = |claim: &str| {
            identity
                .claims
                .get(claim)
                .and_then(Value::as_f64)
                .map(|t| t.max(0.0) as u64)
        };
        let Some(exp) = time("exp") else {
            return;
        };
        let mut shard = self.shard(token);
        if shard.len() >= Self::PER_SHARD && !shard.contains_key(token) {
            shard.retain(|_, c| c.exp.saturating_add(leeway) >= now);
            if shard.len() >= Self::PER_SHARD
                && let Some(victim) = shard.keys().next().cloned()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(
            token.into(),
            Cached {
                keys: keys.clone(),
                identity: identity.clone(),
                exp,
                nbf: time("nbf"),
            },
        );
    }
}

fn failure_of(kind: &ErrorKind) -> Failure {
    match kind {
        ErrorKind::ExpiredSignature => Failure::Expired,
        ErrorKind::ImmatureSignature => Failure::NotYetValid,
        ErrorKind::InvalidSignature => Failure::BadSignature,
        ErrorKind::InvalidAudience => Failure::WrongAudience,
        ErrorKind::InvalidIssuer => Failure::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "aud" => Failure::WrongAudience,
            "iss" => Failure::WrongIssuer,
            _ => Failure::Claims,
        },
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => Failure::Claims,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => Failure::Algorithm,
        // A key that does not fit the algorithm, or a signature of the wrong length.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => Failure::BadSignature,
        _ => Failure::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: u64, nbf: Option<u64>) -> Identity {
        let mut claims = Map::new();
        claims.insert("exp".into(), exp.into());
        if let Some(nbf) = nbf {
            claims.insert("nbf".into(), nbf.into());
        }
        Identity {
            subject: "alice".into(),
            method: AuthMethod::Jwt,
            claims,
        }
    }

    #[test]
    fn cached_tokens_keep_their_times_and_their_key_set() {
        let cache = TokenCache::new();
        let keys = Arc::new(KeySet::single(jsonwebtoken::DecodingKey::from_secret(b"k")));
        let token = "header.claims.signature";
        cache.put(token, &keys, &identity(1_000, Some(500)), 600, 30);
        assert!(cache.get(token, &keys, 600, 30).is_some());
        assert!(
            cache.get(token, &keys, 1_030, 30).is_some(),
            "within the leeway"
        );
        assert!(cache.get(token, &keys, 1_031, 30).is_none(), "expired");
        assert!(cache.get(token, &keys, 469, 30).is_none(), "not valid yet");
        let rotated = Arc::new(KeySet::single(jsonwebtoken::DecodingKey::from_secret(b"k")));
        assert!(
            cache.get(token, &rotated, 600, 30).is_none(),
            "another key set never uses an entry made with the old one"
        );
        assert!(
            cache
                .get("header.claims.signaturf", &keys, 600, 30)
                .is_none(),
            "another token, even one that differs in its last character"
        );
        assert!(
            cache
                .get("header.claims.signatur", &keys, 600, 30)
                .is_none()
        );
        let long = "x".repeat(TokenCache::MAX_TOKEN_BYTES + 1);
        cache.put(&long, &keys, &identity(1_000, None), 600, 30);
        assert!(
            cache.get(&long, &keys, 600, 30).is_none(),
            "too long to keep"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::new();
        let keys = Arc::new(KeySet::single(jsonwebtoken::DecodingKey::from_secret(b"k")));
        for i in 0..10_000u32 {
            cache.put(
                &format!("token-{i}"),
                &keys,
                &identity(1_000, None),
                600,
                30,
            );
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(
            total <= TokenCache::SHARDS * TokenCache::PER_SHARD,
            "{total}"
        );
    }
}
