//! TLS for listeners: rustls with the ring provider, ALPN h2 and http/1.1, optional client
//! certificate verification (mTLS).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, Spanned, TlsConfig};
use crate::load::Problem;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Spanned<String>, what: &str) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let certs = CertificateDer::pem_file_iter(&path.value)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Problem::at(path, format!("cannot read {what} `{}`: {e}", path.value)))?;
    if certs.is_empty() {
        return Err(Problem::at(
            path,
            format!("{what} `{}` holds no PEM certificate", path.value),
        ));
    }
    Ok(certs)
}

/// Builds the rustls configuration of a listener, reporting every unreadable file.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, Vec<Problem>> {
    let mut problems = Vec::new();
    let certs = read_certs(&tls.cert, "certificate file")
        .map_err(|p| problems.push(p))
        .ok();
    let key = PrivateKeyDer::from_pem_file(&tls.key.value)
        .map_err(|e| {
            problems.push(Problem::at(
                &tls.key,
                format!("cannot read private key `{}`: {e}", tls.key.value),
            ))
        })
        .ok();
    let verifier = match &tls.client_ca {
        None => Some(WebPkiClientVerifier::no_client_auth()),
        Some(ca_path) => match read_certs(ca_path, "client CA file") {
            Err(p) => {
                problems.push(p);
                None
            }
            Ok(cas) => {
                let mut roots = RootCertStore::empty();
                let (_, ignored) = roots.add_parsable_certificates(cas);
                if ignored > 0 || roots.is_empty() {
                    problems.push(Problem::at(
                        ca_path,
                        format!(
                            "`{}` holds certificates that are not valid CA certificates",
                            ca_path.value
                        ),
                    ));
                    None
                } else {
                    let builder =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                    let builder = match tls.client_auth {
                        ClientAuth::Required => builder,
                        ClientAuth::Optional => builder.allow_unauthenticated(),
                    };
                    builder
                        .build()
                        .map_err(|e| {
                            problems.push(Problem::at(
                                ca_path,
                                format!("client CA `{}`: {e}", ca_path.value),
                            ))
                        })
                        .ok()
                }
            }
        },
    };
    let (Some(certs), Some(key), Some(verifier)) = (certs, key, verifier) else {
        return Err(problems);
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![Problem::at(&tls.cert, format!("TLS setup failed: {e}"))])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            vec![Problem::at(
                &tls.key,
                format!(
                    "the key does not fit the certificate `{}`: {e}",
                    tls.cert.value
                ),
            )]
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
