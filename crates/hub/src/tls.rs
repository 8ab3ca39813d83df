//! TLS on the hub's listener (rustls, ring provider), with optional client certificate
//! verification (mTLS), and what a handler learns about the connection: [`Peer`], attached
//! to every request as `ConnectInfo<Peer>`.
//!
//! Handshakes run in their own tasks, off the accept path, under a timeout and a cap on how
//! many may run at once, so a client that connects and stalls holds nobody else up.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::config::{ClientAuthMode, HubTlsConfig};
use crate::error::HubError;

/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most handshakes in progress at once; connections past it are closed at once.
const MAX_HANDSHAKES: usize = 1024;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, HubError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| HubError::Config(format!("{field}: cannot read `{}`: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(HubError::Config(format!(
            "{field}: `{}` holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Loads the certificate, key and client CAs of `tls.*` into a rustls configuration
/// (ALPN h2 and http/1.1, so gRPC works over it).
pub fn server_config(tls: &HubTlsConfig) -> Result<Arc<ServerConfig>, HubError> {
    let certs = read_certs(&tls.cert, "tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        HubError::Config(format!(
            "tls.key: cannot read a private key from `{}`: {e}",
            tls.key.display()
        ))
    })?;
    let verifier = match &tls.client_ca {
        None => {
            if tls.client_auth == ClientAuthMode::Required {
                return Err(HubError::Config(
                    "tls.client_auth: `required` needs tls.client_ca".into(),
                ));
            }
            WebPkiClientVerifier::no_client_auth()
        }
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let (_, ignored) = roots.add_parsable_certificates(read_certs(path, "tls.client_ca")?);
            if ignored > 0 || roots.is_empty() {
                return Err(HubError::Config(format!(
                    "tls.client_ca: `{}` holds certificates that are not valid CA certificates",
                    path.display()
                )));
            }
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let builder = match tls.client_auth {
                ClientAuthMode::Required => builder,
                ClientAuthMode::Optional => builder.allow_unauthenticated(),
            };
            builder
                .build()
                .map_err(|e| HubError::Config(format!("tls.client_ca: {e}")))?
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HubError::Config(format!("tls: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            HubError::Config(format!(
                "tls.key: the key does not fit the certificate `{}`: {e}",
                tls.cert.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A verified client certificate, as the hub matches it against registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub sha256: String,
    /// The subject, normalised by [`normalise_subject`] (such as `CN=gw-1, O=Example`);
    /// absent when the certificate cannot be parsed.
    pub subject: Option<String>,
}

impl ClientCert {
    /// Describes a DER certificate.
    pub fn from_der(der: &[u8]) -> Self {
        let subject = x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, cert)| normalise_subject(&cert.subject().to_string()))
            .filter(|s| !s.is_empty());
        Self {
            sha256: crate::auth::hex(&Sha256::digest(der)),
            subject,
        }
    }
}

/// The first certificate of a PEM file (or text), described.
pub fn client_cert_from_pem(pem: &[u8]) -> Result<ClientCert, String> {
    let der = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| "no PEM certificate found".to_owned())?
        .map_err(|e| format!("unreadable PEM certificate: {e}"))?;
    if x509_parser::parse_x509_certificate(der.as_ref()).is_err() {
        return Err("the PEM block is not an X.509 certificate".to_owned());
    }
    Ok(ClientCert::from_der(der.as_ref()))
}

/// A subject in one canonical spelling: RDNs in certificate order, `, ` between them, no
/// space around `=` (so `CN = gw-1,O=Example` and `CN=gw-1, O=Example` are one subject).
pub fn normalise_subject(subject: &str) -> String {
    subject
        .split(',')
        .map(|rdn| match rdn.split_once('=') {
            Some((kind, value)) => format!("{}={}", kind.trim(), value.trim()),
            None => rdn.trim().to_owned(),
        })
        .filter(|rdn| !rdn.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the hub knows about a connection: attached to each request as `ConnectInfo<Peer>`.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client certificate the TLS handshake verified, if any.
    pub cert: Option<Arc<ClientCert>>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            tls: false,
            cert: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TLS listener for `axum::serve`: a task accepts TCP connections and runs each handshake
/// in a task of its own; `accept` hands out the finished ones.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(config),
            sender,
        ));
        Ok(Self {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, addr) = tokio::select! {
            _ = sender.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, go on.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "too many TLS handshakes in progress; closing a connection");
            continue;
        };
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%addr, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| Arc::new(ClientCert::from_der(leaf.as_ref())));
            let peer = Peer {
                addr,
                tls: true,
                cert,
            };
            let _ = sender.send((stream, peer)).await;
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task ended (it only does when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            tls: true,
            cert: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_one_spelling() {
        assert_eq!(
            normalise_subject(" CN = gw-1 ,O=Example Org,  "),
            "CN=gw-1, O=Example Org"
        );
        assert_eq!(normalise_subject("CN=a, O=b"), "CN=a, O=b");
    }

    #[test]
    fn pem_that_is_no_certificate_is_refused() {
        assert!(client_cert_from_pem(b"hello").is_err());
        assert!(
            client_cert_from_pem(
                b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"
            )
            .is_err()
        );
    }
}
