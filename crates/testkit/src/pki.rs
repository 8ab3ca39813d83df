//! [`TestPki`]: certificates made in the test with rcgen, for TLS and mTLS tests: a CA, a
//! server certificate for `localhost` and `127.0.0.1`, a client certificate signed by the
//! CA, and a client certificate signed by another, untrusted CA. rustls configs built here
//! name the ring provider explicitly, so tests need no process-wide default provider.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Subject common name of [`TestPki::client`], as an mTLS identity check would see it.
pub const CLIENT_COMMON_NAME: &str = "apiguard-test-client";
/// DNS name in the SAN of [`TestPki::client`].
pub const CLIENT_DNS_NAME: &str = "client.apiguard.test";

/// A certificate and its private key, both in PEM and DER.
pub struct IssuedCert {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_pkcs8_der: Vec<u8>,
}

impl IssuedCert {
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8_der.clone()))
    }

    fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Self {
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_pkcs8_der: key.serialize_der(),
        }
    }
}

/// Which certificate a client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientIdentity {
    /// No client certificate.
    Anonymous,
    /// [`TestPki::client`], signed by the test CA.
    Trusted,
    /// [`TestPki::untrusted_client`], signed by a CA the server does not know.
    Untrusted,
}

/// Whether a server asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertPolicy {
    /// Plain TLS.
    NotRequested,
    /// Verified if presented; anonymous clients are accepted.
    Optional,
    /// mTLS: a certificate signed by the test CA is required.
    Required,
}

/// Every PEM file of a [`TestPki`], in a temporary directory removed on drop.
pub struct PemFiles {
    dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub untrusted_ca_cert: PathBuf,
    pub untrusted_client_cert: PathBuf,
    pub untrusted_client_key: PathBuf,
}

impl PemFiles {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A throwaway PKI; every call to [`TestPki::new`] makes fresh keys.
pub struct TestPki {
    ca: IssuedCert,
    ca_issuer: Issuer<'static, KeyPair>,
    server: IssuedCert,
    client: IssuedCert,
    untrusted_ca: IssuedCert,
    untrusted_client: IssuedCert,
}

impl TestPki {
    /// Generates every key and certificate (ECDSA P-256, via ring).
    ///
    /// # Panics
    /// If rcgen fails, which only happens with a broken crypto backend.
    pub fn new() -> Self {
        let (ca_params, ca_key, ca) = make_ca("apiguard test CA");
        let ca_issuer = Issuer::new(ca_params, ca_key);
        let (untrusted_params, untrusted_key, untrusted_ca) = make_ca("untrusted test CA");
        let untrusted_issuer = Issuer::new(untrusted_params, untrusted_key);

        let server = make_leaf(
            &["localhost", "127.0.0.1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca_issuer,
        );
        let client = make_leaf(
            &[CLIENT_DNS_NAME],
            CLIENT_COMMON_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca_issuer,
        );
        let untrusted_client = make_leaf(
            &["rogue.apiguard.test"],
            "rogue-client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &untrusted_issuer,
        );
        Self {
            ca,
            ca_issuer,
            server,
            client,
            untrusted_ca,
            untrusted_client,
        }
    }

    /// The CA certificate (its key is not kept).
    pub fn ca_cert_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    pub fn ca_cert_der(&self) -> CertificateDer<'static> {
        self.ca.cert_der()
    }

    /// Server certificate for `localhost` and `127.0.0.1`, signed by the CA.
    pub fn server(&self) -> &IssuedCert {
        &self.server
    }

    /// Client certificate signed by the CA (CN [`CLIENT_COMMON_NAME`]).
    pub fn client(&self) -> &IssuedCert {
        &self.client
    }

    /// Client certificate signed by a different CA, which a server trusting only the test
    /// CA must reject.
    pub fn untrusted_client(&self) -> &IssuedCert {
        &self.untrusted_client
    }

    /// Another client certificate signed by the CA, with this common name (and the SAN
    /// `<common_name>.apiguard.test`).
    pub fn issue_client(&self, common_name: &str) -> IssuedCert {
        make_leaf(
            &[&format!("{common_name}.apiguard.test")],
            common_name,
            ExtendedKeyUsagePurpose::ClientAuth,
            &self.ca_issuer,
        )
    }

    /// A client config trusting only the test CA and presenting `cert` (any certificate,
    /// such as one from [`TestPki::issue_client`]), offering `alpn`.
    pub fn client_config_with(&self, cert: &IssuedCert, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.root_store())
            .with_client_auth_cert(vec![cert.cert_der()], cert.key_der())
            .expect("rcgen keys are valid for rustls");
        config.alpn_protocols = alpn.iter().map(|proto| proto.to_vec()).collect();
        Arc::new(config)
    }

    /// A root store holding only the test CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.cert_der())
            .expect("the test CA is a valid trust anchor");
        roots
    }

    /// Writes every certificate and key as PEM into a fresh temporary directory.
    pub fn write_pem_files(&self) -> io::Result<PemFiles> {
        let dir = tempfile::Builder::new().prefix("apiguard-pki-").tempdir()?;
        let write = |name: &str, pem: &str| -> io::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(PemFiles {
            ca_cert: write("ca.pem", self.ca.cert_pem())?,
            server_cert: write("server.pem", self.server.cert_pem())?,
            server_key: write("server-key.pem", self.server.key_pem())?,
            client_cert: write("client.pem", self.client.cert_pem())?,
            client_key: write("client-key.pem", self.client.key_pem())?,
            untrusted_ca_cert: write("untrusted-ca.pem", self.untrusted_ca.cert_pem())?,
            untrusted_client_cert: write("untrusted-client.pem", self.untrusted_client.cert_pem())?,
            untrusted_client_key: write(
                "untrusted-client-key.pem",
                self.untrusted_client.key_pem(),
            )?,
            dir,
        })
    }

    /// A client config trusting only the test CA, presenting `identity`, offering `alpn`
    /// (e.g. `&[ALPN_H2, ALPN_HTTP11]`).
    pub fn client_config(&self, identity: ClientIdentity, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.root_store());
        let presented = match identity {
            ClientIdentity::Anonymous => None,
            ClientIdentity::Trusted => Some(&self.client),
            ClientIdentity::Untrusted => Some(&self.untrusted_client),
        };
        let mut config = match presented {
            None => builder.with_no_client_auth(),
            Some(cert) => builder
                .with_client_auth_cert(vec![cert.cert_der()], cert.key_der())
                .expect("rcgen keys are valid for rustls"),
        };
        config.alpn_protocols = alpn.iter().map(|proto| proto.to_vec()).collect();
        Arc::new(config)
    }

    /// A server config with the `localhost` certificate, verifying client certificates
    /// against the test CA as `policy` says, offering `alpn`.
    pub fn server_config(&self, policy: ClientCertPolicy, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match policy {
            ClientCertPolicy::NotRequested => builder.with_no_client_auth(),
            ClientCertPolicy::Optional | ClientCertPolicy::Required => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(self.root_store()),
                    ring_provider(),
                );
                let verifier = if policy == ClientCertPolicy::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .expect("the test CA makes a valid verifier"),
                )
            }
        };
        let mut config = builder
            .with_single_cert(vec![self.server.cert_der()], self.server.key_der())
            .expect("rcgen keys are valid for rustls");
        config.alpn_protocols = alpn.iter().map(|proto| proto.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The ring provider, passed explicitly so no process-wide default has to be installed.
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn make_ca(common_name: &str) -> (CertificateParams, KeyPair, IssuedCert) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key generation");
    let cert = params.self_signed(&key).expect("self-signing the CA");
    let issued = IssuedCert::new(&cert, &key);
    (params, key, issued)
}

fn make_leaf(
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> IssuedCert {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("valid subject alt names");
    params.distinguished_name = distinguished_name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key generation");
    let cert = params.signed_by(&key, issuer).expect("signing a leaf");
    IssuedCert::new(&cert, &key)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "apiguard tests");
    name
}
