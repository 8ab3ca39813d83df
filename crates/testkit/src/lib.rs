//! Helpers for apiguard's integration tests:
//!
//! - [`TestUpstream`]: a recording HTTP/1.1 + h2c server with echo, status, slow, large,
//!   upload, trailer and WebSocket routes, which can be made to fail and recover;
//! - [`TestPki`]: a CA, server and client certificates, and rustls configs (ring);
//! - [`jwt`]: test JWT signers (ES256, EdDSA, RS256, HS256), their JWKS, and a JWKS server;
//! - [`free_port`], [`wait_for_port`], [`require_service`], [`rss_kib`].

#![forbid(unsafe_code)]

pub mod jwt;
mod net;
mod pki;
mod process;
pub mod upstream;

pub use net::{free_port, require_service, wait_for_port};
pub use pki::{
    ALPN_H2, ALPN_HTTP11, CLIENT_COMMON_NAME, CLIENT_DNS_NAME, ClientCertPolicy, ClientIdentity,
    IssuedCert, PemFiles, TestPki, ring_provider,
};
pub use process::rss_kib;
pub use upstream::{RecordedRequest, ShutdownHandle, TestUpstream, UpstreamMode};
