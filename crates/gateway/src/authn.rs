//! Turns `auth:` (providers, continuous verification) and each route's `auth:` into
//! authentication stages (crates/policy). Every problem is collected with its position. Without
//! a runtime (`apiguard validate`) nothing is started: the settings are only checked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use apiguard_policy::authn::{
    Algorithm, AlgorithmFamily, ApiKey, ApiKeyProvider, ContextAction, ContinuousSettings,
    DEFAULT_ALGORITHMS, DecodingKey, IpDatabase, JwksSettings, JwtProvider, JwtSettings, KeySet,
    KeySource, MtlsProvider, Provider, parse_algorithm, parse_sha256_hex,
};
use apiguard_policy::{AuthnRuntime, AuthnStage};
use http::HeaderName;

use crate::config::{
    ApiKeysConfig, AuthProviderConfig, Config, ContextActionConfig, ContinuousConfig, JwtConfig,
    Spanned,
};
use crate::load::Problem;

/// Authentication, compiled.
pub struct CompiledAuth {
    /// Each route's stage, in route order (`None`: no authentication).
    pub routes: Vec<Option<Arc<AuthnStage>>>,
    /// `auth.continuous`, resolved.
    pub continuous: Option<ContinuousSettings>,
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

fn header_name(text: &str, at: &str, problems: &mut Vec<Problem>) -> Option<HeaderName> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| {
            problems.push(Problem::general(format!(
                "{at}: `{text}` is not a valid header name"
            )))
        })
        .ok()
}

/// Checks a JWT provider and, with a runtime, builds it (starting its JWKS fetch).
fn compile_jwt(
    name: &str,
    config: &JwtConfig,
    runtime: Option<&AuthnRuntime>,
    problems: &mut Vec<Problem>,
) -> Option<Provider> {
    let at = format!("auth.providers.{name}.jwt");
    let before = problems.len();
    let sources = [
        config.jwks.is_some(),
        config.public_key_file.is_some(),
        config.secret.is_some(),
        config.secret_file.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        problems.push(Problem::general(format!(
            "{at}: give exactly one key source: `jwks`, `public_key_file`, `secret` or `secret_file`"
        )));
        return None;
    }
    let mut algorithms = Vec::new();
    for algorithm in &config.algorithms {
        match parse_algorithm(&algorithm.value) {
            Ok(a) => algorithms.push(a),
            Err(e) => problems.push(Problem::at(algorithm, format!("{at}: {e}"))),
        }
    }
    let symmetric = config.secret.is_some() || config.secret_file.is_some();
    if algorithms.is_empty() {
        algorithms = if symmetric {
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        } else {
            DEFAULT_ALGORITHMS.to_vec()
        };
    }
    let hs = algorithms
        .iter()
        .filter(|a| a.family() == AlgorithmFamily::Hmac)
        .count();
    if symmetric && hs != algorithms.len() {
        problems.push(Problem::general(format!(
            "{at}: a shared secret only verifies HS256, HS384 and HS512; list only those in `algorithms`"
        )));
    }
    if !symmetric && hs > 0 {
        problems.push(Problem::general(format!(
            "{at}: HS algorithms need `secret` or `secret_file` (they would let anyone holding a public key sign tokens)"
        )));
    }
    if config.clock_skew.0.subsec_nanos() != 0 {
        problems.push(Problem::general(format!(
            "{at}: clock_skew must be whole seconds"
        )));
    }
    if config.subject_claim.is_empty() {
        problems.push(Problem::general(format!("{at}: subject_claim is empty")));
    }
    let header = header_name(&config.header, &at, problems);
    let mut static_key = None;
    if let Some(file) = &config.public_key_file
        && let Some(pem) = read_file(file, "the public key file", problems)
    {
        let key = DecodingKey::from_rsa_pem(&pem)
            .or_else(|_| DecodingKey::from_ec_pem(&pem))
            .or_else(|_| DecodingKey::from_ed_pem(&pem));
        match key {
            Ok(key) => {
                let family = key.family();
                if config.algorithms.is_empty() {
                    algorithms.retain(|a| a.family() == family);
                } else if algorithms.iter().any(|a| a.family() != family) {
                    problems.push(Problem::at(
                        file,
                        format!(
                            "{at}: the key in `{}` cannot verify every algorithm listed",
                            file.value
                        ),
                    ));
                }
                static_key = Some(key);
            }
            Err(_) => problems.push(Problem::at(
                file,
                format!(
                    "{at}: `{}` holds no RSA, EC or Ed25519 public key in PEM form",
                    file.value
                ),
            )),
        }
    }
    let secret = match (&config.secret, &config.secret_file) {
        (Some(secret), _) => Some(secret.clone().into_bytes()),
        (_, Some(file)) => read_file(file, "the secret file", problems).map(|mut bytes| {
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }),
        _ => None,
    };
    if secret.as_ref().is_some_and(|s| s.len() < 32) {
        problems.push(Problem::general(format!(
            "{at}: the shared secret must be at least 32 bytes"
        )));
    }
    let mut jwks_settings = None;
    if let Some(jwks) = &config.jwks {
        let url = &jwks.url;
        let valid = url
            .value
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if valid.is_none() {
            problems.push(Problem::at(
                url,
                format!(
                    "{at}: jwks.url `{}` must be an http:// or https:// URL",
                    url.value
                ),
            ));
        }
        if jwks.refresh_interval.0 < std::time::Duration::from_secs(1) {
            problems.push(Problem::at(
                url,
                format!("{at}: jwks.refresh_interval must be at least 1s"),
            ));
        }
        if jwks.timeout.0.is_zero() {
            problems.push(Problem::at(
                url,
                format!("{at}: jwks.timeout must be longer than 0"),
            ));
        }
        let ca_pem = jwks
            .ca_file
            .as_ref()
            .and_then(|f| read_file(f, "the CA file", problems));
        jwks_settings = Some(JwksSettings {
            url: url.value.clone(),
            refresh: jwks.refresh_interval.0,
            min_refresh: jwks.min_refresh_interval.0,
            timeout: jwks.timeout.0,
            ca_pem,
        });
    }
    if problems.len() > before {
        return None;
    }
    let runtime = runtime?;
    let keys = match (jwks_settings, static_key, secret) {
        (Some(settings), _, _) => {
            let url = config.jwks.as_ref().map(|j| &j.url)?;
            match runtime.jwks(name, settings) {
                Ok(source) => KeySource::Jwks(source),
                Err(e) => {
                    problems.push(Problem::at(url, format!("{at}: jwks: {e}")));
                    return None;
                }
            }
        }
        (None, Some(key), _) => KeySource::Static(Arc::new(KeySet::single(key))),
        (None, None, Some(secret)) => {
            KeySource::Static(Arc::new(KeySet::single(DecodingKey::from_secret(&secret))))
        }
        (None, None, None) => return None,
    };
    Some(Provider::Jwt(JwtProvider::new(JwtSettings {
        name: name.to_owned(),
        issuers: config.issuers.clone(),
        audiences: config.audiences.clone(),
        algorithms,
        leeway: config.clock_skew.0,
        header: header?,
        subject_claim: config.subject_claim.clone(),
        keys,
    })))
}

fn compile_api_keys(
    name: &str,
    config: &ApiKeysConfig,
    problems: &mut Vec<Problem>,
) -> Option<Provider> {
    let at = format!("auth.providers.{name}.api_keys");
    let before = problems.len();
    let header = header_name(&config.header, &at, problems);
    if config.keys.is_empty() {
        problems.push(Problem::general(format!("{at}: `keys` is empty")));
    }
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    let mut keys = Vec::new();
    for key in &config.keys {
        if key.name.value.is_empty() || !names.insert(key.name.value.as_str()) {
            problems.push(Problem::at(
                &key.name,
                format!("{at}: key name `{}` is empty or used twice", key.name.value),
            ));
        }
        match parse_sha256_hex(&key.sha256.value) {
            Ok(digest) => {
                if !digests.insert(digest) {
                    problems.push(Problem::at(
                        &key.sha256,
                        format!(
                            "{at}: key `{}` has the same sha256 as another key",
                            key.name.value
                        ),
                    ));
                }
                keys.push(ApiKey {
                    name: key.name.value.clone(),
                    sha256: digest,
                    attributes: key
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                        .collect(),
                });
            }
            Err(e) => problems.push(Problem::at(
                &key.sha256,
                format!("{at}: key `{}`: {e}", key.name.value),
            )),
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Provider::ApiKeys(ApiKeyProvider::new(
        name.to_owned(),
        header?,
        keys,
    )))
}

fn action(config: ContextActionConfig) -> ContextAction {
    match config {
        ContextActionConfig::Allow => ContextAction::Allow,
        ContextActionConfig::Challenge => ContextAction::Challenge,
        ContextActionConfig::Revoke => ContextAction::Revoke,
    }
}

fn compile_continuous(
    config: &ContinuousConfig,
    problems: &mut Vec<Problem>,
) -> Option<ContinuousSettings> {
    let before = problems.len();
    let ip_database = config.ip_database.as_ref().and_then(|file| {
        let text = read_file(file, "the IP database", problems)?;
        let text = String::from_utf8_lossy(&text);
        IpDatabase::parse(&text)
            .map(Arc::new)
            .map_err(|e| {
                problems.push(Problem::at(
                    file,
                    format!("auth.continuous.ip_database `{}`: {e}", file.value),
                ))
            })
            .ok()
    });
    if config.network_prefix_v4 > 32 || config.network_prefix_v6 > 128 {
        problems.push(Problem::general(
            "auth.continuous: network_prefix_v4 is 0 to 32 and network_prefix_v6 is 0 to 128",
        ));
    }
    if config.risk_half_life.0.is_zero() || config.idle_timeout.0.is_zero() {
        problems.push(Problem::general(
            "auth.continuous: risk_half_life and idle_timeout must be longer than 0",
        ));
    }
    if config.max_credentials == 0 {
        problems.push(Problem::general(
            "auth.continuous: max_credentials must be at least 1",
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(ContinuousSettings {
        ip_database,
        prefix_v4: config.network_prefix_v4,
        prefix_v6: config.network_prefix_v6,
        on_new_network: action(config.on_new_network),
        on_new_country: action(config.on_new_country),
        risk_threshold: config.risk_threshold,
        risk_half_life: config.risk_half_life.0,
        on_risk: action(config.on_risk),
        revoke_for: config.revoke_for.0,
        idle_timeout: config.idle_timeout.0,
        max_credentials: config.max_credentials,
    })
}

/// Checks `auth:` and the routes' `auth:`; with a runtime, builds the stages.
pub fn compile_auth(
    config: &Config,
    runtime: Option<&AuthnRuntime>,
    problems: &mut Vec<Problem>,
) -> CompiledAuth {
    let mut providers: BTreeMap<&str, Arc<Provider>> = BTreeMap::new();
    let mtls_listener = config
        .listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
    for (name, provider) in &config.auth.providers {
        let compiled = match provider {
            AuthProviderConfig::Jwt(jwt) => compile_jwt(name, jwt, runtime, problems),
            AuthProviderConfig::ApiKeys(keys) => compile_api_keys(name, keys, problems),
            AuthProviderConfig::Mtls(mtls) => {
                if !mtls_listener {
                    problems.push(Problem::general(format!(
                        "auth.providers.{name}.mtls: no listener verifies client certificates (set `tls.client_ca` on one)"
                    )));
                }
                Some(Provider::Mtls(MtlsProvider {
                    name: name.clone(),
                    subjects: mtls.subjects.clone(),
                    sans: mtls.sans.clone(),
                }))
            }
        };
        if let Some(compiled) = compiled {
            providers.insert(name.as_str(), Arc::new(compiled));
        }
    }
    let continuous = config
        .auth
        .continuous
        .as_ref()
        .and_then(|c| compile_continuous(c, problems));
    let mut routes = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let Some(auth) = &route.auth else {
            routes.push(None);
            continue;
        };
        let mut stage_providers = Vec::new();
        if auth.providers.is_empty() {
            problems.push(Problem::at(
                &route.id,
                format!("route `{}`: auth.providers is empty", route.id.value),
            ));
        }
        let mut seen = HashSet::new();
        for name in &auth.providers {
            if !seen.insert(name.value.as_str()) {
                problems.push(Problem::at(
                    name,
                    format!(
                        "route `{}`: provider `{}` is listed twice",
                        route.id.value, name.value
                    ),
                ));
            }
            if !config.auth.providers.contains_key(&name.value) {
                let known: Vec<&str> = config.auth.providers.keys().map(String::as_str).collect();
                problems.push(Problem::at(
                    name,
                    format!(
                        "route `{}` names auth provider `{}`, which is not defined (defined: {})",
                        route.id.value,
                        name.value,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            } else if let Some(provider) = providers.get(name.value.as_str()) {
                stage_providers.push(provider.clone());
            }
        }
        let stage = runtime
            .filter(|_| {
                stage_providers.len() == auth.providers.len() && !stage_providers.is_empty()
            })
            .map(|runtime| {
                let continuous =
                    (auth.continuous && continuous.is_some()).then(|| runtime.continuous().clone());
                Arc::new(AuthnStage::new(
                    stage_providers,
                    auth.optional,
                    continuous,
                    runtime.metrics.clone(),
                ))
            });
        routes.push(stage);
    }
    CompiledAuth { routes, continuous }
}
