//! Client certificate identity (mTLS): the listener's TLS already verified the certificate
//! against its `client_ca`; this provider decides which verified subjects and SANs a route
//! accepts, and turns them into an identity.

use apiguard_model::{AuthMethod, ClientInfo, Identity};
use serde_json::{Map, Value};

use super::Failure;

pub struct MtlsProvider {
    pub name: String,
    /// Accepted subjects, exact (RFC 4514 form, such as `CN=billing,O=Example`).
    pub subjects: Vec<String>,
    /// Accepted SANs (`DNS:name`, `URI:spiffe://...`, `email:...`); a trailing `*` makes a
    /// prefix. With `subjects` also empty, any verified certificate is accepted.
    pub sans: Vec<String>,
}

/// Whether the connection presented a verified client certificate.
pub fn has_certificate(client: &ClientInfo) -> bool {
    client.client_cert_subject.is_some() || !client.client_cert_sans.is_empty()
}

fn san_matches(pattern: &str, san: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => san.starts_with(prefix),
        None => pattern == san,
    }
}

impl MtlsProvider {
    pub fn verify(&self, client: &ClientInfo) -> Result<Identity, Failure> {
        let subject = client.client_cert_subject.as_deref();
        let accepted = (self.subjects.is_empty() && self.sans.is_empty())
            || subject.is_some_and(|s| self.subjects.iter().any(|a| a == s))
            || client
                .client_cert_sans
                .iter()
                .any(|san| self.sans.iter().any(|p| san_matches(p, san)));
        if !accepted {
            return Err(Failure::Certificate);
        }
        let principal = subject
            .or(client.client_cert_sans.first().map(String::as_str))
            .ok_or(Failure::Certificate)?
            .to_owned();
        let mut claims = Map::new();
        if let Some(subject) = subject {
            claims.insert("subject".into(), Value::from(subject));
        }
        claims.insert("sans".into(), Value::from(client.client_cert_sans.clone()));
        Ok(Identity {
            subject: principal,
            method: AuthMethod::Mtls,
            claims,
        })
    }
}
