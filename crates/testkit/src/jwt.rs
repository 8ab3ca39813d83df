//! JSON Web Tokens for tests: signers with fresh keys (ES256 and EdDSA generated with rcgen,
//! RS256 from a fixed test key, HS256 from a secret), their JWKS, and a real HTTP server that
//! serves a JWKS document which a test can change (key rotation) while counting fetches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A 2048-bit RSA key made for these tests only (`openssl genrsa`): generating one at test
/// time is slow, and ring cannot.
const RSA_TEST_KEY: &str = include_str!("fixtures/rsa-test-key.pem");

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A signing key with its key id and public JWK.
pub struct TestSigner {
    pub kid: String,
    pub alg: Algorithm,
    key: EncodingKey,
    /// The public key as a JWK (with `kid`, `alg` and `use: sig`); `None` for HS256.
    pub jwk: Option<Value>,
}

impl TestSigner {
    fn with_key(kid: &str, alg: Algorithm, key: EncodingKey, jwk: Option<Value>) -> Self {
        let jwk = jwk.map(|mut jwk| {
            jwk["kid"] = kid.into();
            jwk["use"] = "sig".into();
            jwk["alg"] = format!("{alg:?}").into();
            jwk
        });
        TestSigner {
            kid: kid.to_owned(),
            alg,
            key,
            jwk,
        }
    }

    /// A fresh ECDSA P-256 key.
    pub fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("P-256 key generation");
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key");
        // An uncompressed point: 0x04, x, y.
        let point = pair.public_key_raw();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": base64url(&point[1..33]),
            "y": base64url(&point[33..65]),
        });
        Self::with_key(kid, Algorithm::ES256, key, Some(jwk))
    }

    /// A fresh Ed25519 key.
    pub fn eddsa(kid: &str) -> Self {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key generation");
        let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("Ed key");
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64url(pair.public_key_raw()),
        });
        Self::with_key(kid, Algorithm::EdDSA, key, Some(jwk))
    }

    /// The fixed RSA test key, RS256.
    pub fn rs256(kid: &str) -> Self {
        let key = EncodingKey::from_rsa_pem(RSA_TEST_KEY.as_bytes()).expect("RSA test key");
        let jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("public RSA JWK");
        let jwk = serde_json::to_value(jwk).expect("a JWK serialises");
        Self::with_key(kid, Algorithm::RS256, key, Some(jwk))
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_key("", Algorithm::HS256, EncodingKey::from_secret(secret), None)
    }

    /// Signs `claims` with a header naming this key's `kid` (none for HS256).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        if !self.kid.is_empty() {
            header.kid = Some(self.kid.clone());
        }
        jsonwebtoken::encode(&header, claims, &self.key).expect("signing a test token")
    }

    /// A token for `sub` from `iss` to `aud`, valid from now for `ttl_secs`.
    pub fn token(&self, sub: &str, iss: &str, aud: &str, ttl_secs: u64) -> String {
        let now = now_secs();
        self.sign(&json!({
            "sub": sub,
            "iss": iss,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_secs,
            "jti": format!("{sub}-{now}-{}", next_id()),
        }))
    }
}

/// Base64url without padding (JOSE).
pub fn base64url(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A number unique in this process, so two tokens made in the same second differ.
fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The public key of [`TestSigner::rs256`] as PEM (for `public_key_file`).
pub const RSA_TEST_PUBLIC_PEM: &str = include_str!("fixtures/rsa-test-pub.pem");

/// A JWKS document with the public keys of `signers`.
pub fn jwks(signers: &[&TestSigner]) -> Value {
    json!({ "keys": signers.iter().filter_map(|s| s.jwk.clone()).collect::<Vec<_>>() })
}

/// A real HTTP (or HTTPS) server for one JWKS document at `/jwks.json`, which a test can
/// replace (key rotation) or make fail; it counts the fetches.
pub struct JwksServer {
    pub addr: SocketAddr,
    tls: bool,
    document: Arc<Mutex<Option<Value>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `document` over HTTP on 127.0.0.1 (a free port).
    pub async fn start(document: Value) -> Self {
        Self::serve(document, None).await
    }

    /// Starts serving `document` over HTTPS with `tls` (see [`crate::TestPki::server_config`];
    /// its certificate names `localhost`).
    pub async fn start_tls(document: Value, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::serve(document, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(document: Value, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let document = Arc::new(Mutex::new(Some(document)));
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the JWKS server");
        let addr = listener.local_addr().expect("local address");
        let is_tls = tls.is_some();
        let state = (document.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (document, hits) = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = answer(&request, &document, &hits);
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                                .await;
                        }
                    }
                });
            }
        });
        JwksServer {
            addr,
            tls: is_tls,
            document,
            hits,
            task,
        }
    }

    /// `http://127.0.0.1:port/jwks.json`, or `https://localhost:port/jwks.json`.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/jwks.json", self.addr.port())
        } else {
            format!("http://{}/jwks.json", self.addr)
        }
    }

    /// Serves `document` from now on (`None`: answer 503).
    pub fn set(&self, document: Option<Value>) {
        *self.document.lock().expect("lock") = document;
    }

    /// Fetches so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn answer<B>(
    request: &http::Request<B>,
    document: &Mutex<Option<Value>>,
    hits: &AtomicUsize,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, body) = if request.uri().path() != "/jwks.json" {
        (http::StatusCode::NOT_FOUND, "not found".to_owned())
    } else {
        hits.fetch_add(1, Ordering::SeqCst);
        match document.lock().expect("lock").clone() {
            Some(doc) => (http::StatusCode::OK, doc.to_string()),
            None => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable".to_owned(),
            ),
        }
    };
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
