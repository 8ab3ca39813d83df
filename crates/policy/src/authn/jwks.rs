//! Verification keys: a [`KeySet`] (from a JWKS document or from configured keys) and a
//! [`JwksSource`], which fetches a JWKS URL in a background task, swaps the key set without
//! locking readers, refreshes it on a timer and, rate-limited, when a token names an unknown
//! key id (key rotation). A failed fetch keeps the last good key set.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use super::metrics::AuthnMetrics;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys kept from one JWKS document.
pub const MAX_KEYS: usize = 100;

/// One verification key.
pub struct Key {
    /// `None` for a configured key, which matches any `kid`.
    pub kid: Option<String>,
    /// The JWK's `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
    pub key: DecodingKey,
}

/// The keys a provider verifies with.
pub struct KeySet {
    pub keys: Vec<Key>,
    /// False until a JWKS document has been fetched once.
    pub loaded: bool,
}

/// The result of looking a key up for a token.
pub enum Lookup<'a> {
    Found(&'a Key),
    /// The key exists but does not go with the token's algorithm.
    WrongAlgorithm,
    NotFound,
}

impl KeySet {
    /// The key set of a JWKS source that has not fetched anything yet.
    pub fn unloaded() -> Self {
        KeySet {
            keys: Vec::new(),
            loaded: false,
        }
    }

    /// One configured key (a PEM public key or a shared secret); it matches any `kid`.
    pub fn single(key: DecodingKey) -> Self {
        KeySet {
            keys: vec![Key {
                kid: None,
                alg: None,
                family: key.family(),
                key,
            }],
            loaded: true,
        }
    }

    /// Parses a JWKS document. Keys that cannot be used for signatures (encryption keys,
    /// symmetric keys, unknown key types) are skipped and counted, never fatal: one odd key
    /// must not stop the others from verifying.
    pub fn from_jwks(document: &[u8]) -> Result<(KeySet, usize), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document)
            .map_err(|e| format!("not a JWKS document (a JSON object with `keys`): {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for value in document.keys {
            let Some(key) = usable_key(value) else {
                skipped += 1;
                continue;
            };
            if keys.len() < MAX_KEYS {
                keys.push(key);
            } else {
                skipped += 1;
            }
        }
        Ok((KeySet { keys, loaded: true }, skipped))
    }

    /// The key for a token with this `kid` and algorithm. Without a `kid`, the one key of the
    /// algorithm's family (several candidates are ambiguous: not found).
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let fits = |key: &Key| key.family == alg.family() && key.alg.is_none_or(|a| a == alg);
        let found = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .or_else(|| self.keys.iter().find(|k| k.kid.is_none())),
            None => {
                let mut candidates = self.keys.iter().filter(|k| fits(k));
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => Some(key),
                    _ => None,
                }
            }
        };
        match found {
            Some(key) if fits(key) => Lookup::Found(key),
            Some(_) => Lookup::WrongAlgorithm,
            None => Lookup::NotFound,
        }
    }
}

fn usable_key(value: serde_json::Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
    ) {
        return None;
    }
    // A symmetric key published in a JWKS would let anyone who reads it sign tokens.
    if matches!(
        jwk.algorithm,
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
    ) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        family: key.family(),
        key,
    })
}

/// Where and how often to fetch a JWKS document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// `https://` (or `http://` on a trusted network) URL of the JWKS document. Redirects are
    /// not followed.
    pub url: String,
    /// Time between two scheduled fetches.
    pub refresh: Duration,
    /// Shortest time between two fetches caused by unknown key ids.
    pub min_refresh: Duration,
    /// Time allowed for one fetch.
    pub timeout: Duration,
    /// PEM CA certificates to trust instead of the system's, for a private identity provider.
    pub ca_pem: Option<Vec<u8>>,
}

/// A JWKS URL's current key set, kept fresh by a background task that ends when the source is
/// dropped.
pub struct JwksSource {
    pub settings: JwksSettings,
    keys: ArcSwap<KeySet>,
    wake: Arc<Notify>,
    refresh_wanted: AtomicBool,
}

impl JwksSource {
    /// Starts fetching. `provider` names the source in metrics and logs. Must be called within
    /// a Tokio runtime.
    pub fn start(
        provider: &str,
        settings: JwksSettings,
        metrics: AuthnMetrics,
    ) -> Result<Arc<Self>, String> {
        let client = Fetcher::new(&settings)?;
        let source = Arc::new(JwksSource {
            settings,
            keys: ArcSwap::from_pointee(KeySet::unloaded()),
            wake: Arc::new(Notify::new()),
            refresh_wanted: AtomicBool::new(false),
        });
        tokio::spawn(refresh_loop(
            Arc::downgrade(&source),
            source.wake.clone(),
            client,
            provider.to_owned(),
            metrics,
        ));
        Ok(source)
    }

    /// The current key set (a cheap pointer copy).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Asks for a fetch soon (a token named a key id the set does not have). Cheap, and
    /// rate-limited by the background task to one fetch per `min_refresh`.
    pub fn request_refresh(&self) {
        if !self.refresh_wanted.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    async fn fetch(&self, client: &Fetcher) -> Result<(KeySet, usize), String> {
        let body = client.get().await?;
        KeySet::from_jwks(&body)
    }
}

impl Drop for JwksSource {
    fn drop(&mut self) {
        // Wakes the background task so that it sees the source is gone and ends.
        self.wake.notify_one();
    }
}

/// A minimal HTTP/1.1 client for one URL: a GET per fetch on a new connection, over TLS
/// (rustls, *ring*) for `https://`, bounded in time and size. No redirects, no proxies.
pub(crate) struct Fetcher {
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

impl Fetcher {
    pub(crate) fn new(settings: &JwksSettings) -> Result<Self, String> {
        let uri: http::Uri = settings
            .url
            .parse()
            .map_err(|_| format!("`{}` is not a URL", settings.url))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "`{}` is not an http:// or https:// URL",
                    settings.url
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{}` has no host", settings.url))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
            Some((TlsConnector::from(Arc::new(tls_config(settings)?)), name))
        } else {
            None
        };
        Ok(Fetcher {
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
            tls,
            timeout: settings.timeout,
        })
    }

    /// The document's bytes, or why not (refused, timeout, TLS, status, too large).
    pub(crate) async fn get(&self) -> Result<Vec<u8>, String> {
        tokio::time::timeout(self.timeout, self.get_within_timeout())
            .await
            .map_err(|_| format!("no complete answer within {:?}", self.timeout))?
    }

    async fn get_within_timeout(&self) -> Result<Vec<u8>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let request = http::Request::get(self.path_and_query.as_str())
            .header(http::header::HOST, self.authority.as_str())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .header(
                http::header::USER_AGENT,
                concat!("apiguard/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                exchange(TokioIo::new(stream), request).await
            }
            None => exchange(TokioIo::new(tcp), request).await,
        }
    }
}

async fn exchange<I>(io: I, request: http::Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let connection = tokio::spawn(connection);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    format!("the document is larger than {MAX_JWKS_BYTES} bytes")
                } else {
                    format!("reading the body failed: {e}")
                }
            })?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    connection.abort();
    result
}

/// TLS to the JWKS URL: the CA file's certificates when given, the system's otherwise.
fn tls_config(settings: &JwksSettings) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the CA file is not PEM certificates: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA file holds an unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA file holds no certificate".into());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err("no trusted CA certificates on this system (set jwks.ca_file)".into());
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// Fetches at start, then every `refresh` (sooner after a failure, with backoff), and when a
/// refresh is requested, at most once per `min_refresh`.
async fn refresh_loop(
    source: Weak<JwksSource>,
    wake: Arc<Notify>,
    client: Fetcher,
    provider: String,
    metrics: AuthnMetrics,
) {
    let mut failures: u32 = 0;
    loop {
        let Some(this) = source.upgrade() else {
            return;
        };
        this.refresh_wanted.store(false, Ordering::Release);
        let fetched_at = Instant::now();
        let settings = this.settings.clone();
        match this.fetch(&client).await {
            Ok((keys, skipped)) => {
                failures = 0;
                let count = keys.keys.len();
                let before = this.keys.load();
                if before.loaded {
                    let old: Vec<_> = before.keys.iter().map(|k| k.kid.clone()).collect();
                    let new: Vec<_> = keys.keys.iter().map(|k| k.kid.clone()).collect();
                    if old != new {
                        tracing::info!(provider, url = %settings.url, keys = count, "JWKS key set changed");
                    }
                } else {
                    tracing::info!(provider, url = %settings.url, keys = count, skipped, "JWKS key set loaded");
                }
                if count == 0 {
                    tracing::warn!(provider, url = %settings.url, skipped, "the JWKS document has no usable signing key: every token of this provider is refused");
                }
                this.keys.store(Arc::new(keys));
                metrics
                    .jwks_refreshes
                    .with_label_values(&[&provider, "ok"])
                    .inc();
                metrics
                    .jwks_keys
                    .with_label_values(&[&provider])
                    .set(count as i64);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics
                    .jwks_refreshes
                    .with_label_values(&[&provider, "error"])
                    .inc();
                let loaded = this.keys.load().loaded;
                tracing::warn!(provider, url = %settings.url, %error, keeps_previous_keys = loaded, "JWKS fetch failed");
            }
        }
        drop(this);
        let next = if failures == 0 {
            settings.refresh
        } else {
            // 1 s, 2 s, 4 s, ... up to the refresh interval.
            Duration::from_secs(1u64 << failures.min(16).saturating_sub(1)).min(settings.refresh)
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = wake.notified() => {
                // Either a refresh request or the source being dropped (checked above on the
                // next turn). Unknown key ids do not refetch more often than min_refresh.
                let earliest = fetched_at + settings.min_refresh;
                let scheduled = fetched_at + next;
                let at = earliest.min(scheduled);
                if source.strong_count() > 0 && at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
            }
        }
    }
}
