//! Authentication, stage 4 of the pipeline: who is calling, proved by a JSON Web Token
//! (verified with keys from a JWKS URL or with configured keys), an API key (configured as its
//! SHA-256) or a verified client certificate (mTLS). The proven [`Identity`] goes into
//! [`RequestContext::identity`] for the stages after it. [`Continuous`] verification then
//! challenges or revokes a credential used from a sharply different context.
//!
//! Nothing here does I/O on the request path: JWKS documents are fetched by a background task
//! that swaps the key set ([`JwksSource`]).

mod apikey;
mod continuous;
mod ipdb;
mod jwks;
mod jwt;
mod metrics;
mod mtls;

use std::sync::{Arc, Mutex, Weak};

use apiguard_model::{Finding, Identity, Outcome, RequestContext, RequestView, Severity, Stage};
use http::{HeaderValue, header};

pub use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

pub use apikey::{ApiKey, ApiKeyProvider, parse_sha256_hex};
pub use continuous::{ContextAction, Continuous, ContinuousSettings, credential_key};
pub use ipdb::IpDatabase;
pub use jwks::{JwksSettings, JwksSource, Key, KeySet, Lookup};
pub use jwt::{DEFAULT_ALGORITHMS, JwtProvider, JwtSettings, KeySource, parse_algorithm};
pub use metrics::AuthnMetrics;
pub use mtls::MtlsProvider;

/// The realm every challenge names.
pub const REALM: &str = "apiguard";

/// Why a request failed authentication. A bounded set: it is a metric label
/// (`apiguard_auth_failures_total{reason}`) and the finding's rule id (`authn.<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No credential any of the route's providers accepts.
    Missing,
    /// A credential that is not even well formed (not a JWT, not UTF-8, empty).
    Malformed,
    /// The token's `exp` is past (beyond the clock skew).
    Expired,
    /// The token's `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// The signature does not verify.
    BadSignature,
    /// The token's `aud` names none of the configured audiences (or is absent).
    WrongAudience,
    /// The token's `iss` is not a configured issuer (or is absent).
    WrongIssuer,
    /// The token names a key id (`kid`) the key set does not have.
    UnknownKey,
    /// The token's algorithm is not accepted, or does not fit its key.
    Algorithm,
    /// A claim is missing or of the wrong type (`exp`, the subject claim).
    Claims,
    /// The API key matches no configured key.
    UnknownApiKey,
    /// The client certificate is valid but not one the provider accepts.
    Certificate,
    /// Continuous verification revoked this credential.
    Revoked,
    /// The credential is used from another network than before.
    NewNetwork,
    /// The credential is used from another country than before.
    NewCountry,
    /// The credential's recent requests scored too high.
    Risk,
    /// No key set could be fetched yet from the JWKS URL.
    KeysUnavailable,
}

impl Failure {
    pub const ALL: [Failure; 17] = [
        Failure::Missing,
        Failure::Malformed,
        Failure::Expired,
        Failure::NotYetValid,
        Failure::BadSignature,
        Failure::WrongAudience,
        Failure::WrongIssuer,
        Failure::UnknownKey,
        Failure::Algorithm,
        Failure::Claims,
        Failure::UnknownApiKey,
        Failure::Certificate,
        Failure::Revoked,
        Failure::NewNetwork,
        Failure::NewCountry,
        Failure::Risk,
        Failure::KeysUnavailable,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::BadSignature => "bad_signature",
            Failure::WrongAudience => "wrong_audience",
            Failure::WrongIssuer => "wrong_issuer",
            Failure::UnknownKey => "unknown_key",
            Failure::Algorithm => "algorithm",
            Failure::Claims => "claims",
            Failure::UnknownApiKey => "unknown_api_key",
            Failure::Certificate => "certificate",
            Failure::Revoked => "revoked",
            Failure::NewNetwork => "new_network",
            Failure::NewCountry => "new_country",
            Failure::Risk => "risk",
            Failure::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The finding's rule id.
    pub fn rule_id(self) -> &'static str {
        match self {
            Failure::Missing => "authn.missing",
            Failure::Malformed => "authn.malformed",
            Failure::Expired => "authn.expired",
            Failure::NotYetValid => "authn.not_yet_valid",
            Failure::BadSignature => "authn.bad_signature",
            Failure::WrongAudience => "authn.wrong_audience",
            Failure::WrongIssuer => "authn.wrong_issuer",
            Failure::UnknownKey => "authn.unknown_key",
            Failure::Algorithm => "authn.algorithm",
            Failure::Claims => "authn.claims",
            Failure::UnknownApiKey => "authn.unknown_api_key",
            Failure::Certificate => "authn.certificate",
            Failure::Revoked => "authn.revoked",
            Failure::NewNetwork => "authn.new_network",
            Failure::NewCountry => "authn.new_country",
            Failure::Risk => "authn.risk",
            Failure::KeysUnavailable => "authn.keys_unavailable",
        }
    }

    /// What the client is told (in `WWW-Authenticate`'s `error_description`): enough to fix
    /// an honest mistake, nothing about keys or configuration.
    pub fn description(self) -> &'static str {
        match self {
            Failure::Missing => "credentials are required",
            Failure::Malformed => "the credential is malformed",
            Failure::Expired => "the token has expired",
            Failure::NotYetValid => "the token is not valid yet",
            Failure::BadSignature => "the token signature is invalid",
            Failure::WrongAudience => "the token is not meant for this audience",
            Failure::WrongIssuer => "the token issuer is not accepted",
            Failure::UnknownKey => "the token is signed with an unknown key",
            Failure::Algorithm => "the token algorithm is not accepted",
            Failure::Claims => "the token claims are invalid",
            Failure::UnknownApiKey => "the API key is not valid",
            Failure::Certificate => "the client certificate is not accepted",
            Failure::Revoked => "the credential has been revoked",
            Failure::NewNetwork => "the credential is used from a new network; authenticate again",
            Failure::NewCountry => "the credential is used from a new country; authenticate again",
            Failure::Risk => "the credential is under suspicion; authenticate again",
            Failure::KeysUnavailable => "the keys to verify the token are not available yet",
        }
    }

    /// The RFC 6750 / RFC 9470 error code of a bearer challenge.
    fn bearer_error(self) -> &'static str {
        match self {
            Failure::NewNetwork | Failure::NewCountry | Failure::Risk => {
                "insufficient_user_authentication"
            }
            Failure::Malformed => "invalid_request",
            _ => "invalid_token",
        }
    }

    /// 401, except when the gateway itself cannot verify anything yet (503).
    pub fn status(self) -> u16 {
        match self {
            Failure::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

/// One way of proving who one is, with its configured name (a key of `auth.providers`).
pub enum Provider {
    Jwt(JwtProvider),
    ApiKeys(ApiKeyProvider),
    Mtls(MtlsProvider),
}

impl Provider {
    pub fn name(&self) -> &str {
        match self {
            Provider::Jwt(p) => &p.settings.name,
            Provider::ApiKeys(p) => &p.name,
            Provider::Mtls(p) => &p.name,
        }
    }

    /// The challenge sent when no credential was given.
    fn challenge(&self) -> String {
        match self {
            Provider::Jwt(_) => format!("Bearer realm=\"{REALM}\""),
            Provider::ApiKeys(p) => format!("ApiKey realm=\"{REALM}\", header=\"{}\"", p.header),
            Provider::Mtls(_) => format!("Certificate realm=\"{REALM}\""),
        }
    }

    /// The challenge sent when this provider's credential was refused.
    fn error_challenge(&self, failure: Failure) -> String {
        let description = failure.description();
        match self {
            Provider::Jwt(_) => format!(
                "Bearer realm=\"{REALM}\", error=\"{}\", error_description=\"{description}\"",
                failure.bearer_error()
            ),
            Provider::ApiKeys(p) => format!(
                "ApiKey realm=\"{REALM}\", header=\"{}\", error=\"invalid_key\", error_description=\"{description}\"",
                p.header
            ),
            Provider::Mtls(_) => format!(
                "Certificate realm=\"{REALM}\", error=\"invalid_certificate\", error_description=\"{description}\""
            ),
        }
    }
}

/// What lives across configuration reloads: the JWKS key sets (so a reload does not refetch
/// them, and a token keeps verifying during one), continuous verification state and metrics.
pub struct AuthnRuntime {
    jwks: Mutex<Vec<Weak<JwksSource>>>,
    continuous: Arc<Continuous>,
    pub metrics: AuthnMetrics,
}

impl AuthnRuntime {
    pub fn new(metrics: AuthnMetrics) -> Arc<Self> {
        Arc::new(AuthnRuntime {
            jwks: Mutex::new(Vec::new()),
            continuous: Arc::new(Continuous::new(metrics.clone())),
            metrics,
        })
    }

    /// The key source for `settings`: the running one when a source with the same settings
    /// exists (its keys are kept), otherwise a new one whose background fetch starts now. Must
    /// be called within a Tokio runtime.
    pub fn jwks(&self, provider: &str, settings: JwksSettings) -> Result<Arc<JwksSource>, String> {
        let mut sources = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
        sources.retain(|s| s.strong_count() > 0);
        if let Some(source) = sources
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.settings == settings)
        {
            return Ok(source);
        }
        let source = JwksSource::start(provider, settings, self.metrics.clone())?;
        sources.push(Arc::downgrade(&source));
        Ok(source)
    }

    /// Continuous verification, shared by every route that uses it.
    pub fn continuous(&self) -> &Arc<Continuous> {
        &self.continuous
    }
}

/// Stage 4: authenticates a request with the route's providers, in order. The first provider
/// that finds its kind of credential in the request decides: a credential that fails is
/// refused (the next provider is not tried), so a bad token cannot fall back to anonymous
/// access on an optional route.
pub struct AuthnStage {
    providers: Vec<Arc<Provider>>,
    /// Let requests with no credential through without an identity.
    optional: bool,
    /// Several JWT providers: each takes only tokens whose `iss` it accepts.
    by_issuer: bool,
    continuous: Option<Arc<Continuous>>,
    /// `WWW-Authenticate` values for a request without credentials, one per provider.
    challenges: Vec<HeaderValue>,
    metrics: AuthnMetrics,
}

impl AuthnStage {
    pub fn new(
        providers: Vec<Arc<Provider>>,
        optional: bool,
        continuous: Option<Arc<Continuous>>,
        metrics: AuthnMetrics,
    ) -> Self {
        let jwt_count = providers
            .iter()
            .filter(|p| matches!(***p, Provider::Jwt(_)))
            .count();
        let mut challenges: Vec<HeaderValue> = Vec::new();
        for provider in &providers {
            if let Ok(value) = HeaderValue::from_str(&provider.challenge())
                && !challenges.contains(&value)
            {
                challenges.push(value);
            }
        }
        AuthnStage {
            providers,
            optional,
            by_issuer: jwt_count > 1,
            continuous,
            challenges,
            metrics,
        }
    }

    /// The continuous verifier the gateway feeds each request's final score to.
    pub fn continuous(&self) -> Option<&Arc<Continuous>> {
        self.continuous.as_ref()
    }

    fn verify(&self, request: &RequestView<'_>) -> Verdict<'_> {
        let mut foreign_token = false;
        for provider in &self.providers {
            let result = match &**provider {
                Provider::Jwt(jwt) => match jwt.token(request.headers) {
                    None => continue,
                    Some(token) => {
                        if self.by_issuer && !jwt.takes_issuer_of(token) {
                            foreign_token = true;
                            continue;
                        }
                        jwt.verify(token)
                    }
                },
                Provider::ApiKeys(keys) => match keys.presented(request.headers) {
                    None => continue,
                    Some(value) => keys.verify(value),
                },
                Provider::Mtls(mtls) => {
                    if !mtls::has_certificate(request.client) {
                        continue;
                    }
                    mtls.verify(request.client)
                }
            };
            return match result {
                Ok(identity) => Verdict::Identified(identity, provider),
                Err(failure) => Verdict::Refused(failure, Some(provider)),
            };
        }
        if foreign_token {
            Verdict::Refused(Failure::WrongIssuer, None)
        } else if self.optional {
            Verdict::Anonymous
        } else {
            Verdict::Refused(Failure::Missing, None)
        }
    }

    fn refuse(
        &self,
        request: &RequestView<'_>,
        ctx: &mut RequestContext,
        failure: Failure,
        provider: Option<&Provider>,
    ) -> Outcome {
        self.metrics
            .failures
            .with_label_values(&[request.route, failure.as_str()])
            .inc();
        match provider {
            Some(provider) => {
                if let Ok(value) = HeaderValue::from_str(&provider.error_challenge(failure)) {
                    ctx.response_headers.append(header::WWW_AUTHENTICATE, value);
                }
            }
            None => {
                for value in &self.challenges {
                    ctx.response_headers
                        .append(header::WWW_AUTHENTICATE, value.clone());
                }
            }
        }
        let finding = Finding {
            rule_id: failure.rule_id().into(),
            class: "authn".into(),
            severity: Severity::Warning,
            score: Severity::Warning.score(),
            target: "credentials".into(),
            evidence: match provider {
                Some(provider) => format!("provider {}: {}", provider.name(), failure.as_str()),
                None => failure.as_str().to_owned(),
            },
        };
        if failure.status() == 401 {
            Outcome::Challenge(finding)
        } else {
            ctx.response_headers
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Outcome::Block {
                status: failure.status(),
                finding,
            }
        }
    }
}

enum Verdict<'a> {
    Identified(Identity, &'a Provider),
    Refused(Failure, Option<&'a Arc<Provider>>),
    Anonymous,
}

impl Stage for AuthnStage {
    fn name(&self) -> &'static str {
        "authn"
    }

    fn enforced_in_detect_only(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, ctx: &mut RequestContext) -> Outcome {
        match self.verify(request) {
            Verdict::Anonymous => Outcome::Continue,
            Verdict::Refused(failure, provider) => {
                self.refuse(request, ctx, failure, provider.map(|p| &**p))
            }
            Verdict::Identified(identity, provider) => {
                if let Some(continuous) = &self.continuous
                    && let Err(failure) =
                        continuous.check(&identity, request.client.peer.ip(), ctx.score)
                {
                    return self.refuse(request, ctx, failure, Some(provider));
                }
                ctx.identity = Some(identity);
                Outcome::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests;
